"""seg.models.support.compile: the compiled net gives the eager net's scores (fp32 and bf16), also after folding."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch._inductor.config as inductor_config
from torch import nn

from seg.evaluate import evaluate
from seg.models.support.compile import compile_for_inference
from seg.models.support.fold_bn import fold_batchnorm
from tests.helpers import fake_run
from tests.test_evaluate import eval_cfg


def small_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=2, dilation=2, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU6(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 5, 1),
    )
    for m in net.modules():  # statistics that make folding them matter
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    net.input_scale = 0.5  # an attribute a seg net carries, read through the compiled wrapper
    return net.eval()


def test_compiled_net_gives_the_eager_scores_in_fp32_and_bf16():
    net = small_net().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    x = x.contiguous(memory_format=torch.channels_last)
    folded, count = fold_batchnorm(copy.deepcopy(net), x[:1])
    compiled = compile_for_inference(copy.deepcopy(folded))
    assert count == 2 and compiled is not folded
    with torch.no_grad():
        eager = net(x)
        assert torch.allclose(compiled(x), eager, atol=1e-4), (compiled(x) - eager).abs().max()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            eager_bf16, compiled_bf16 = net(x).float(), compiled(x).float()
        # bf16 keeps 8 bits of mantissa: both paths round, differently, within a few bf16 steps of fp32
        assert (compiled_bf16 - eager).abs().max() < 0.1 and (eager_bf16 - eager).abs().max() < 0.1
        assert (compiled_bf16.argmax(1) == eager.argmax(1)).float().mean() > 0.95
        smaller = x[:1, :, :32, :32]  # a new shape compiles again and still agrees
        assert torch.allclose(compiled(smaller), net(smaller), atol=1e-4)
        # frozen: the weights were compiled in as constants, so changing them afterwards changes nothing
        before = compiled(x)
        compiled.net[-1].bias.add_(1.0)
        assert torch.equal(compiled(x), before) and not torch.allclose(compiled.net(x), before)
    # freezing was switched on around the compiled calls only, and the net's attributes stay reachable
    assert inductor_config.freezing is False and compiled.input_scale == 0.5


@pytest.mark.slow
def test_evaluate_compiled_scores_what_eager_scores(cfg_train, tmp_path):
    """seg-evaluate inference.compile=true (fp32): the same mIoU as eager, and metrics.json says it compiled."""
    ckpt = fake_run(cfg_train, tmp_path / "run")
    eager = evaluate(eval_cfg(ckpt, tmp_path / "eager", "inference.precision=32"))
    compiled = evaluate(eval_cfg(ckpt, tmp_path / "compiled", "inference.precision=32", "inference.compile=true"))
    assert compiled["compiled"] is True and compiled["runtime"].startswith("compiled fp32")
    assert abs(compiled["mIoU"] - eager["mIoU"]) < 1e-3 and eager["compiled"] is False
    assert json.loads((tmp_path / "compiled" / "metrics.json").read_text())["compiled"] is True
