"""seg.inference: sliding-window grid and batching, multi-scale + flip, precision and memory-format options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from seg.inference import InferenceConfig, infer, slide_logits, windows
from seg.models import DeepLabV3
from tests.helpers import compose_cfg


@pytest.fixture(scope="module")
def net() -> DeepLabV3:
    torch.manual_seed(0)
    model = DeepLabV3(num_classes=3, backbone="resnet18", output_stride=16, aux=False).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    return model


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 48, 40, generator=torch.Generator().manual_seed(1))


def test_window_grid_covers_the_image_flush_with_the_borders():
    boxes = windows(10, 7, window=(4, 4), stride=(3, 3))
    assert boxes == [(y0, y0 + 4, x0, x0 + 4) for y0 in (0, 3, 6) for x0 in (0, 3)]
    # a side shorter than the window: one window as long as that side
    assert windows(3, 9, window=(4, 4), stride=(4, 4)) == [(0, 3, 0, 4), (0, 3, 4, 8), (0, 3, 5, 9)]
    cover = torch.zeros(10, 7)
    for y0, y1, x0, x1 in boxes:
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1


def test_batched_windows_equal_one_window_at_a_time(net, images):
    cfg = InferenceConfig(mode="slide", window=(32, 32), stride=(16, 16), window_batch=3)
    batched = slide_logits(net, images, cfg)
    # reference: every window through the net alone, logits summed and divided by the overlap count
    boxes = windows(48, 40, (32, 32), (16, 16))
    assert len(boxes) == 4  # 2 images x 4 windows in batches of 3, 3, 2
    total, count = torch.zeros(2, 3, 48, 40), torch.zeros(1, 1, 48, 40)
    for y0, y1, x0, x1 in boxes:
        count[..., y0:y1, x0:x1] += 1
    with torch.no_grad():
        for i in range(2):
            for y0, y1, x0, x1 in boxes:
                total[i, :, y0:y1, x0:x1] += net(images[i : i + 1, :, y0:y1, x0:x1])[0]
    torch.testing.assert_close(batched, total / count, atol=1e-5, rtol=1e-5)
    assert count.max() == 4  # the centre is averaged over four windows


def test_slide_with_a_window_as_large_as_the_image_is_whole_image(net, images):
    whole = infer(net, images, InferenceConfig())
    slide = infer(net, images, InferenceConfig(mode="slide", window=(64, 64)))
    assert torch.equal(whole, slide)


def test_multi_scale_flip_averages_the_views_probabilities(net, images):
    cfg = InferenceConfig(scales=(0.5, 1.0), flip=True)
    scores = infer(net, images, cfg, out_size=(50, 44))
    with torch.no_grad():
        views = []
        for size in ((24, 20), (48, 40)):
            x = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
            for logits in (net(x), net(x.flip(-1)).flip(-1)):
                up = F.interpolate(logits, size=(50, 44), mode="bilinear", align_corners=False)
                views.append(up.softmax(dim=1))
    torch.testing.assert_close(scores, torch.stack(views).mean(dim=0), atol=1e-6, rtol=1e-5)
    assert scores.shape == (2, 3, 50, 44)
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(2, 50, 44))


def test_single_view_returns_logits_resized_to_out_size(net, images):
    scores = infer(net, images, InferenceConfig(), out_size=(60, 50))
    with torch.no_grad():
        expected = F.interpolate(net(images), size=(60, 50), mode="bilinear", align_corners=False)
    torch.testing.assert_close(scores, expected)


def test_bf16_runs_under_autocast_and_channels_last_keeps_results(net, images):
    fp32 = infer(net, images, InferenceConfig(precision="32"))
    bf16 = infer(net, images, InferenceConfig(precision="bf16"))
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)  # bf16 arithmetic really happened
    # bf16 keeps 8 significant bits (0.4 % per rounding); through this ResNet-18 the largest deviation measures 1.1 %
    # of the largest logit and the mean 0.44 % of the mean: bounds at about 3x and 2x that
    err = (bf16 - fp32).abs()
    assert err.max() < 0.03 * fp32.abs().max() and err.mean() < 0.01 * fp32.abs().mean()
    net_cl = DeepLabV3(num_classes=3, backbone="resnet18", output_stride=16, aux=False).eval()
    net_cl.load_state_dict(net.state_dict())
    net_cl = net_cl.to(memory_format=torch.channels_last)
    cl = infer(net_cl, images, InferenceConfig(precision="32", channels_last=True))
    torch.testing.assert_close(cl, fp32, atol=1e-4, rtol=1e-4)


def test_options_are_checked_and_auto_takes_the_run_defaults():
    with pytest.raises(ValueError, match="needs a positive inference.window"):
        InferenceConfig(mode="slide")
    with pytest.raises(ValueError, match="stride"):
        InferenceConfig(mode="slide", window=32, stride=40)
    with pytest.raises(ValueError, match="mode"):
        InferenceConfig(mode="tiles")
    cfg = InferenceConfig.from_options(
        {"mode": "slide", "window": "auto", "stride": None, "precision": "auto", "channels_last": "auto"},
        {"window": 96, "precision": "bf16", "channels_last": True},
    )
    assert (cfg.window, cfg.stride, cfg.precision, cfg.channels_last) == ((96, 96), (64, 64), "bf16", True)
    assert cfg.describe() == "slide 96x96/64x64"
    with pytest.raises(ValueError, match="unknown inference option"):
        InferenceConfig.from_options({"scale": [1.0]})


def test_input_scale_predicts_at_the_reduced_size_and_scores_at_the_label_size():
    """input_scale=0.5: the net sees the image at half size; the scores come back at the label's full size, equal
    to the half-size logits upsampled (a hand-checked case with a net that reports its input)."""
    seen = []

    def net(x):
        seen.append(tuple(x.shape[-2:]))
        # class 1 wins on the left half of whatever it is given, class 0 on the right
        left = torch.zeros_like(x[:, :1])
        left[..., : x.shape[-1] // 2] = 1.0
        return torch.cat([-left, left], dim=1)

    images = torch.randn(1, 3, 40, 60)
    scores = infer(net, images, InferenceConfig(input_scale=0.5, precision="32"), out_size=(40, 60))
    assert seen == [(20, 30)] and scores.shape == (1, 2, 40, 60)
    pred = scores.argmax(1)[0]
    # half-size columns 0-14 are class 1; full-size column x reads half-size u = (x + 0.5) / 2 - 0.5: x = 30 reads
    # u = 14.75 (0.25 of class 1's margin left, still class 1), x = 31 reads u = 15.25 (a tie: argmax takes class 0)
    assert (pred[:, :31] == 1).all() and (pred[:, 31:] == 0).all()
    assert InferenceConfig(input_scale=0.5).describe() == "whole at x0.5"
    with pytest.raises(ValueError, match="input_scale=0.0"):
        InferenceConfig(input_scale=0)


def test_validation_and_evaluate_share_the_input_scale(cfg_train):
    from omegaconf import open_dict

    from seg.runs.config import run_inference_defaults

    with open_dict(cfg_train):
        cfg_train.model.input_scale = 0.5
    module = instantiate(cfg_train.model)
    assert module.inference.input_scale == 0.5
    assert run_inference_defaults(cfg_train)["input_scale"] == 0.5
    options = compose_cfg(config_name="evaluate", overrides=["ckpt_path=x"]).inference
    assert InferenceConfig.from_options(options, run_inference_defaults(cfg_train)).input_scale == 0.5


def test_class_map_is_argmax_first_index_on_ties_in_every_layout():
    """class_map (max(...).indices, the fast reduction) gives argmax's indices: NCHW, channels_last, bf16, another
    dim, and on scores full of ties (the first maximal class wins in both)."""
    from seg.inference import class_map

    g = torch.Generator().manual_seed(0)
    ties = torch.randint(0, 3, (2, 11, 24, 32), generator=g).float()  # most pixels have tied top scores
    scores = torch.randn(2, 11, 24, 32, generator=g)
    for x in (ties, scores, scores.contiguous(memory_format=torch.channels_last), scores.bfloat16()):
        assert torch.equal(class_map(x), x.argmax(dim=1))
    assert torch.equal(class_map(ties[0], dim=0), ties[0].argmax(dim=0))
    assert (ties.max(dim=1).values.unsqueeze(1) == ties).sum(1).gt(1).float().mean() > 0.5  # ties really there
