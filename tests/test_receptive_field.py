"""Receptive fields: traced theoretical fields against published numbers, gridding, and the ERF's support."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from seg.analysis.receptive_field import (
    conv_dilations,
    effective_receptive_field,
    gridding,
    main,
    plot_erf,
    receptive_fields,
)
from seg.models import DeepLabV3, DilatedResNet
from seg.models.context_net import ContextModule, ContextNet


def test_resnet18_fields_match_the_published_values():
    """Plain ResNet-18 (output stride 32): 7, 11, 43, 99, 211, 435 px (e.g. Araujo et al. 2019, Distill)."""
    table = receptive_fields(DeepLabV3(5, "resnet18", output_stride=32), 64)
    sizes = {k.removeprefix("backbone."): (v.size, v.jump) for k, v in table.items() if k.startswith("backbone")}
    assert sizes == {
        "conv1": (7, 2),
        "maxpool": (11, 4),
        "layer1": (43, 4),
        "layer2": (99, 8),
        "layer3": (211, 16),
        "layer4": (435, 32),
    }


@pytest.mark.parametrize(
    ("output_stride", "multi_grid", "layer3", "layer4"),
    [
        # each 3x3 conv of dilation d at stride s adds 2*d*s: layer4 rates (1, 1, 2, 2) at stride 16
        (16, None, (211, 16), (403, 16)),
        # layer3 rates (1, 1, 2, 2) and layer4 rates (2, 2, 4, 4) at stride 8
        (8, None, (195, 8), (387, 8)),
        # multi-grid (1, 2) on layer4's base rate 4: rates (4, 4, 8, 8) -> 195 + 16 * 24
        (8, (1, 2), (195, 8), (579, 8)),
    ],
)
def test_dilation_trades_stride_for_field(output_stride, multi_grid, layer3, layer4):
    table = receptive_fields(DilatedResNet(18, output_stride, multi_grid), 64)
    assert (table["layer3"].size, table["layer3"].jump) == layer3
    assert (table["layer4"].size, table["layer4"].jump) == layer4


def test_context_module_fields_match_yu_koltun_table_1():
    """Table 1 of Yu & Koltun 2016: 3, 5, 9, 17, 33, 65, 67 after the seven 3x3 layers; the 1x1 keeps 67."""
    module = ContextModule(4)
    names = [str(i) for i in range(0, 16, 2)]  # the conv layers (ReLUs at odd indices)
    table = receptive_fields(module, 32, modules=names, in_channels=4)
    assert [table[n].size for n in names] == [3, 5, 9, 17, 33, 65, 67, 67]
    assert table["output"].jump == 1


def test_image_pooling_is_reported_as_global():
    assert receptive_fields(DeepLabV3(5, "resnet18", output_stride=16), 64)["output"].global_
    context = receptive_fields(ContextNet(5, "resnet18", output_stride=8), 64)
    assert not context["output"].global_
    assert context["context"].size == context["classifier"].size + 66 * 8  # 67-unit module at stride 8


def test_unknown_spatial_op_is_refused():
    net = nn.Sequential(nn.Conv2d(3, 12, 1), nn.PixelShuffle(2))
    with pytest.raises(ValueError, match="changes the spatial size"):
        receptive_fields(net, 16)


def test_gridding_finds_the_holes_of_equal_rates():
    cov = gridding([2, 2, 2])
    assert cov.radius == 6
    assert cov.holes == [-5, -3, -1, 1, 3, 5]
    assert cov.counts.sum() == 27 and cov.counts_2d.sum() == 27**2
    assert (cov.counts_2d[1::2, :] == 0).all()  # every odd row of the 2-D field is empty


@pytest.mark.parametrize(("rates", "radius"), [((1, 2, 5), 8), ((1, 2, 3), 6), ((1, 1, 2, 4, 8, 16, 1), 33)])
def test_hybrid_rates_cover_everything(rates, radius):
    cov = gridding(rates)
    assert cov.radius == radius and cov.holes == []


def test_gridding_of_a_real_stage():
    """OS 8 ResNet-18 layer4 alone chains rates 2, 2, 4, 4: only even offsets are seen (skips aside)."""
    rates = conv_dilations(DilatedResNet(18, 8).layer4)
    assert rates == [2, 2, 4, 4]
    assert gridding(rates).holes == [o for o in range(-11, 12) if o % 2]


def _positive_stack(specs: list[tuple[int, int]], channels: int = 2) -> nn.Sequential:
    """Linear stack of 3x3 convs (stride, dilation) with positive weights: no gradient can cancel out."""
    torch.manual_seed(0)
    layers = []
    for i, (stride, rate) in enumerate(specs):
        conv = nn.Conv2d(1 if i == 0 else channels, channels, 3, stride=stride, padding=rate, dilation=rate)
        nn.init.uniform_(conv.weight, 0.1, 1.0)
        layers.append(conv)
    return nn.Sequential(*layers).double()


def _support_box(erf: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(erf)
    return rows.min(), rows.max(), cols.min(), cols.max()


@pytest.mark.parametrize("rates", [(1, 2, 5), (2, 2, 2), (1, 2, 4, 8), (3, 1)])
def test_theoretical_field_is_the_support_of_the_erf(rates):
    """Luo et al. 2016 vs the theory on a plain dilated stack: same extent, and the same holes as gridding()."""
    size = 48
    net = _positive_stack([(1, r) for r in rates])
    rf = receptive_fields(net, size, in_channels=1)["output"]
    erf = effective_receptive_field(net, size, in_channels=1, n_samples=1)
    lo, hi = rf.span(size // 2)
    assert _support_box(erf) == (lo, hi, lo, hi)
    seen = erf[size // 2, int(lo) : int(hi) + 1] > 0
    assert seen.tolist() == (gridding(rates).counts > 0).tolist()


def test_theoretical_field_with_strides_and_padding_is_the_erf_box():
    """Strides move the centre unit's field; its box must still be exactly where the gradient lands."""
    size = 40
    net = _positive_stack([(2, 1), (1, 2), (2, 3), (1, 1)])
    table = receptive_fields(net, size, in_channels=1)
    rf, out_units = table["output"], size // 4
    assert (rf.size, rf.jump) == (1 + 2 + 2 * 2 * 2 + 2 * 3 * 2 + 2 * 4, 4)
    erf = effective_receptive_field(net, size, in_channels=1, n_samples=1)
    lo, hi = rf.span(out_units // 2)
    assert _support_box(erf) == (lo, hi, lo, hi)


def test_erf_of_a_real_stage_stays_inside_its_theoretical_field():
    """ResNet-18 up to layer1 (43 px): ReLUs and max-pooling thin the gradient, never widen it."""
    torch.manual_seed(0)
    b = DilatedResNet(18, 16)
    stem = nn.Sequential(b.conv1, b.bn1, b.relu, b.maxpool, b.layer1)
    size = 96
    rf = receptive_fields(stem, size)["output"]
    assert rf.size == 43
    erf = effective_receptive_field(stem, size, n_samples=2)
    lo, hi = rf.span(size // 4 // 2)
    r0, r1, c0, c1 = _support_box(erf)
    assert lo <= r0 and r1 <= hi and lo <= c0 and c1 <= hi
    assert r1 - r0 + 1 >= 0.8 * rf.size  # and it does fill most of it


def test_plot_erf_draws_the_field(tmp_path):
    net = _positive_stack([(1, 1), (1, 2)])
    erf = effective_receptive_field(net, 16, in_channels=1, n_samples=1)
    rf = receptive_fields(net, 16, in_channels=1)["output"]
    fig = plot_erf(erf, rf, rf, erf.shape)
    assert isinstance(fig, Figure) and "7 x 7" in fig.axes[0].get_title()
    fig.savefig(tmp_path / "erf.png")
    assert (tmp_path / "erf.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_prints_the_configured_network(capsys, tmp_path):
    main(["--size", "64", "--erf", str(tmp_path / "erf.png"), "model.net.output_stride=8"])
    out = capsys.readouterr().out
    assert "| backbone.layer4 | 387 | 8 |" in out
    assert "gridding within backbone.layer4: rates [2, 2, 4, 4]" in out
    assert (tmp_path / "erf.png").is_file()
