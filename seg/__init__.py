"""seg: semantic segmentation with dilated convolutions (PyTorch Lightning + Hydra)."""

from omegaconf import OmegaConf


def cpu_precision() -> str:
    """``bf16-mixed`` on CPUs with AMX (bf16 matrix units: several times faster than fp32), else ``32-true``: on
    CPUs without them bf16 autocast runs emulated and many times slower than fp32 (the ``${seg.cpu_precision:}`` of
    ``conf/trainer/default.yaml``)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return "32-true"
    return "bf16-mixed" if " amx_bf16" in flags else "32-true"


def _num_classes(spec):
    """``${seg.num_classes:${data.classes}}`` in conf/data/folder.yaml: the class count of an inline list or a YAML
    file. Imported when a config uses it, so that ``import seg.models`` does not import the data stack."""
    from seg.data.folder import num_classes

    return num_classes(spec)


OmegaConf.register_new_resolver("seg.num_classes", _num_classes, replace=True)
OmegaConf.register_new_resolver("seg.cpu_precision", cpu_precision, replace=True)
