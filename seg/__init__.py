"""seg: semantic segmentation with dilated convolutions (PyTorch Lightning + Hydra)."""

from omegaconf import OmegaConf

from seg.data.folder import num_classes as _num_classes

# ${seg.num_classes:${data.classes}} in conf/data/folder.yaml: the class count of an inline list or a YAML file
OmegaConf.register_new_resolver("seg.num_classes", _num_classes, replace=True)
