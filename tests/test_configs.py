"""The configs mirror the code: each model/net config holds its class's defaults, model=deeplabv3 holds SegModule's,
and the other model configs start from it."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.utils import get_class, get_method
from omegaconf import OmegaConf

from seg.module import DEFAULT_OPTIMIZER, DEFAULT_SCHEDULER, SegModule
from tests.helpers import CONF_DIR, compose_cfg


def _defaults(target) -> dict:
    """Every keyword default of ``target``'s signature and of the classes it hands ``**kwargs`` to."""
    found = {}
    for cls in inspect.getmro(target) if inspect.isclass(target) else [target]:
        init = cls.__init__ if inspect.isclass(target) else cls
        params = inspect.signature(init).parameters
        for name, p in params.items():
            if p.default is not inspect.Parameter.empty and name not in found:
                found[name] = list(p.default) if isinstance(p.default, tuple) else p.default
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            break  # the base classes' keywords are not this class's
    return found


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(CONF_DIR) / "model" / "net").glob("*.yaml")))
def test_every_net_config_holds_its_class_defaults(name):
    cfg = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "model" / "net" / f"{name}.yaml"))
    cls = get_class(cfg.pop("_target_"))
    cfg.pop("num_classes")
    defaults = _defaults(cls)
    assert cfg == {k: defaults[k] for k in cfg}, name
    assert set(defaults) - {"num_classes"} == set(cfg), f"{name}: keys not in the config"


def test_model_deeplabv3_holds_segmodule_defaults():
    cfg = compose_cfg(["model=deeplabv3"]).model
    defaults = _defaults(SegModule)
    for key in ("head_lr_mult", "aux_weight", "channels_last"):
        assert cfg[key] == defaults[key], key
    assert get_class(cfg.optimizer._target_) is DEFAULT_OPTIMIZER.func
    assert {k: cfg.optimizer[k] for k in DEFAULT_OPTIMIZER.keywords} == DEFAULT_OPTIMIZER.keywords
    assert get_method(cfg.scheduler._target_) is DEFAULT_SCHEDULER.func
    assert {k: cfg.scheduler[k] for k in DEFAULT_SCHEDULER.keywords} == DEFAULT_SCHEDULER.keywords


@pytest.mark.parametrize("name", ["context", "deeplabv3plus", "fcn"])
def test_architecture_presets_hold_class_and_segmodule_defaults(name):
    """model=NAME names an architecture: its net config as written (the class defaults) and model=deeplabv3's
    training settings; nothing tuned for a dataset (that lives in experiment/, the quickstart in model=quickstart)."""
    cfg = compose_cfg([f"model={name}"]).model
    base = compose_cfg(["model=deeplabv3"]).model
    net = OmegaConf.load(Path(CONF_DIR) / "model" / "net" / f"{name}.yaml")
    assert OmegaConf.to_container(cfg.net) == OmegaConf.to_container(net), name
    for key in set(base) - {"net"}:
        assert cfg[key] == base[key], (name, key)


@pytest.mark.parametrize("name", ["context", "deeplabv3plus", "fcn", "vgg_largefov", "quickstart"])
def test_model_configs_start_from_deeplabv3(name):
    raw = OmegaConf.load(Path(CONF_DIR) / "model" / f"{name}.yaml")
    assert raw.defaults[0] in ("deeplabv3", "quickstart")
    cfg = compose_cfg([f"model={name}"]).model
    assert cfg._target_ == "seg.module.SegModule" and cfg.optimizer._partial_ and cfg.scheduler._partial_


def test_the_cpu_default_precision_is_bf16_only_where_amx_makes_it_fast():
    from seg import cpu_precision

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    assert cpu_precision() == ("bf16-mixed" if " amx_bf16" in flags else "32-true")
    assert compose_cfg([]).trainer.precision == cpu_precision()
    assert compose_cfg(["trainer.precision=bf16-mixed"]).trainer.precision == "bf16-mixed"
