"""Run a notebook top to bottom, with parameters, and keep its outputs.

``python notebooks/execute.py notebooks/eda.ipynb [-p NAME VALUE ...] [--output FILE]``
executes in the notebook's folder (relative paths in it are relative to ``notebooks/``) and
writes the executed notebook back in place, or to ``--output``. A failing cell stops the run
with its traceback (exit code 1).

Parameters follow papermill's convention: the cell tagged ``parameters`` holds the defaults;
given values go into a cell tagged ``injected-parameters`` inserted after it (replacing one
left by an earlier run). Values are Python literals (``-p TRIALS 2``, ``-p DATA_DIR "'x'"``).
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


def _tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def inject_parameters(nb: Any, parameters: Mapping[str, Any]) -> None:
    """Put ``parameters`` in a cell after the one tagged ``parameters`` (papermill-style)."""
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in _tags(c)]
    if not parameters:
        return
    position = next((i for i, c in enumerate(nb.cells) if PARAMETERS_TAG in _tags(c)), None)
    if position is None:
        raise ValueError("the notebook has no cell tagged 'parameters'")
    source = "# Injected parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": [INJECTED_TAG]})
    nb.cells.insert(position + 1, cell)


def execute_notebook(
    path: str | Path,
    parameters: Mapping[str, Any] | None = None,
    output: str | Path | None = None,
    timeout_s: float = 1200,
) -> Any:
    """Execute the notebook at ``path`` in its folder and write it to ``output`` (default: in
    place). Raises ``nbclient.exceptions.CellExecutionError`` on the first failing cell."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    inject_parameters(nb, parameters or {})
    client = NotebookClient(
        nb,
        timeout=timeout_s,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    try:
        client.execute()
    finally:
        nbformat.write(nb, Path(output) if output is not None else path)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[])
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    parameters = {name: ast.literal_eval(value) for name, value in args.parameter}
    started = time.perf_counter()
    execute_notebook(args.notebook, parameters, args.output)
    print(f"{args.notebook}: executed in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
