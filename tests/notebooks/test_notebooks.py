"""Both notebooks run top to bottom on the session's small synthetic data (a failing cell fails).

Each runs in a fresh kernel through ``notebooks/execute.py`` (what ``make notebooks`` runs),
with its own MLflow store under a temporary folder and a small tuning budget; the executed
copies are written to the temporary folder, never over the committed notebooks.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from notebooks.execute import execute_notebook

pytestmark = [pytest.mark.slow, pytest.mark.model]

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def _outputs(nb: nbformat.NotebookNode) -> tuple[list[str], int]:
    """Markdown shown by the cells, and how many PNG plots they produced."""
    texts, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            texts.append(str(data.get("text/markdown", "")))
            images += "image/png" in data
    return texts, images


def _run(name: str, parameters: dict, tmp_path: Path) -> nbformat.NotebookNode:
    started = time.perf_counter()
    nb = execute_notebook(NOTEBOOKS / name, parameters, output=tmp_path / name, timeout_s=300)
    print(f"{name}: {time.perf_counter() - started:.1f} s")
    return nb


def test_eda_notebook_runs_and_concludes_every_section(tiny_raw: Path, tmp_path: Path) -> None:
    nb = _run("eda.ipynb", {"DATA_DIR": str(tiny_raw), "SYNTHETIC": True}, tmp_path)
    texts, images = _outputs(nb)
    sections = [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("<a id=")]
    conclusions = [t for t in texts if t.startswith("**Conclusion.**")]
    assert len(sections) == 9 and len(conclusions) == len(sections)
    assert images >= 12
    assert any("Data: **synthetic**" in t for t in texts)


def test_modeling_notebook_runs_the_stages_and_logs_two_runs(
    tiny_raw: Path, tmp_path: Path
) -> None:
    parameters = {
        "DATA_DIR": str(tiny_raw),
        "SYNTHETIC": True,
        "VAR_DIR": str(tmp_path / "var"),
        "TRIALS": 2,
        "EPOCHS": 3,
        "COMPONENTS": 8,
    }
    nb = _run("modeling.ipynb", parameters, tmp_path)
    texts, images = _outputs(nb)
    sections = [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("<a id=")]
    conclusions = [t for t in texts if t.startswith("**Conclusion.**")]
    assert len(sections) == 8 and len(conclusions) == len(sections)
    assert images >= 5
    assert (tmp_path / "var" / "mlflow.db").is_file()
    assert any("The MLflow store holds 2 training runs" in t for t in texts)
