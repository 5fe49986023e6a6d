"""The paper-figure notebooks execute top to bottom (nbclient, python3 kernel) against an MLflow
store, with their parameters set from the environment, so they never rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "analysis" / "notebooks"


def _execute(path: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, kernel_name="python3", timeout=300,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return notebook


def _outputs(notebook, kind: str) -> list:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
            if kind in o.get("data", {}) or o.get("name") == kind]


def test_every_notebook_declares_its_parameters_in_the_first_code_cell():
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert notebooks, "analysis/notebooks holds no notebook"
    for path in notebooks:
        first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert "parameters" in first.metadata.get("tags", []), path.name
        assert "ARM_MDM_TRACKING_URI" in first.source and "ARM_MDM_GRID" in first.source


def test_scaling_figures_notebook_draws_the_paper_figures_from_a_tracking_uri(isoflop_grid, tmp_path,
                                                                           monkeypatch):
    out = tmp_path / "figures"
    monkeypatch.setenv("ARM_MDM_TRACKING_URI", isoflop_grid.uri)
    monkeypatch.setenv("ARM_MDM_GRID", isoflop_grid.grid)
    monkeypatch.setenv("ARM_MDM_OUT", str(out))
    monkeypatch.setenv("ARM_MDM_N_RESAMPLES", "12")
    notebook = _execute(NOTEBOOKS / "scaling_figures.ipynb")

    text = "".join(o.get("text", "") for o in _outputs(notebook, "stdout"))
    assert f"grid '{isoflop_grid.grid}'" in text and "24 used (FINISHED)" in text
    assert "excluded: 1 x runs with status RUNNING" in text
    assert len(_outputs(notebook, "image/png")) == 3  # Fig. 3 layout, loss vs compute, IsoFLOP
    for name in ("task_scaling", "loss_vs_compute", "isoflop"):
        assert (out / f"{name}.png").stat().st_size > 10_000 and (out / f"{name}.pdf").is_file()
    tables = "".join(o["data"]["text/plain"] for o in _outputs(notebook, "text/html"))
    assert "C_MDM / C_ARM" in tables and "validation/loss" in tables

