"""Every notebook runs top to bottom in a fresh kernel in smoke mode (synthetic data, one epoch), as CI requires."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_are_there():
    assert {"CNN_Default.ipynb", "CNNFaceDetector.ipynb", "CNN_Enhancements.ipynb"} <= {p.name for p in NOTEBOOKS}


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
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.output_type == "error"]
    assert not errors, errors
    assert os.environ["FERLIB_NOTEBOOK_MODE"] == "smoke"
