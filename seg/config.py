"""Compose seg's Hydra configs from Python (tests, notebooks, benchmarks) exactly as the entry points do."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def compose_config(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """The config ``python -m seg.<entry> <overrides>`` would see, with the ``hydra`` node included."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides or [], return_hydra_config=True)
