"""Prune a local model by 20%, save it, and use it in an ordinary LangChain chain. Runs offline.

1. Get a Hugging Face causal LM folder and calibration text: the ones given on the command
   line, or (by default) stories260K, a tiny TinyStories Llama from ``../shared/data`` converted
   from llama2.c, with TinyStories text.
2. ``prune`` removes 20% of its parameters (GQA-aware attention heads and MLP channels) using a
   few calibration texts, and ``save_pruned`` writes a standard folder that plain
   ``AutoModelForCausalLM.from_pretrained`` loads (and vLLM can serve).
3. ``LeanLLM`` serves the pruned folder inside a LangChain chain, with an output budget that
   stops generation cleanly at the budget (a stopping criterion inside generation).

    python examples/local_pruned_model.py [MODEL_DIR CALIBRATION_TEXT_FILE]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from lean_plugins.langchain import LeanLLM, with_output_budget

from lean_plugins.ledger import Ledger
from lean_plugins.paths import shared_data_dir
from lean_plugins.pruning import convert_llama2c, load_model, prune, save_pruned
from lean_plugins.pruning.evaluate import read_documents


def stories260k_folder(work: Path) -> tuple[Path, list[str]]:
    """stories260K converted to a Hugging Face folder, and calibration stories."""
    data = shared_data_dir()
    if data is None:
        raise SystemExit("Pass a model folder and a calibration text file, or put the evaluation data at ../shared/data.")
    src = data / "models" / "stories260K"
    folder = convert_llama2c(src / "stories260K.bin", src / "tok512.model", work / "stories260K")
    text = (data / "text" / "tinystories_sample.txt").read_text(encoding="utf-8")
    stories = [s.strip() for s in text.split("\n\n") if s.strip()]
    return folder, stories[:32]


def main(argv: list[str] | None = None) -> list[str]:
    argv = sys.argv[1:] if argv is None else argv
    work = Path(tempfile.mkdtemp())
    if len(argv) == 2:
        dense_dir, calibration = Path(argv[0]), read_documents(argv[1])[:32]
    elif argv:
        raise SystemExit("usage: local_pruned_model.py [MODEL_DIR CALIBRATION_TEXT_FILE]")
    else:
        dense_dir, calibration = stories260k_folder(work)

    model, tokenizer, _ = load_model(dense_dir)
    report = prune(model, tokenizer, ratio=0.2, calibration=calibration)
    pruned_dir = save_pruned(model, tokenizer, work / "pruned")
    print(f"pruned {report.params_before:,} -> {report.params_after:,} parameters ({pruned_dir})")

    llm = LeanLLM(model=str(pruned_dir))  # any HF causal LM folder, pruned or not
    chain = PromptTemplate.from_template("{start}") | with_output_budget(llm, 48) | StrOutputParser()
    starts = ["Once upon a time, there was a little girl named Lily.", "Tom had a red ball."]
    with Ledger() as ledger:
        stories = [chain.invoke({"start": s}) for s in starts]
    for start, story in zip(starts, stories, strict=True):
        print(f"\n{start} | {story}")
    print()
    print(ledger.summary(price="gpt-4o-mini"))
    return stories


if __name__ == "__main__":
    main()
