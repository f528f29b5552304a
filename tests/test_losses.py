"""seg.losses: each loss against a value computed by hand, the ignore label, gradients, autocast, the spec parser,
and a short training run per loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from seg.losses import LOSSES, OhemCrossEntropyLoss, WeightedSumLoss, build_loss

IGNORE = 255
ln = math.log


def two_class(probs_of_1, targets, extra_classes: int = 0):
    """Logits (1, 2 [+extra], 1, N) whose softmax over the first two classes is (1 - p, p) exactly:
    logits (ln(1 - p), ln p); extra classes get logit -1e4 (probability 0 in float32). Targets (1, 1, N)."""
    p = torch.tensor(probs_of_1, dtype=torch.float64)
    logits = torch.stack([torch.log1p(-p), torch.log(p)] + [torch.full_like(p, -1e4)] * extra_classes)
    return logits.float()[None, :, None, :].requires_grad_(True), torch.tensor([[targets]])


# ----------------------------------------------------------------------------------------------------- hand values


def test_ce_weights_and_label_smoothing_by_hand():
    # pixels (p = softmax prob of class 1, target): A (3/4, 1), B (3/4, 0), C (1/2, 0), D ignored
    logits, target = two_class([0.75, 0.75, 0.5, 0.9], [1, 0, 0, IGNORE])
    w, eps, c = [1.0, 2.0], 0.2, 2
    # -log p: A: class0 ln4, class1 ln(4/3); B the same; C: ln2 for both
    # nll part  = sum_i w[y_i] (-log p_{y_i}) = 2 ln(4/3) + ln4 + ln2
    # smooth    = sum_i sum_c w[c] (-log p_ic) = 2 (ln4 + 2 ln(4/3)) + (ln2 + 2 ln2)
    # normaliser = sum_i w[y_i] = 2 + 1 + 1 = 4
    # loss = (1 - eps) * nll / 4 + eps / C * smooth / 4
    nll = 2 * ln(4 / 3) + ln(4) + ln(2)
    smooth = 2 * (ln(4) + 2 * ln(4 / 3)) + 3 * ln(2)
    expected = (1 - eps) * nll / 4 + eps / c * smooth / 4
    loss = build_loss({"name": "ce", "label_smoothing": eps}, class_weights=torch.tensor(w))
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # and it is torch's definition
    ref = F.cross_entropy(logits, target, weight=torch.tensor(w), ignore_index=IGNORE, label_smoothing=eps)
    assert loss(logits, target).item() == pytest.approx(ref.item(), rel=1e-6)
    # plain ce: (ln(4/3) + ln4 + ln2) / 3
    assert build_loss(None)(logits, target).item() == pytest.approx((ln(4 / 3) + ln(4) + ln(2)) / 3, rel=1e-6)


def test_ohem_keeps_the_expected_pixels():
    # true-class probabilities 0.9 (t=1), 0.6 (t=1), 0.3 (t=0), 0.8 (t=1), one ignored pixel (p=0.01, hardest of all)
    logits, target = two_class([0.9, 0.6, 0.7, 0.8, 0.01], [1, 1, 0, 1, IGNORE])
    w = torch.tensor([2.0, 1.0])  # class 0 weighs 2
    prob_true = torch.tensor([[[0.9, 0.6, 0.3, 0.8, 0.99]]])  # class 0 prob of pixel 3 is 1 - 0.7
    valid = target != IGNORE

    # thresh 0.7, min_kept 0: keep p < 0.7 -> pixels 2 and 3 -> (-ln 0.6 + 2 * -ln 0.3) / 2
    ohem = build_loss({"name": "ohem", "thresh": 0.7, "min_kept": 0}, class_weights=w)
    assert ohem.kept_mask(prob_true, valid).tolist() == [[[False, True, True, False, False]]]
    assert ohem(logits, target).item() == pytest.approx((-ln(0.6) - 2 * ln(0.3)) / 2, rel=1e-5)

    # min_kept 3: the 3 hardest valid pixels (0.3, 0.6, 0.8) even though 0.8 >= thresh; the ignored one never
    ohem3 = OhemCrossEntropyLoss(thresh=0.7, min_kept=3, class_weights=w)
    assert ohem3.kept_mask(prob_true, valid).tolist() == [[[False, True, True, True, False]]]
    assert ohem3(logits, target).item() == pytest.approx((-ln(0.6) - 2 * ln(0.3) - ln(0.8)) / 3, rel=1e-5)

    # default min_kept (100000) > 4 valid pixels: all 4 kept -> plain mean of the weighted per-pixel ce
    default = build_loss("ohem", class_weights=w)
    assert default(logits, target).item() == pytest.approx((-ln(0.9) - ln(0.6) - 2 * ln(0.3) - ln(0.8)) / 4, rel=1e-5)


def test_dice_by_hand_and_present_classes():
    # pixel 1: p = (1/4, 3/4), target 1; pixel 2: p = (1/2, 1/2), target 0; pixel 3 ignored (p = (0.1, 0.9))
    # class 0: intersection 1/2, sum p 3/4 (ignored pixel masked out), sum g 1 -> dice 1 / 1.75 = 4/7
    # class 1: intersection 3/4, sum p 5/4, sum g 1 -> dice 1.5 / 2.25 = 2/3
    # loss = 1 - (4/7 + 2/3) / 2 = 8/21
    logits, target = two_class([0.75, 0.5, 0.9], [1, 0, IGNORE])
    assert build_loss("dice")(logits, target).item() == pytest.approx(8 / 21, rel=1e-5)
    # smooth 1: dice0 = (1 + 1) / (1.75 + 1) = 8/11, dice1 = (1.5 + 1) / (2.25 + 1) = 10/13
    smooth = build_loss({"name": "dice", "smooth": 1.0})(logits, target).item()
    assert smooth == pytest.approx(1 - (8 / 11 + 10 / 13) / 2, rel=1e-5)
    # a third class absent from the target (and predicted nowhere) is left out of the mean: still 8/21
    logits3, target3 = two_class([0.75, 0.5, 0.9], [1, 0, IGNORE], extra_classes=1)
    assert build_loss("dice")(logits3, target3).item() == pytest.approx(8 / 21, rel=1e-5)


def test_lovasz_by_hand():
    # class-1 probabilities 0.8, 0.4, 0.3 with targets 1, 1, 0 (and an ignored pixel)
    # class 1: fg (1,1,0), errors |fg - p| = (0.2, 0.6, 0.3); sorted 0.6 (fg), 0.3 (bg), 0.2 (fg); |fg| = 2
    #   Jaccard loss of the prefixes: 1 - 1/2, 1 - 1/3, 1 - 0/3 -> (1/2, 2/3, 1); increments (1/2, 1/6, 1/3)
    #   loss_1 = 0.6/2 + 0.3/6 + 0.2/3 = 5/12
    # class 0: fg (0,0,1), p0 = (0.2, 0.6, 0.7), errors (0.2, 0.6, 0.3); sorted 0.6 (bg), 0.3 (fg), 0.2 (bg); |fg| = 1
    #   prefixes: 1 - 1/2, 1 - 0/2, 1 - 0/3 -> (1/2, 1, 1); increments (1/2, 1/2, 0); loss_0 = 0.3 + 0.15 = 0.45
    # present classes: (5/12 + 9/20) / 2 = 13/30
    logits, target = two_class([0.8, 0.4, 0.3, 0.5], [1, 1, 0, IGNORE])
    assert build_loss("lovasz")(logits, target).item() == pytest.approx(13 / 30, rel=1e-5)
    # a third class with probability 0 everywhere: absent, so "present" is unchanged; "all" adds its loss, the
    # largest error (max p_2 = 0), to a mean over 3 classes: (5/12 + 9/20 + 0) / 3 = 13/45
    logits3, target3 = two_class([0.8, 0.4, 0.3, 0.5], [1, 1, 0, IGNORE], extra_classes=1)
    assert build_loss("lovasz")(logits3, target3).item() == pytest.approx(13 / 30, rel=1e-5)
    assert build_loss({"name": "lovasz", "classes": "all"})(logits3, target3).item() == pytest.approx(13 / 45, rel=1e-5)
    # a perfect prediction has loss 0
    perfect, t = two_class([1 - 1e-7, 1e-7], [1, 0])
    assert build_loss("lovasz")(perfect, t).item() == pytest.approx(0.0, abs=1e-6)


def test_focal_by_hand():
    # pixel 1: p_t = 3/4 (target 1, alpha 2); pixel 2: p_t = 1/2 (target 0, alpha 1); pixel 3 ignored
    # gamma 2: 2 * (1/4)^2 * ln(4/3) and 1 * (1/2)^2 * ln 2, mean over the 2 valid pixels
    logits, target = two_class([0.75, 0.5, 0.2], [1, 0, IGNORE])
    focal = build_loss("focal", class_weights=torch.tensor([1.0, 2.0]))
    assert focal(logits, target).item() == pytest.approx((0.125 * ln(4 / 3) + 0.25 * ln(2)) / 2, rel=1e-5)
    # gamma 0 without weights is cross-entropy
    plain = build_loss({"name": "focal", "gamma": 0})(logits, target)
    assert plain.item() == pytest.approx(F.cross_entropy(logits, target, ignore_index=IGNORE).item(), rel=1e-6)


# ---------------------------------------------------------------------------------------- ignore label, gradients

SPECS = {
    "ce": {"name": "ce", "label_smoothing": 0.1},
    "ohem": {"name": "ohem", "thresh": 0.5, "min_kept": 7},
    "dice": {"name": "dice", "smooth": 1.0},
    "lovasz": "lovasz",
    "focal": "focal",
}
WEIGHTS = torch.tensor([0.5, 1.0, 2.0])


def random_batch(seed=0, b=2, c=3, h=5, w=6):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g) * 2
    target = torch.randint(0, c, (b, h, w), generator=g)
    target[torch.rand(b, h, w, generator=g) < 0.2] = IGNORE
    return logits, target


def loss_and_grad(loss, logits, target):
    x = logits.clone().requires_grad_(True)
    value = loss(x, target)
    value.backward()
    return value.detach(), x.grad


@pytest.mark.parametrize("name", list(SPECS))
def test_ignored_pixels_change_nothing(name):
    loss = build_loss(SPECS[name], class_weights=WEIGHTS)
    logits, target = random_batch()
    value, grad = loss_and_grad(loss, logits, target)
    # 4 extra columns of ignored pixels with large arbitrary logits
    extra = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(1)) * 10
    big_logits = torch.cat([logits, extra], dim=3)
    big_target = torch.cat([target, torch.full((2, 5, 4), IGNORE)], dim=2)
    big_value, big_grad = loss_and_grad(loss, big_logits, big_target)
    torch.testing.assert_close(big_value, value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(big_grad[..., :6], grad, rtol=1e-4, atol=1e-6)
    assert big_grad[..., 6:].abs().max() == 0
    # the logits at already-ignored pixels do not matter either
    other = torch.where((target == IGNORE).unsqueeze(1), torch.randn_like(logits) * 10, logits)
    value2, grad2 = loss_and_grad(loss, other, target)
    torch.testing.assert_close(value2, value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad2, grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(SPECS))
def test_gradients_finite_and_all_ignored_gives_zero(name):
    loss = build_loss(SPECS[name], class_weights=WEIGHTS)
    logits, target = random_batch(seed=2)
    logits[0, :, 0, 0] = torch.tensor([80.0, -80.0, 0.0])  # saturated softmax
    value, grad = loss_and_grad(loss, logits, target)
    assert torch.isfinite(value) and value > 0 and torch.isfinite(grad).all()
    x = logits.clone().requires_grad_(True)
    empty = loss(x, torch.full_like(target, IGNORE))
    assert empty.ndim == 0 and empty.requires_grad and empty.item() == 0.0
    empty.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() == 0


@pytest.mark.parametrize("name", list(SPECS))
def test_bf16_autocast_computes_in_float32(name):
    loss = build_loss(SPECS[name], class_weights=WEIGHTS)
    logits, target = random_batch(seed=3)
    conv = torch.nn.Conv2d(3, 3, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(logits)
        assert out.dtype == torch.bfloat16
        value = loss(out, target)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    torch.testing.assert_close(value, loss(out.float(), target), rtol=1e-6, atol=1e-6)
    value.backward()
    assert all(torch.isfinite(p.grad).all() for p in conv.parameters())


def test_class_weights_apply_to_ce_ohem_focal_only_and_stay_out_of_the_checkpoint():
    logits, target = random_batch(seed=4)
    for name in LOSSES:
        plain = build_loss(name)(logits, target)
        weighted_loss = build_loss(name, class_weights=torch.tensor([0.1, 1.0, 5.0]))
        weighted = weighted_loss(logits, target)
        assert (weighted.item() != pytest.approx(plain.item())) == (name in ("ce", "ohem", "focal")), name
        assert "class_weights" not in weighted_loss.state_dict()
    with pytest.raises(ValueError, match="class_weights has 2 entries but the logits have 3 classes"):
        build_loss("ce", class_weights=torch.tensor([1.0, 2.0]))(logits, target)


# ------------------------------------------------------------------------------------------------ spec parsing


def test_weighted_sum_equals_the_sum_of_its_terms():
    logits, target = random_batch(seed=5)
    spec = [{"name": "ce", "weight": 1.0}, {"name": "lovasz", "weight": 0.5}]
    total = build_loss(spec)(logits, target)
    expected = build_loss("ce")(logits, target) + 0.5 * build_loss("lovasz")(logits, target)
    torch.testing.assert_close(total, expected)
    # the same from Hydra's containers, and a single mapping with a weight
    hydra = build_loss(OmegaConf.create({"loss": spec}).loss)
    assert isinstance(hydra, WeightedSumLoss)
    torch.testing.assert_close(hydra(logits, target), expected)
    terms = hydra.terms(logits, target)
    assert list(terms) == ["ce", "lovasz"]
    one = build_loss(OmegaConf.create({"name": "focal", "weight": 2.0, "gamma": 1.0}))
    torch.testing.assert_close(one(logits, target), 2 * build_loss({"name": "focal", "gamma": 1})(logits, target))
    # the same loss twice gets two names
    twice = build_loss([{"name": "ohem", "thresh": 0.6}, {"name": "ohem", "thresh": 0.9}])
    assert list(twice.losses) == ["ohem", "ohem_1"]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("lovaz", ["'lovaz'", "ce, ohem, dice, lovasz, focal"]),
        ({"name": "ohem", "tresh": 0.7}, ["'tresh'", "thresh", "min_kept"]),
        ([{"name": "ce"}, {"nme": "dice"}], ["loss spec[1]", "'name'"]),
        ({"name": "ohem", "thresh": 1.5}, ["thresh", "1.5"]),
        ({"name": "ce", "weight": "heavy"}, ["weight", "heavy"]),
        ({"name": "lovasz", "classes": "some"}, ["classes", "'some'"]),
        ([], ["empty"]),
        (3, ["int", "known losses"]),
    ],
)
def test_bad_spec_is_a_one_line_error_naming_the_key(spec, words):
    with pytest.raises(ValueError) as info:
        build_loss(spec)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


# ----------------------------------------------------------------------------------------------- it learns


def colour_data():
    """Fixed 2x3x16x16 images; a pixel's class (blocks of 4x4 pixels, 3 classes) sets its red level (0.1, 0.5, 0.9)
    up to a small deterministic jitter, green and blue vary regardless of the class; a 3x3 block is ignored.
    No randomness."""
    i = torch.arange(16)
    target = ((i[:, None] // 4 + i[None, :] // 4) % 3).expand(2, 16, 16).clone()
    target[1] = target[1].flip(-1)
    jitter = (((i[:, None] * 7 + i[None, :] * 3) % 5) - 2) / 20  # -0.1 .. 0.1
    red = torch.tensor([0.1, 0.5, 0.9])[target] + jitter
    green = ((i[:, None] * 5 + i[None, :] * 11) % 16) / 15
    images = torch.stack([red, green.expand(2, 16, 16), 1 - green.expand(2, 16, 16)], dim=1)
    target[:, :3, :3] = IGNORE
    return images, target


def miou(pred, target, num_classes=3):
    valid = target != IGNORE
    ious = []
    for c in range(num_classes):
        inter = ((pred == c) & (target == c) & valid).sum()
        union = (((pred == c) | (target == c)) & valid).sum()
        if union > 0:
            ious.append(inter / union)
    return torch.stack(ious).float().mean().item()


TRAIN_SPECS = {
    **SPECS,
    # real mining: 64 of the 494 valid pixels at least (min_kept 7 of SPECS makes 60 steps of SGD oscillate)
    "ohem": {"name": "ohem", "thresh": 0.7, "min_kept": 64},
    "ce+lovasz": [{"name": "ce"}, {"name": "lovasz", "weight": 0.5}],
}


@pytest.mark.parametrize("name", list(TRAIN_SPECS))
def test_a_short_training_run_learns(name):
    loss_fn = build_loss(TRAIN_SPECS[name], class_weights=torch.tensor([1.0, 1.5, 1.0]))
    images, target = colour_data()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 1), torch.nn.ReLU(), torch.nn.Conv2d(16, 3, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9)
    losses, mious = [], []
    for _ in range(60):
        logits = net(images)
        loss = loss_fn(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        mious.append(miou(logits.argmax(1), target))
    with torch.no_grad():
        final = miou(net(images).argmax(1), target)
    assert losses[-1] < 0.6 * losses[0], losses
    assert final > mious[0] and final > 0.9, (mious[0], final)
