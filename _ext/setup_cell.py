"""Write the first cell of every chapter: in Google Colab, install what the chapter needs.

The repository URL is one setting, ``repository.url`` in ``_config.yml``; the launch
buttons read it there, the README quotes it, and this script writes it into the first
cell of each chapter (a cell tagged ``remove-cell``: the book does not show it). Run it
after changing the URL::

    .venv/bin/python _ext/setup_cell.py

``tests/test_book.py`` checks that every chapter starts with exactly this cell and that
the README names the same URL.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))

TEMPLATE = '''\
# In Google Colab, install what this chapter needs and Colab lacks (emtutor
# from the course's repository, myst-nb); anywhere else this cell does
# nothing. (EMTUTOR_SOURCE, if set, says where to install emtutor from.)
import importlib.util
import os
import subprocess
import sys

REPOSITORY = "{url}"
NEEDS = {{"emtutor": None, "myst_nb": "myst-nb", "sklearn": "scikit-learn",
         "dask": "dask[array]"}}
if "google.colab" in sys.modules or "EMTUTOR_SOURCE" in os.environ:
    NEEDS["emtutor"] = os.environ.get("EMTUTOR_SOURCE", f"git+{{REPOSITORY}}")
    missing = [
        package
        for module, package in NEEDS.items()
        if importlib.util.find_spec(module) is None
    ]
    if missing:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", *missing],
            check=True,
        )'''


def repository_url() -> str:
    """``repository.url`` of ``_config.yml`` (read without a YAML parser)."""
    text = (ROOT / "_config.yml").read_text()
    match = re.search(r"^repository:\s*\n(?:[ \t]+.*\n)*?[ \t]+url:\s*(\S+)", text, re.M)
    if not match:
        raise SystemExit("_config.yml has no repository.url")
    return match.group(1)


def setup_source() -> str:
    """The source of the setup cell, with the repository URL filled in."""
    return TEMPLATE.format(url=repository_url())


def setup_cell() -> dict:
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": "colab-setup",
        "metadata": {"tags": ["remove-cell"]},
        "outputs": [],
        "source": setup_source().splitlines(keepends=True),
    }


def write(path: Path) -> bool:
    """Put the setup cell first in the notebook at ``path``; return whether it changed."""
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    new = setup_cell()
    if cells and cells[0].get("id") == "colab-setup":
        if "".join(cells[0]["source"]) == setup_source():
            return False
        new["execution_count"] = cells[0].get("execution_count")
        cells[0] = new
    else:
        cells.insert(0, new)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True


def main() -> int:
    for path in CHAPTERS:
        if write(path):
            print(f"wrote the setup cell of {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
