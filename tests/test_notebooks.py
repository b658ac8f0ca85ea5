"""The walkthroughs in notebooks/ run from top to bottom in a kernel of this environment."""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat
import pytest

from conftest import ROOT


@pytest.mark.parametrize("name", ["tour", "attention_maps"])
def test_notebook_runs(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel's temporary work directory
    notebook = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert not any(cell.outputs or cell.execution_count for cell in code), "commit notebooks without outputs"
    # python3 is the kernel of the running interpreter's environment; cwd is the repository root
    client = nbclient.NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
