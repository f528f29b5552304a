"""The default learning-rate schedule (seg.module.warmup_poly): linear warm-up from lr / 1000 over ``warmup_steps``,
then DeepLab's poly decay ``lr * (1 - t / T') ** power`` over the remaining ``T' = total - warmup_steps`` steps;
every rate a short training run uses, against that closed form."""

from __future__ import annotations

import pytest
import torch
from omegaconf import open_dict

from seg.module import warmup_poly
from seg.train import train


def closed_form(lr: float, step: int, total: int, warmup: int, power: float) -> float:
    if step < warmup:
        return lr * (1e-3 + (1 - 1e-3) * step / warmup)
    return lr * (1 - (step - warmup) / (total - warmup)) ** power


@pytest.mark.parametrize(("warmup", "power"), [(0, 0.9), (4, 0.9), (3, 2.0)])
def test_warmup_poly_rates_follow_the_closed_form(warmup, power):
    total = 12
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.05)
    sched = warmup_poly(opt, total_steps=total, warmup_steps=warmup, power=power)
    rates = []
    for _ in range(total):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == pytest.approx([closed_form(0.05, s, total, warmup, power) for s in range(total)], rel=1e-9)
    assert rates[0] == pytest.approx(0.05 / 1000 if warmup else 0.05)


def test_every_learning_rate_of_a_short_run_follows_warmup_then_poly(cfg_train, tmp_path):
    """3 epochs of 3 steps, 4 warm-up steps, power 2, head at 10x: the rate of both parameter groups at each of
    the 9 optimizer steps, read from the optimizer as the step trains."""
    with open_dict(cfg_train):
        cfg_train.trainer.max_epochs = 3
        cfg_train.model.optimizer.lr = 0.02
        cfg_train.model.head_lr_mult = 10.0
        cfg_train.model.scheduler.warmup_steps = 4
        cfg_train.model.scheduler.power = 2.0
        cfg_train.callbacks.spy = {"_target_": "tests.spies.TrainSpy", "out": str(tmp_path / "run.spy")}
        cfg_train.trainer.limit_val_batches = 0  # rates only: no validation
    train(cfg_train)
    lrs = torch.load(tmp_path / "run.spy", weights_only=True)["lrs"]
    assert sorted(lrs) == list(range(9))
    for group, base in enumerate((0.02, 0.2)):  # backbone at lr, the rest at lr * head_lr_mult
        got = [lrs[s][group] for s in range(9)]
        assert got == pytest.approx([closed_form(base, s, 9, 4, 2.0) for s in range(9)], rel=1e-9), group
    assert lrs[0][0] == pytest.approx(0.02 / 1000) and lrs[4][0] == pytest.approx(0.02)  # warm-up, then the peak
