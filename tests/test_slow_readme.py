"""The README's Python example runs as written, from an empty folder, twice in a row."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_example() -> str:
    """The indented block after 'From Python', dedented."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"From Python[^\n]*\n\n((?:    [^\n]*\n)+)", text)
    assert block, "the README has no Python example after 'From Python'"
    return "\n".join(line[4:] for line in block.group(1).splitlines())


@pytest.mark.slow
def test_readme_python_example_runs_twice_from_a_fresh_folder(tmp_path, monkeypatch):
    code = python_example()
    assert "tunesmith.finetune(" in code and "run.predict(" in code
    monkeypatch.chdir(tmp_path)
    for attempt in (1, 2):
        namespace = {}
        exec(compile(code, f"README.md example, run {attempt}", "exec"), namespace)
        run = namespace["run"]
        assert run.metrics["test"]["accuracy"] >= 0.7
    assert (tmp_path / "runs" / "rotten-tomatoes").is_dir() and (tmp_path / "runs" / "rotten-tomatoes-2").is_dir()
