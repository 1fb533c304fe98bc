"""The cost explorer notebook runs end to end, writes its figures, and is committed stripped.

Executed for real with nbclient on an ipykernel of this interpreter (see
notebooks/export_figures.py); hermetic: the notebook reads only packaged data, and the kernel
talks to nbclient over 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "cost_explorer.ipynb"
BUDGET_S = 60.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _export_figures() -> ModuleType:
    path = ROOT / "notebooks" / "export_figures.py"
    spec = importlib.util.spec_from_file_location("export_figures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_cost_explorer_executes_and_writes_figures(tmp_path: Path) -> None:
    for dep in ("nbclient", "ipykernel", "matplotlib", "pandas"):
        pytest.importorskip(dep)
    ef = _export_figures()

    nb, seconds = ef.run_notebook(NOTEBOOK, tmp_path / "figures", timeout=int(BUDGET_S))

    assert seconds < BUDGET_S, f"notebook took {seconds:.1f} s (budget {BUDGET_S:.0f} s)"
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    for name in ef.FIGURES:
        png = tmp_path / "figures" / name
        assert png.is_file(), f"{name} not written"
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC), f"{name} is not a PNG"
        assert len(data) > 20_000, f"{name} is suspiciously small ({len(data)} bytes)"
    # The executed copy is discarded: the committed notebook stays without outputs.
    assert _stripped_problems(NOTEBOOK) == []


def _stripped_problems(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i} has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i} has execution_count {cell['execution_count']}")
    return problems


def test_cost_explorer_is_committed_without_outputs() -> None:
    assert _stripped_problems(NOTEBOOK) == [], (
        "clear the notebook's outputs before committing (Jupyter: Edit > Clear Outputs of "
        "All Cells, then save)"
    )
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0].get("metadata", {}).get("tags", []), (
        "the first code cell must be tagged 'parameters'"
    )
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
