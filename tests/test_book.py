"""The book's sources agree with each other: setup cells, the repository URL, citations."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


def load_setup_cell_module():
    spec = importlib.util.spec_from_file_location("setup_cell", ROOT / "_ext" / "setup_cell.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


setup_cell = load_setup_cell_module()


def test_there_are_chapters():
    assert len(CHAPTERS) >= 6


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_chapter_starts_with_the_colab_setup_cell(path):
    first = json.loads(path.read_text())["cells"][0]
    assert first["cell_type"] == "code" and first.get("id") == "colab-setup", (
        f"{path.name}: run `.venv/bin/python _ext/setup_cell.py` to add the setup cell"
    )
    assert first["metadata"].get("tags") == ["remove-cell"]
    assert "".join(first["source"]) == setup_cell.setup_source(), (
        f"{path.name}: its setup cell is out of date; run _ext/setup_cell.py"
    )
    assert first["outputs"] == [], "outside Colab the setup cell must print nothing"


def test_the_repository_url_is_one_setting():
    url = setup_cell.repository_url()
    assert url.startswith("https://")
    readme = (ROOT / "README.md").read_text()
    intro = (ROOT / "book" / "intro.md").read_text()
    urls = set(re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", readme + intro))
    assert urls <= {url}, f"README or intro names {urls - {url}}; _config.yml says {url}"


def test_the_setup_cell_does_nothing_outside_colab(monkeypatch):
    monkeypatch.delenv("EMTUTOR_SOURCE", raising=False)
    calls = []
    monkeypatch.setattr("subprocess.run", lambda *a, **k: calls.append(a))
    exec(compile(setup_cell.setup_source(), "setup-cell", "exec"), {})
    assert calls == []


def test_every_bibliography_entry_is_cited():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"^@\w+\{([^,]+),", bib, re.M))
    texts = [p.read_text() for p in (ROOT / "book").glob("*.md")]
    texts += [p.read_text() for p in CHAPTERS]
    cited = set()
    for text in texts:
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", text):
            cited.update(k.strip() for k in group.split(","))
    assert keys - cited == set(), f"entries never cited: {sorted(keys - cited)}"
    assert cited - keys == set(), f"cited but not in references.bib: {sorted(cited - keys)}"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


@pytest.mark.parametrize("page", ["README.md", "book/intro.md"])
def test_code_snippets_in_the_readme_and_intro_run(page, capsys):
    blocks = python_blocks(ROOT / page)
    assert blocks, f"{page} shows no Python snippet"
    for block in blocks:
        exec(compile(block, page, "exec"), {})
