"""The demo's shipped data: a knowledge base and a fixed question set.

``knowledge_base.md`` is a short reference to the Solar System written for this project and
dedicated to the public domain (CC0 1.0). ``questions.json`` is the fixed question set: half
first-time questions, a quarter verbatim repeats and a quarter paraphrases of earlier ones,
each with an answer string that appears verbatim in the knowledge base. It was written and
committed before any layer was tuned, and the demo never changes it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lean_plugins.errors import ConfigurationError

DEMO_DIR = Path(__file__).resolve().parent
KNOWLEDGE_BASE_FILE = DEMO_DIR / "knowledge_base.md"
QUESTIONS_FILE = DEMO_DIR / "questions.json"
KNOWLEDGE_BASE_LICENCE = "CC0 1.0 (public domain dedication), written for lean-plugins"

QuestionKind = Literal["first", "repeat", "paraphrase"]


@dataclass(frozen=True)
class Section:
    """One ``## heading`` section of the knowledge base: a document for the vector store."""

    title: str
    text: str


@dataclass(frozen=True)
class Question:
    """One request of the question set.

    ``label`` names the first-time question this request asks: a repeat or a paraphrase carries
    the label of its source, so two requests deserve the same answer exactly when their labels
    are equal. ``of`` is the source label for repeats and paraphrases, ``None`` otherwise.
    """

    id: str
    kind: QuestionKind
    label: str
    question: str
    answer: str
    of: str | None = None


def normalise_space(text: str) -> str:
    """Collapse runs of whitespace, so a hard-wrapped answer still matches its string."""
    return re.sub(r"\s+", " ", text).strip()


def contains_answer(text: str, answer: str) -> bool:
    """Whether ``answer`` appears verbatim (up to whitespace) in ``text``."""
    return normalise_space(answer) in normalise_space(text)


def load_knowledge_base(path: str | Path | None = None) -> list[Section]:
    """The knowledge base split into its ``##`` sections (the preamble is skipped)."""
    file = Path(path) if path is not None else KNOWLEDGE_BASE_FILE
    if not file.is_file():
        raise ConfigurationError(
            f"Knowledge base {file} does not exist; pass a Markdown file with '## ' sections or "
            "reinstall lean-plugins to restore the shipped one."
        )
    sections: list[Section] = []
    for block in re.split(r"^## ", file.read_text(encoding="utf-8"), flags=re.MULTILINE)[1:]:
        title, _, body = block.partition("\n")
        body = normalise_space(body)
        if body:
            sections.append(Section(title.strip(), body))
    if not sections:
        raise ConfigurationError(f"Knowledge base {file} has no '## ' sections with text.")
    return sections


def load_questions(path: str | Path | None = None, *, limit: int | None = None) -> list[Question]:
    """The fixed question set, in order; ``limit`` keeps the first ``limit`` requests.

    Checks the labels: every repeat and paraphrase must follow the question it restates, and a
    repeat must be word for word the same.
    """
    file = Path(path) if path is not None else QUESTIONS_FILE
    raw = json.loads(file.read_text(encoding="utf-8"))
    questions = [
        Question(
            id=q["id"],
            kind=q["kind"],
            label=q["label"],
            question=q["question"],
            answer=q["answer"],
            of=q.get("of"),
        )
        for q in raw["questions"]
    ]
    first: dict[str, Question] = {}
    for q in questions:
        if q.kind == "first":
            first[q.label] = q
        elif q.kind in ("repeat", "paraphrase"):
            source = first.get(q.of or "")
            if source is None or q.label != q.of:
                raise ConfigurationError(
                    f"{file}: {q.id} restates {q.of!r}, which is not an earlier first-time question."
                )
            if q.kind == "repeat" and q.question != source.question:
                raise ConfigurationError(f"{file}: repeat {q.id} differs from {source.id}.")
        else:
            raise ConfigurationError(f"{file}: {q.id} has unknown kind {q.kind!r}.")
    if limit is not None:
        if limit < 1:
            raise ConfigurationError(f"limit must be >= 1, got {limit}.")
        questions = questions[:limit]
    return questions


def knowledge_text(sections: list[Section]) -> str:
    """All sections as one text (for checks that an answer is in the knowledge base)."""
    return "\n\n".join(f"{s.title}\n{s.text}" for s in sections)
