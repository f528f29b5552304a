"""model.loss and model.class_weights from the command line: every loss trains the real network on the synthetic
data, and median-frequency weights are counted from the train split, cached outside the dataset and logged."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from seg.data.class_weights import class_weights, count_labels, resolve_class_weights
from seg.losses import LOSSES, OhemCrossEntropyLoss, WeightedSumLoss
from seg.metrics import ConfusionMatrix, metrics_from_confmat
from seg.train import train
from tests.helpers import compose_cfg


def test_loss_and_class_weights_are_command_line_keys():
    loss = "model.loss=[{name: ce, weight: 1.0}, {name: lovasz, weight: 0.5}]"
    module = instantiate(compose_cfg([loss, "model.class_weights=[1,2,3,4,5]"]).model)
    assert isinstance(module.criterion, WeightedSumLoss)
    assert set(module.criterion.losses) == {"ce", "lovasz"} and module.criterion.weights == {"ce": 1.0, "lovasz": 0.5}
    cfg = compose_cfg(["model.loss={name: ohem, thresh: 0.9, min_kept: 10}"])
    assert isinstance(instantiate(cfg.model).criterion, OhemCrossEntropyLoss)
    with pytest.raises(Exception, match="model.class_weights has 2 values for 5 classes"):
        instantiate(compose_cfg(["model.class_weights=[1,2]"]).model)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_trains_the_network_on_the_synthetic_data(cfg_train, name):
    """30 steps on one batch of the tiny synthetic set: the loss falls and the batch's mIoU rises."""
    torch.manual_seed(0)
    with open_dict(cfg_train):
        cfg_train.model.loss = {"name": name, "min_kept": 2000} if name == "ohem" else name
        cfg_train.model.channels_last = False
    model = instantiate(cfg_train.model)
    dm = instantiate(cfg_train.data)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    y = y.long()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)

    def miou() -> float:
        model.eval()
        with torch.no_grad():
            confmat = ConfusionMatrix(5, ignore_index=255)
            confmat.update(model(x).argmax(1), y)
        model.train()
        return metrics_from_confmat(confmat.compute())["mIoU"]

    before, losses = miou(), []
    model.train()
    for _ in range(30):
        loss = model.training_step((x, y), 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses
    assert miou() > before + 0.1


def test_median_freq_weights_are_counted_cached_and_logged(cfg_train, tmp_path, tiny_data_dir):
    """seg.train turns model.class_weights=median_freq into numbers from the train split: written next to the run,
    cached under outputs/cache (never in the dataset folder), read back from the cache by the next run."""
    with open_dict(cfg_train):
        cfg_train.model.class_weights = "median_freq"
        cfg_train.paths.log_dir = str(tmp_path / "outputs")
        cfg_train.trainer.max_steps = 1
        cfg_train.trainer.limit_val_batches = 1
    dm = instantiate(cfg_train.data)
    dm.setup("fit")
    pixels, image_pixels = count_labels(dm.train_set, 5, progress=False)
    expected = class_weights(pixels, image_pixels, "median_freq")
    train(cfg_train)
    record = json.loads((tmp_path / "class_weights.json").read_text())
    assert record["method"] == "median_freq" and record["split"] == "train"
    assert list(record["weights"]) == ["background", "disk", "square", "triangle", "cross"]
    assert np.allclose(list(record["weights"].values()), expected, atol=1e-4)
    cache = list((tmp_path / "outputs" / "cache" / "class_weights").glob("*.json"))
    assert len(cache) == 1 and not list(tiny_data_dir.rglob("*weight*"))  # never written into the dataset folder
    assert json.loads(cache[0].read_text())["pixels"] == pixels.tolist()
    assert (tmp_path / "splits" / "train.txt").read_text().split() == dm.train_set.ids
    # the next run reads the cache: a planted count changes the weights it computes
    planted = {**json.loads(cache[0].read_text()), "pixels": [1, 1, 1, 1, 1], "image_pixels": [1, 1, 1, 1, 1]}
    cache[0].write_text(json.dumps(planted))
    again = resolve_class_weights("median_freq", dm.train_set, cache[0].parent)
    assert again == [1.0] * 5
