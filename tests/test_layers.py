"""The package's layers: utils < models | data < core < runs < callbacks < commands. A module imports only from its
own layer or lower ones (models and data are siblings: neither imports the other), so that a reader can take the
package in that order and a change to a higher layer never reaches a lower one. Every ``import`` statement counts,
those inside functions and under ``TYPE_CHECKING`` too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import seg

PACKAGE = Path(seg.__file__).parent
CORE = {"seg.module", "seg.losses", "seg.metrics", "seg.inference", "seg.large_image", "seg.viz"}
COMMANDS = {"seg", "seg.train", "seg.evaluate", "seg.predict", "seg.export"}  # seg: registers the resolvers
ORDER = ["utils", "models", "data", "core", "runs", "callbacks", "commands"]
RANK = {"utils": 0, "models": 1, "data": 1, "core": 2, "runs": 3, "callbacks": 4, "commands": 5}


def layer(module: str) -> str:
    """The layer of a module of seg (``seg.runs.loaded`` -> ``runs``); analysis (sweep reports over run folders,
    the receptive-field tools) stands with the commands."""
    if module in CORE:
        return "core"
    if module in COMMANDS:
        return "commands"
    room = module.split(".")[1]
    if room == "analysis":
        return "commands"
    if room in RANK:
        return room
    raise AssertionError(f"{module} belongs to no layer: put it in a room of {ORDER} or name it in this test")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def seg_imports(path: Path) -> set[str]:
    """The seg modules ``path`` imports (``from seg.x import y`` counts as seg.x, or seg.x.y when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "seg"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "seg":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").is_file() or (
                    PACKAGE.parent / Path(*sub.split("."))
                ).is_dir()
                found.add(sub if is_module else node.module)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_no_relative_imports_hide_from_the_check():
    relative = [
        str(p.relative_to(PACKAGE.parent))
        for p in MODULES
        if any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(ast.parse(p.read_text())))
    ]
    assert not relative, f"relative imports (write seg.x.y): {relative}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_a_module_imports_only_its_own_layer_or_lower_ones(path):
    me = module_name(path)
    mine = layer(me)
    for other in seg_imports(path):
        theirs = layer(other)
        assert RANK[theirs] <= RANK[mine], f"{me} ({mine}) imports {other} ({theirs}): a higher layer"
        if RANK[theirs] == RANK[mine] == RANK["models"]:
            assert theirs == mine, (
                f"{me} ({mine}) imports {other} ({theirs}): models and data know nothing of each other"
            )


def test_the_check_sees_a_wrong_import(tmp_path):
    """The walk finds what it must refuse: an upward import inside a function, a sibling's import."""
    upward = tmp_path / "x.py"
    upward.write_text("def f():\n    from seg.runs.loaded import load_model\n")
    assert seg_imports(upward) == {"seg.runs.loaded"} and RANK[layer("seg.runs.loaded")] > RANK[layer("seg.utils.cli")]
    assert layer("seg.models.support.weights") == "models" and layer("seg.data.transforms") == "data"
    assert seg_imports(PACKAGE / "data" / "transforms.py") >= {"seg.utils.imagenet", "seg.utils.sizes"}
