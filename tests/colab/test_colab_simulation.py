"""Every chapter runs in a bare notebook environment, as in Google Colab, after its setup cell.

Colab has numpy, scipy, matplotlib and a kernel, but neither ``emtutor`` nor ``myst-nb``:
each chapter's first cell installs them there. This test builds such an environment
(a fresh virtual environment with only numpy, scipy, matplotlib and ipykernel), points
the setup cell at this checkout with ``EMTUTOR_SOURCE`` (in Colab it installs from the
repository), and executes every chapter in it from top to bottom.

It downloads those packages, so it is not part of the everyday test command; ``.ci/run``
runs it:

    .venv/bin/python -m pytest -s tests/colab
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import venv
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
BARE = ["numpy", "scipy", "matplotlib", "ipykernel"]


@pytest.fixture(scope="module")
def bare_kernel(tmp_path_factory):
    """A kernel named ``colab-like`` running in a fresh venv with only the BARE packages."""
    base = tmp_path_factory.mktemp("colab")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", *BARE], check=True)
    absent = "import importlib.util as u, sys; " \
        "sys.exit(any(u.find_spec(m) for m in ('emtutor', 'myst_nb')))"
    # Neither is there yet (run outside the checkout, whose emtutor/ would be found first).
    subprocess.run([python, "-c", absent], check=True, cwd=base)
    prefix = base / "jupyter"
    subprocess.run(
        [python, "-m", "ipykernel", "install", "--prefix", prefix, "--name", "colab-like"],
        check=True, capture_output=True,
    )
    return prefix / "share" / "jupyter", python


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_runs_in_a_bare_environment(bare_kernel, path, monkeypatch):
    jupyter_path, python = bare_kernel
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    monkeypatch.setenv("EMTUTOR_SOURCE", str(ROOT))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].get("id") == "colab-setup"
    start = time.perf_counter()
    NotebookClient(
        nb, kernel_name="colab-like", timeout=600,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    seconds = time.perf_counter() - start
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    installed = subprocess.run(
        [python, "-c", "import emtutor, myst_nb; print(emtutor.__file__)"],
        check=True, capture_output=True, text=True, cwd=python.parent,
    ).stdout.strip()
    assert os.path.exists(installed) and not installed.startswith(str(ROOT))
    print(f"\n{path.name}: executed in the bare environment in {seconds:.1f} s")
