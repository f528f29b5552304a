"""Run a notebook top to bottom with nbclient, parameters overridden, without touching the committed file.

    python notebooks/execute.py notebooks/visualize_masks.ipynb CKPT_PATH=outputs/.../last.ckpt N_SHOW=2 \
        [--out executed.ipynb]

Each ``NAME=VALUE`` becomes a line of a cell inserted after the cell tagged ``parameters`` (as papermill does);
VALUE is read as a Python literal when it is one (``4``, ``None``, ``[1, 2]``, ``'text'``), else as a string.
The tests run every notebook through :func:`execute`.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Mapping
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent


def literal(text: str) -> object:
    """``"4"`` -> 4, ``"None"`` -> None, ``"[1, 2]"`` -> [1, 2]; anything else stays the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def with_parameters(nb: nbformat.NotebookNode, params: Mapping[str, object]) -> nbformat.NotebookNode:
    """A copy of ``nb`` with ``NAME = repr(value)`` lines in a new cell right after its ``parameters`` cell."""
    nb = nbformat.from_dict(nb)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        raise ValueError("the notebook has no cell tagged 'parameters'")
    if params:
        names = set(_assigned(nb.cells[tagged[0]].source))
        unknown = sorted(set(params) - names)
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; the parameters cell sets {sorted(names)}")
        source = "# injected parameters\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
        nb.cells.insert(tagged[0] + 1, cell)
    return nb


def _assigned(source: str) -> list[str]:
    return [
        t.id
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    ]


def execute(path: str | Path, params: Mapping[str, object] | None = None, timeout: int = 600) -> nbformat.NotebookNode:
    """Execute the notebook at ``path`` in a fresh kernel, from its own folder; return the executed copy.

    A cell that raises stops the run with nbclient's CellExecutionError (it names the cell and the error).
    """
    path = Path(path)
    nb = with_parameters(nbformat.read(path, as_version=4), params or {})
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path)
    parser.add_argument("params", nargs="*", help="NAME=VALUE parameter overrides")
    parser.add_argument("--out", type=Path, default=None, help="write the executed notebook here (with outputs)")
    args = parser.parse_args()
    params = {}
    for item in args.params:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"parameter {item!r} is not NAME=VALUE")
        params[name] = literal(value)
    nb = execute(args.notebook, params)
    if args.out is not None:
        nbformat.write(nb, args.out)
        print(f"executed {args.notebook}; wrote {args.out}")
    else:
        print(f"executed {args.notebook}")


if __name__ == "__main__":
    main()
