"""The walkthroughs in notebooks/ run from top to bottom in a kernel of this environment."""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat
import pytest

from helpers import ROOT
from test_sweeps import run_model_sweep


def execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """notebooks/<name>.ipynb, committed without outputs, executed; returns it with its outputs."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel's temporary work directory
    notebook = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert not any(cell.outputs or cell.execution_count for cell in code), "commit notebooks without outputs"
    # python3 is the kernel of the running interpreter's environment; cwd is the repository root
    client = nbclient.NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    return notebook


@pytest.mark.parametrize("name", ["tour", "attention_maps"])
def test_notebook_runs(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    execute(name, tmp_path, monkeypatch)


def test_sweep_report_notebook(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sweep_report.ipynb on a two-job sweep of Table 2 (one batch per job), given by VIVIT_SWEEP_DIR."""
    _, sweep = run_model_sweep(data_dir, tmp_path, "sweep=table2_model_variants")
    monkeypatch.setenv("VIVIT_SWEEP_DIR", str(sweep))
    notebook = execute("sweep_report", tmp_path, monkeypatch)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    texts = [output.get("text", "") for output in outputs]
    texts += [output.get("data", {}).get(kind, "") for output in outputs for kind in ("text/markdown", "text/plain")]
    shown = "\n".join(texts)
    assert "2 runs, axes ['model']" in shown
    # the table: markdown, or a pandas data frame where pandas is installed
    assert all(word in shown for word in ("top-1", "GMACs", "clips/s", "spatiotemporal", "factorised_encoder"))
    assert any("image/png" in output.get("data", {}) for output in outputs)  # the plot
    assert (sweep / "report.md").is_file() and (sweep / "report.png").stat().st_size > 0
