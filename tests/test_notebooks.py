"""The notebooks: each runs top to bottom in a fresh kernel in smoke mode (synthetic data, one epoch), as CI requires,
shows the figures it promises, and keeps its machinery in ferlib (no function of its own that ferlib already has)."""

from __future__ import annotations

import ast
import re

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
# the figures each notebook must show in smoke mode (at least); CNN_Enhancements: label modes beside the paper,
# recall per class with and without oversampling, the search's trials
FIGURES = {"CNN_Default": 8, "CNNFaceDetector": 5, "CNN_Enhancements": 3}


def code_cells(notebook) -> list[str]:
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def python_source(cell: str) -> str:
    """A cell without its IPython magics, as Python."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.splitlines())


def ferlib_public_functions() -> set[str]:
    names = set()
    for path in (REPO_ROOT / "ferlib").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names |= {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")}
    return names


def defined_functions(notebook) -> set[str]:
    names = set()
    for cell in code_cells(notebook):
        names |= {node.name for node in ast.walk(ast.parse(python_source(cell))) if isinstance(node, ast.FunctionDef)}
    return names


def test_the_three_notebooks_are_there():
    assert {"CNN_Default.ipynb", "CNNFaceDetector.ipynb", "CNN_Enhancements.ipynb"} <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_keeps_its_machinery_in_ferlib(path):
    notebook = nbformat.read(path, as_version=4)
    copies = defined_functions(notebook) & ferlib_public_functions()
    assert not copies, f"{path.name} defines functions ferlib has (call ferlib's instead): {sorted(copies)}"
    sources = "\n".join(code_cells(notebook))
    assert "from ferlib.notebook import setup" in sources and re.search(r"\bsetup\(MODE, RETRAIN\)", sources), \
        f"{path.name}: the setup cell should call ferlib.notebook.setup(MODE, RETRAIN)"
    for machinery in ("tempfile", "generate_dataset(", "cv2.VideoCapture", "os.chdir", "write_json("):
        assert machinery not in sources, f"{path.name}: {machinery!r} is ferlib's job (ferlib.notebook, ferlib.video)"


def test_the_machinery_check_sees_a_copied_function():
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%matplotlib inline\ndef summary_row(r):\n"
                                                                         "    return r")])
    assert defined_functions(notebook) & ferlib_public_functions() == {"summary_row"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_mode(path, monkeypatch):
    monkeypatch.setenv("FERLIB_NOTEBOOK_MODE", "smoke")
    monkeypatch.setenv("FERLIB_RETRAIN", "0")
    notebook = nbformat.read(path, as_version=4)
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert parameters and "MODE" in parameters[0].source, "the first code cell sets MODE and is tagged 'parameters'"
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    # setup says which mode it chose: the environment's, and the data it made for it
    assert re.search(r"mode smoke: synthetic data in \S*ferlib-smoke-", printed), printed[:500]
    figures = sum("image/png" in o.get("data", {}) for o in outputs)
    assert figures >= FIGURES[path.stem], f"{path.name}: {figures} figures shown, expected {FIGURES[path.stem]}+"


def test_smoke_mode_removes_its_temporary_folder_when_the_process_ends():
    import subprocess
    import sys
    from pathlib import Path

    script = "from ferlib.notebook import setup; print(setup('smoke').work)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
                          check=False)
    work = Path(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and work.name.startswith("ferlib-smoke-") and not work.exists()
