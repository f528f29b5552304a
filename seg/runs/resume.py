"""Checks before a run resumes from a checkpoint (``ckpt_path=``): the checkpoint's network fits the configured
one, and the settings that shape training are the ones the checkpoint's run had.

An exact resume (same steps, same weights as an uninterrupted run) holds only under the checkpoint's own
settings: another batch size, for one, moves the train loader's saved position, which was counted in batches of
the old size. Such changes are named in a warning; a change that cannot resume (another class count, another
network) is refused with one line before the model is built.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from seg.models.support.weights import CheckpointError, unwrap_state_dict
from seg.module import SegModule
from seg.runs.config import RUN_CONFIG, find_run_dir, load_run_config
from seg.runs.init_from import load_net_weights

__all__ = ["changed_settings", "check_resume_checkpoint", "check_resume_config"]
log = logging.getLogger(__name__)

# the config sections whose values shape the training trajectory
COMPARED = (
    "data",
    "model",
    "seed",
    "trainer.precision",
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.accumulate_grad_batches",
    "trainer.gradient_clip_val",
    "trainer.gradient_clip_algorithm",
)
# ... less what only moves files, changes validation or speed, or is overwritten by the resume (initial weights)
IGNORED = (
    "data.root",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.val_batch_size",
    "data.extra_val_splits",
    "model.input_scale",
    "model.channels_last",
    "model.net.weights",
)
# a change here builds another network: its weights cannot continue the run
REFUSED = ("model._target_", "model.num_classes", "model.net._target_", "model.net.num_classes", "model.net.backbone")


def _leaves(node: Any, prefix: str) -> dict[str, Any]:
    """Dotted keys of a config node's leaves (lists are leaves), interpolations unresolved."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_leaves(value, f"{prefix}.{key}"))
    return out


def _resolved(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)


def _settings(cfg: DictConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in COMPARED:
        node = _resolved(cfg, key)
        value = OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else node
        out.update(_leaves(value, key))
    return {k: v for k, v in out.items() if not k.startswith(IGNORED)}


def changed_settings(before: DictConfig, now: DictConfig) -> dict[str, tuple[Any, Any]]:
    """Key -> (checkpoint run's value, this run's value) for every compared setting that differs (``None``: the
    key is missing on that side)."""
    a, b = _settings(before), _settings(now)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def check_resume_config(cfg: DictConfig, ckpt_path: str | Path) -> dict[str, tuple[Any, Any]]:
    """Compare this run's config with that of the run ``ckpt_path`` comes from (``.hydra/config.yaml`` in its run
    folder): :class:`CheckpointError` for another class count or network, a warning naming every other setting
    that changes the trajectory. Returns the changes (empty when the checkpoint has no run folder beside it)."""
    run_dir = find_run_dir(ckpt_path)
    if run_dir is None:
        log.info("resuming from %s: no %s beside it, the run's settings are not compared", ckpt_path, RUN_CONFIG)
        return {}
    before = load_run_config(run_dir)
    for key in REFUSED:
        old, new = _resolved(before, key), _resolved(cfg, key)
        if old is not None and new is not None and old != new:
            classes = key.endswith("num_classes")
            what = f"for {old} classes, this run for {new}" if classes else f"{key}={old}, this run {new}"
            raise CheckpointError(
                f"{ckpt_path}: its run trained {what}: a resume continues the same network; start a new run from "
                f"its weights with init_from={ckpt_path} instead"
            )
    changes = changed_settings(before, cfg)
    if changes:
        listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
        log.warning(
            "resuming %s under changed settings: %s. The run goes on, but not as the checkpoint's run would have "
            "(not an exact resume: e.g. the train loader's saved position counts batches of the old size)",
            ckpt_path,
            listed,
        )
    return changes


def check_resume_checkpoint(checkpoint: object, path: str | Path, module: SegModule) -> None:
    """Before training: the network in ``checkpoint`` (loaded from ``path``) fits ``module.net``: same class
    count, layers and shapes; else :class:`CheckpointError` naming the file.

    Loads the weights into ``module.net`` on the way, which the resume then overwrites with the same values.
    """
    load_net_weights(module.net, unwrap_state_dict(checkpoint, path), path)
