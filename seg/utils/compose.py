"""Where seg's configs live and how to compose them from Python exactly as a command line would (tests,
notebooks, benchmarks), and the resolved config printed as a tree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# the top-level conf/ of the source tree (a checkout, an editable install), or its copy inside an installed package
_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # seg/
CONF_DIR = str(_PACKAGE_DIR / "conf" if (_PACKAGE_DIR / "conf").is_dir() else _PACKAGE_DIR.parent / "conf")


def compose_config(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """The config ``python -m seg.<entry> <overrides>`` would see, with the ``hydra`` node included."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides or [], return_hydra_config=True)


def config_tree(cfg: DictConfig, order: tuple[str, ...] = ("data", "model", "callbacks", "logger", "trainer")) -> Any:
    """The resolved config as a rich Tree: one branch per top-level group (``order`` first), YAML leaves."""
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", style="bold", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order and k != "hydra"]
    for key in keys:
        node = cfg._get_node(key)
        try:
            text = OmegaConf.to_yaml(cfg[key], resolve=True) if OmegaConf.is_config(node) else str(cfg[key])
        except OmegaConfBaseException:  # e.g. ${hydra:...} outside a Hydra run: show it unresolved
            text = OmegaConf.to_yaml(node) if OmegaConf.is_config(node) else str(node._value())
        leaf = Syntax(text.rstrip(), "yaml", theme="ansi_dark", background_color="default")
        tree.add(f"[bold]{key}[/bold]").add(leaf)
    return tree
