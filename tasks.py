"""Set up, test and build the course with nothing but Python >= 3.10.

    python3 tasks.py test    # create .venv if needed, install, run every test
    python3 tasks.py book    # create .venv if needed, install, build the book into _build/html,
                             # then read every page in Chromium (tests/browser) if it is installed

Both commands create the virtual environment ``.venv`` beside this file on first use and
reinstall from ``requirements.txt`` whenever that file changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if sys.platform == "win32" else "bin")
PYTHON = BIN / ("python.exe" if sys.platform == "win32" else "python")
STAMP = VENV / ".requirements.sha256"

TEST_COMMAND = [
    "-m", "pytest", "-n", "2", "--dist", "loadfile",
    "--nbval", "--nbval-sanitize-with", "book/nbval-sanitize.cfg",
    "--doctest-modules", "tests", "emtutor", "book",
    "--ignore=tests/browser", "--ignore=tests/colab",
]
# The browser test reads the built book, so it runs after the book command (see .ci/run).
BROWSER_TEST_COMMAND = ["-m", "pytest", "-s", "tests/browser"]
LINT_COMMAND = ["-m", "ruff", "check", "."]
BOOK_COMMAND = ["build", ".", "-W", "-n", "--keep-going"]


def run(args: list[str]) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run(args, cwd=ROOT, check=True)


def ensure_environment() -> None:
    """Create ``.venv`` and install the requirements unless they are already installed."""
    if sys.version_info < (3, 10):  # noqa: UP036 - a clear message on an old Python
        sys.exit(f"Python >= 3.10 is needed, this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        print(f"creating the virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "requirements.txt").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text().strip() != digest:
        run([PYTHON, "-m", "pip", "install", "--upgrade", "pip"])
        run([PYTHON, "-m", "pip", "install", "-r", "requirements.txt"])
        STAMP.write_text(digest + "\n")
    # The course edits emtutor while reading it: install it in editable mode.
    run([PYTHON, "-m", "pip", "install", "--quiet", "--no-deps", "--editable", "."])


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in {"test", "book"}:
        print(__doc__)
        return 2
    ensure_environment()
    if argv[0] == "test":
        run([PYTHON, *LINT_COMMAND])
        run([PYTHON, *TEST_COMMAND])
    else:
        run([BIN / "jupyter-book", *BOOK_COMMAND])
        print(f"the book is in {ROOT / '_build' / 'html' / 'index.html'}")
        # CI always reads the pages in a browser; elsewhere only if Chromium is installed.
        if os.environ.get("CI") or shutil.which("chromium"):
            run([PYTHON, *BROWSER_TEST_COMMAND])
        else:
            print("Chromium is not installed: the browser test of the pages was not run")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
