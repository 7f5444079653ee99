"""What a pip user gets: the wheel and the sdist built from this checkout, opened and checked."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The wheel is the compressor weights (<= 10 MB by design, 8.9 MB now), the cache's
#: cross-encoder verifier (7.1 MB of fp16 layers and head, added 2026-12-06), the tiktoken file
#: (1.7 MB, ~0.4 MB zipped) and code: 15.3 MB in all today.
MAX_WHEEL_MB = 18.0

pytestmark = pytest.mark.slow


def checkout_files() -> list[str]:
    """Files a clone of this checkout has (tracked, or new and not ignored)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Wheel and sdist, built by setuptools' PEP 517 hooks in a copy of the checkout."""
    if not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout (builds from its files)")
    src = tmp_path_factory.mktemp("src")
    for name in checkout_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    for hook in ("build_wheel", "build_sdist"):  # one process each, as a build frontend does
        code = f"import sys\nfrom setuptools import build_meta\nbuild_meta.{hook}(sys.argv[1])\n"
        run = subprocess.run(
            [sys.executable, "-c", code, str(dist)], cwd=src, capture_output=True, text=True, timeout=600
        )
        assert run.returncode == 0, run.stderr[-3000:]
    (wheel,), (sdist,) = dist.glob("*.whl"), dist.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def test_wheel_holds_the_package_data_and_nothing_else(built: dict[str, Path]) -> None:
    names = zipfile.ZipFile(built["wheel"]).namelist()
    for needed in (
        "lean_plugins/data/compressor/delta.safetensors",
        "lean_plugins/data/compressor/compressor.json",
        "lean_plugins/data/cl100k_base.tiktoken",
        "lean_plugins/data/cache_verifier.json",
        "lean_plugins/demo/knowledge_base.md",
        "lean_plugins/demo/questions.json",
        "lean_plugins/langchain/__init__.py",
        "lean_plugins/llama_index/__init__.py",
        "lean_plugins/py.typed",
    ):
        assert needed in names, needed
    # every data file of the checkout is in the wheel (a new rule file is not forgotten)
    for path in (ROOT / "lean_plugins" / "data").rglob("*"):
        if path.is_file() and path.suffix != ".pyc" and "__pycache__" not in path.parts:
            assert path.relative_to(ROOT).as_posix() in names, path
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"lean_plugins", next(t for t in tops if t.endswith(".dist-info"))}, tops  # no tests/...
    assert built["wheel"].stat().st_size < MAX_WHEEL_MB * 2**20


def test_index_description_has_no_link_that_leads_nowhere(built: dict[str, Path]) -> None:
    with zipfile.ZipFile(built["wheel"]) as wheel:
        meta_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(wheel.read(meta_name).decode())
    assert meta["License-Expression"] == "MIT"
    assert meta["Description-Content-Type"] == "text/markdown"
    description = meta.get_payload()
    assert "# lean-plugins" in description or "lean-plugins" in description.splitlines()[0]
    assert "](docs/" not in description and "](examples/" not in description
    assert "(`docs/cache.md` in the source distribution)" in description


def test_sdist_ships_what_the_readme_links_to(built: dict[str, Path]) -> None:
    from setup import RELATIVE_LINK  # type: ignore[import-not-found]

    with tarfile.open(built["sdist"]) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert "LICENSE" in names
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = {m.group(2).split("#")[0] for m in RELATIVE_LINK.finditer(readme)}
    assert targets and all(t in names for t in targets), targets - names
