"""The configs mirror the code: each model/net config holds its class's defaults, model=deeplabv3 holds SegModule's,
and the other model configs start from it."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.utils import get_class, get_method
from omegaconf import OmegaConf

from seg.module import DEFAULT_OPTIMIZER, DEFAULT_SCHEDULER, SegModule
from seg.utils.machine import PRECISION_ENV, cpu_flags, cpu_model, cpu_precision, inference_precision, machine_label
from tests.helpers import CONF_DIR, compose_cfg


def _defaults(target) -> dict:
    """Every keyword default of ``target``'s signature (a class's ``__init__``: the segmenters spell out every
    option they take)."""
    params = inspect.signature(target).parameters
    return {
        name: list(p.default) if isinstance(p.default, tuple) else p.default
        for name, p in params.items()
        if p.default is not inspect.Parameter.empty
    }


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


@pytest.mark.parametrize(("name", "net_name"), [("context", "context_net"), ("deeplabv3plus",) * 2, ("fcn",) * 2])
def test_architecture_presets_hold_class_and_segmodule_defaults(name, net_name):
    """model=NAME names an architecture: its net config as written (the class defaults) and model=deeplabv3's
    training settings; nothing tuned for a dataset (that lives in experiment/, the quickstart in model=quickstart)."""
    cfg = compose_cfg([f"model={name}"]).model
    base = compose_cfg(["model=deeplabv3"]).model
    net = OmegaConf.load(Path(CONF_DIR) / "model" / "net" / f"{net_name}.yaml")
    assert OmegaConf.to_container(cfg.net) == OmegaConf.to_container(net), name
    for key in set(base) - {"net"}:
        assert cfg[key] == base[key], (name, key)


@pytest.mark.parametrize("name", ["context", "deeplabv3plus", "fcn", "vgg_largefov", "quickstart"])
def test_model_configs_start_from_deeplabv3(name):
    raw = OmegaConf.load(Path(CONF_DIR) / "model" / f"{name}.yaml")
    assert raw.defaults[0] in ("deeplabv3", "quickstart")
    cfg = compose_cfg([f"model={name}"]).model
    assert cfg._target_ == "seg.module.SegModule" and cfg.optimizer._partial_ and cfg.scheduler._partial_


XEON_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8
"""
EPYC_BF16_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 avx512_vnni
"""
EPYC_AVX2_CPUINFO = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx2 fma
"""
# cpuinfo, model name, the training precision the rule picks, what the label a sweep report shows adds
CPUS = [
    (XEON_CPUINFO, "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", "bf16-mixed", " +AMX"),
    (EPYC_BF16_CPUINFO, "AMD EPYC 9B14", "bf16-mixed", " +AVX512-BF16"),
    (EPYC_AVX2_CPUINFO, "AMD EPYC 7B13", "32-true", ""),
    ("", None, "32-true", ""),
]


@pytest.mark.parametrize(("cpuinfo", "model", "precision", "amx"), CPUS)
def test_the_cpu_precision_rule_on_each_kind_of_cpu(monkeypatch, cpuinfo, model, precision, amx):
    """Every branch of the measured rule on either kind of machine: the CPU's flags are faked, SEG_CPU_PRECISION
    unset; the trainer default follows it, the lite0 recipe keeps its own fp32."""
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    flags = cpu_flags(cpuinfo)
    assert cpu_precision(flags) == precision
    if model is not None:
        assert cpu_model(cpuinfo) == model and machine_label(model, flags) == model + amx
    monkeypatch.setattr("seg.utils.machine._cpuinfo", lambda: cpuinfo)  # this machine, as the configs see it
    assert compose_cfg([]).trainer.precision == precision
    assert compose_cfg(["+experiment=camvid_cpu"]).trainer.precision == precision
    assert compose_cfg(["+experiment=camvid_imagenet_cpu"]).trainer.precision == "32-true"
    # inference follows the same flags, also for the fp32 recipe: bf16 is its fastest accurate path where it is fast
    assert inference_precision(flags) == {"bf16-mixed": "bf16", "32-true": "32"}[precision]


@pytest.mark.parametrize("forced", ["32-true", "bf16-mixed"])
def test_seg_cpu_precision_forces_either_path_on_either_machine(monkeypatch, forced):
    monkeypatch.setenv(PRECISION_ENV, forced)
    for cpuinfo, *_ in CPUS:
        assert cpu_precision(cpu_flags(cpuinfo)) == forced
        assert inference_precision(cpu_flags(cpuinfo)) == {"bf16-mixed": "bf16", "32-true": "32"}[forced]
    assert compose_cfg([]).trainer.precision == forced
    assert compose_cfg(["+experiment=camvid_imagenet_cpu"]).trainer.precision == "32-true"  # set in its YAML
    assert compose_cfg(["trainer.precision=16-mixed"]).trainer.precision == "16-mixed"  # a value set wins


def test_a_bad_seg_cpu_precision_names_the_accepted_values(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    with pytest.raises(ValueError, match=r"SEG_CPU_PRECISION=bf16: expected one of 32-true, bf16-mixed \(or unset\)"):
        cpu_precision()
