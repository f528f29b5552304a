"""seg: semantic segmentation with dilated convolutions (PyTorch Lightning + Hydra)."""

from omegaconf import OmegaConf

from seg.utils.machine import cpu_precision


def _num_classes(spec):
    """``${seg.num_classes:${data.classes}}`` in conf/data/folder.yaml: the class count of an inline list or a YAML
    file. Imported when a config uses it, so that ``import seg.models`` does not import the data stack."""
    from seg.data.folder import num_classes

    return num_classes(spec)


OmegaConf.register_new_resolver("seg.num_classes", _num_classes, replace=True)
OmegaConf.register_new_resolver("seg.cpu_precision", cpu_precision, replace=True)
