"""The benchmarks document: sections are replaced in place, others kept."""

from __future__ import annotations

from lean_plugins.bench import DOC_HEADER, available_benchmarks, splice_section, write_section


def test_splice_replaces_only_its_section() -> None:
    doc = splice_section(DOC_HEADER, "cache", "old cache table")
    doc = splice_section(doc, "compress", "compress table")
    doc = splice_section(doc, "cache", "new cache table")
    assert "old cache table" not in doc
    assert doc.count("<!-- bench:cache:start -->") == 1
    assert doc.index("new cache table") < doc.index("compress table")


def test_write_section_stamps_command_date_and_machine(tmp_path) -> None:
    path = tmp_path / "benchmarks.md"
    write_section(
        "demo", "| a | b |\n|---|---|\n| 1 | 2 |", command="python scripts/bench_demo.py", doc_path=path
    )
    text = path.read_text()
    assert text.startswith("# Benchmarks")
    assert "`python scripts/bench_demo.py`" in text and "cores" in text and "| 1 | 2 |" in text


def test_available_benchmarks_lists_scripts() -> None:
    assert all(name and "/" not in name for name in available_benchmarks())
