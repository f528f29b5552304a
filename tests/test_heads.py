"""DeepLabV3+, the context module head and the VGG-16 front end: shapes, structure, init, and that they learn."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from seg.models.context_net import BASIC_DILATIONS, ContextModule, ContextNet
from seg.models.deeplabv3plus import DeepLabV3Plus
from seg.models.vgg_dilated import VGGDilated, fc_to_conv
from tests.helpers import compose_cfg


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def convs(module: nn.Module, k: int | None = None) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d) and (k is None or m.kernel_size[0] == k)]


# ------------------------------------------------------------------------------------------ DeepLabV3+


@pytest.mark.parametrize("output_stride", [8, 16])
def test_deeplabv3plus_contract(output_stride):
    torch.manual_seed(0)
    net = DeepLabV3Plus(5, "resnet18", output_stride=output_stride, aspp_rates=(1, 2, 3), aux=True)
    x = torch.randn(2, 3, 64, 48)
    out = net.train()(x)
    assert set(out) == {"out", "aux"} and out["out"].shape == out["aux"].shape == (2, 5, 64, 48)
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 5, 64, 48)


def test_deeplabv3plus_decoder_fuses_stage1_at_stride_4():
    """Chen et al. 2018 Sec. 4.1: layer1 -> 1x1 to 48, concat with the upsampled 256-ch ASPP, two 3x3 256, 1x1."""
    net = DeepLabV3Plus(5, "resnet18", output_stride=16, aspp_rates=(1, 2, 3)).eval()
    seen = {}
    net.decoder.fuse.register_forward_hook(lambda m, i, o: seen.update(fuse_in=i[0].shape))
    net.decoder.project.register_forward_hook(lambda m, i, o: seen.update(low_in=i[0].shape, low_out=o.shape))
    with torch.no_grad():
        net(torch.randn(1, 3, 64, 64))
    assert seen["low_in"] == (1, 64, 16, 16)  # resnet18 layer1: 64 channels at stride 4
    assert seen["low_out"] == (1, 48, 16, 16)
    assert seen["fuse_in"] == (1, 48 + 256, 16, 16)  # ASPP output upsampled x4 (OS 16 -> 4)
    proj = net.decoder.project[0]
    assert proj.kernel_size == (1, 1) and proj.out_channels == 48
    assert [(c.kernel_size, c.out_channels) for c in convs(net.decoder.fuse)] == [((3, 3), 256)] * 2
    assert net.decoder.classifier.kernel_size == (1, 1) and net.decoder.classifier.out_channels == 5
    assert not any(n.startswith("backbone.") for n, _ in net.decoder.named_parameters())


def test_separable_decoder_splits_each_3x3_as_the_reference_code():
    """separable=True (the Xception setting): depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU, twice; the
    rest unchanged.
    Per output pixel its two convolutions cost 9*304 + 304*256 + 9*256 + 256*256 multiply-adds against
    9*304*256 + 9*256*256 dense (0.115 of them)."""
    dense = DeepLabV3Plus(5, "resnet18", aspp_rates=(1, 2, 3)).eval()
    sep = DeepLabV3Plus(5, "resnet18", aspp_rates=(1, 2, 3), separable=True).eval()
    layout = [(c.kernel_size, c.in_channels, c.out_channels, c.groups) for c in convs(sep.decoder.fuse)]
    assert layout == [((3, 3), 304, 304, 304), ((1, 1), 304, 256, 1), ((3, 3), 256, 256, 256), ((1, 1), 256, 256, 1)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in sep.decoder.fuse.modules()) == 4
    bn = 2 * (304 + 256 + 256 + 256)  # weight and bias of each BatchNorm
    assert n_params(sep.decoder.fuse) == 9 * 304 + 304 * 256 + 9 * 256 + 256 * 256 + bn
    assert n_params(dense.decoder.fuse) == 9 * 304 * 256 + 9 * 256 * 256 + 2 * (256 + 256)
    assert n_params(sep) - n_params(sep.decoder.fuse) == n_params(dense) - n_params(dense.decoder.fuse)
    with torch.no_grad():
        assert sep(torch.randn(1, 3, 50, 70)).shape == (1, 5, 50, 70)


# ------------------------------------------------------------------------------------------ context module


def test_context_module_layout_and_size():
    c = 5
    module = ContextModule(c)
    layer_convs = convs(module)
    assert [m.dilation[0] for m in layer_convs[:-1]] == list(BASIC_DILATIONS) == [1, 1, 2, 4, 8, 16, 1]
    assert all(m.in_channels == m.out_channels == c for m in layer_convs)
    assert layer_convs[-1].kernel_size == (1, 1)
    assert n_params(module) == 7 * (c * c * 9 + c) + (c * c + c)
    assert sum(isinstance(m, nn.ReLU) for m in module) == 7


def test_context_module_identity_init_passes_input_through():
    torch.manual_seed(0)
    module = ContextModule(6)
    x = torch.rand(2, 6, 20, 20) * 5  # non-negative: untouched by the truncations
    with torch.no_grad():
        assert torch.equal(module(x), x)
        signed = torch.randn(2, 6, 20, 20)
        assert torch.equal(module(signed), signed.clamp(min=0))  # max(., 0) after each layer, as in the paper


def test_contextnet_contract():
    torch.manual_seed(0)
    net = ContextNet(5, "resnet18", output_stride=8)
    x = torch.randn(2, 3, 64, 64)
    out = net.train()(x)
    assert set(out) == {"out", "front_end"} and out["out"].shape == out["front_end"].shape == (2, 5, 64, 64)
    # model.net.aux means in every ResNet segmenter: an FCN head on layer3
    with_aux = ContextNet(5, "resnet18", output_stride=8, aux=True, supervise_front_end=False).train()
    assert set(with_aux(x)) == {"out", "aux"} and with_aux.aux_classifier is not None
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 5, 64, 64)
    assert net.context[0].in_channels == 5  # the module works on the class scores


def test_contextnet_trains_the_front_end_alone_first():
    """For `front_end_steps` optimizer steps "out" is the front end's scores and the module gets no gradient;
    then the module joins and "front_end" supervises the scores. The count is in the state_dict (resume)."""
    torch.manual_seed(0)
    net = ContextNet(3, "resnet18", output_stride=8, front_end_steps=2).train()
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    for step in range(3):
        net.zero_grad(set_to_none=True)
        out = net(x)
        assert set(net(x)) == set(out)  # forward calls do not move the clock
        torch.nn.functional.cross_entropy(out["out"], y).backward()
        module_grads = [p.grad for p in net.context.parameters()]
        if step < 2:
            assert set(out) == {"out"} and all(g is None for g in module_grads)
        else:
            assert set(out) == {"out", "front_end"} and all(g is not None for g in module_grads)
            assert any(g.abs().sum() > 0 for g in module_grads)
        net.optimizer_stepped()
    assert int(net.state_dict()["batches_trained"]) == 3
    with torch.no_grad():
        net.eval()(x)
    assert int(net.batches_trained) == 3  # evaluation does not count
    resumed = ContextNet(3, "resnet18", output_stride=8, front_end_steps=2)
    resumed.load_state_dict(net.state_dict())
    assert set(resumed.train()(x)) == {"out", "front_end"}  # a resumed run continues in the second stage


def test_contextnet_front_end_steps_count_optimizer_steps_under_gradient_accumulation(tmp_path):
    """With trainer.accumulate_grad_batches=2, front_end_steps=1 covers the first two batches (one optimizer step),
    and the count saved in the checkpoint is the trainer's global_step."""
    import pytorch_lightning as pl

    from seg.module import SegModule

    torch.manual_seed(0)
    net = ContextNet(3, "resnet18", output_stride=8, front_end_steps=1)
    module_ran = []  # per training forward: did the context module run
    net.register_forward_pre_hook(lambda m, i: module_ran.append(False) if m.training else None)
    net.context.register_forward_hook(lambda m, i, o: module_ran.__setitem__(-1, True) if m.training else None)
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8, 32, 32))), batch_size=2
    )
    trainer = pl.Trainer(
        max_steps=2,
        accumulate_grad_batches=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(SegModule(net, num_classes=3), train_dataloaders=data)
    assert trainer.global_step == 2
    assert module_ran == [False, False, True, True]
    assert int(net.batches_trained) == 2
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    assert int(state["net.batches_trained"]) == 2


# ------------------------------------------------------------------------------------------ VGG front end


def test_vgg_largefov_structure():
    with torch.device("meta"):
        net = VGGDilated(5)
    pools = [m for m in net.backbone if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3  # pool4 and pool5 gone: output stride 8
    feature_convs = convs(net.backbone)
    assert len(feature_convs) == 13
    assert [m.dilation[0] for m in feature_convs] == [1] * 10 + [2] * 3  # conv5_x dilated 2
    fc6, fc7 = net.fc6[0], net.fc7[0]
    assert (fc6.kernel_size, fc6.dilation, fc6.padding, fc6.out_channels) == ((3, 3), (12, 12), (12, 12), 1024)
    assert (fc7.kernel_size, fc7.out_channels) == ((1, 1), 1024)
    # torchvision's key names survive, so its features state_dict loads by key
    assert "28.weight" in net.backbone.state_dict() and "30.weight" not in net.backbone.state_dict()


def test_vgg_output_stride_and_contract():
    torch.manual_seed(0)
    net = VGGDilated(5, batch_norm=True, fc6_dilation=4, context=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert net.eval().backbone(x)["out"].shape == (2, 512, 8, 8)
        assert net(x).shape == (2, 5, 64, 64)
    out = net.train()(x)
    assert set(out) == {"out"} and out["out"].shape == (2, 5, 64, 64)


def test_fc_to_conv_decimates_like_deeplab():
    torch.manual_seed(0)
    w6, b6 = torch.randn(8, 2 * 7 * 7), torch.randn(8)
    conv6 = nn.Conv2d(2, 2, 3, dilation=12, padding=12)
    w, b = fc_to_conv(w6, b6, conv6, fc_input_size=7)
    assert torch.equal(w, w6.view(8, 2, 7, 7)[::4, :, ::3, ::3]) and torch.equal(b, b6[::4])
    assert w[1, 1, 2, 2] == w6.view(8, 2, 7, 7)[4, 1, 6, 6]
    w7, b7 = torch.randn(8, 8), torch.randn(8)
    w, b = fc_to_conv(w7, b7, nn.Conv2d(2, 2, 1), fc_input_size=1)
    assert torch.equal(w[:, :, 0, 0], w7[::4, ::4]) and torch.equal(b, b7[::4])
    assert fc_to_conv(w6, b6, nn.Conv2d(2, 3, 3), fc_input_size=7) is None  # 8 filters don't decimate to 3


def test_load_vgg_weights_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    src = VGGDilated(5, fc6_channels=16, fc7_channels=16)  # a random init: a stand-in for ImageNet weights
    state = {f"features.{k}": v for k, v in src.backbone.state_dict().items()}
    state["classifier.0.weight"], state["classifier.0.bias"] = torch.randn(64, 512 * 49), torch.randn(64)
    state["classifier.3.weight"], state["classifier.3.bias"] = torch.randn(64, 64), torch.randn(64)
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    net = VGGDilated(5, fc6_channels=16, fc7_channels=16, weights=str(path))
    assert torch.equal(net.backbone[28].weight, src.backbone[28].weight)
    assert torch.equal(net.fc6[0].weight, state["classifier.0.weight"].view(64, 512, 7, 7)[::4, :, ::3, ::3])
    assert torch.equal(net.fc7[0].weight[:, :, 0, 0], state["classifier.3.weight"][::4, ::4])
    del state["features.28.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError, match="28.weight"):
        VGGDilated(5, fc6_channels=16, fc7_channels=16, weights=str(path))


def test_vgg_weights_name_is_checked():
    with pytest.raises(ValueError, match="VGG16_BN_Weights"):
        VGGDilated(5, batch_norm=True, weights="VGG16_Weights.IMAGENET1K_V1")


# ------------------------------------------------------------------------------------------ training


# ASPP rates of 12+ on a 3x3 map only read padding, and CPU convolutions with that much padding are slow
@pytest.mark.parametrize(
    ("model", "extra"), [("deeplabv3plus", ["model.net.aspp_rates=[1,2,3]"]), ("context", []), ("vgg_largefov", [])]
)
def test_configured_head_learns_a_batch(model, extra, tiny_data_dir):
    """Each config instantiates through Hydra, and 10 SGD steps on one real batch (2 crops of 48 px) cut the loss."""
    overrides = [f"model={model}", f"data.root={tiny_data_dir}", "data.num_workers=0", "data.batch_size=4", *extra]
    cfg = compose_cfg(overrides)
    torch.manual_seed(0)
    module = instantiate(cfg.model)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    x = x[:2, :, 8:56, 8:56]
    y = y[:2, 8:56, 8:56].long()
    opt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    module.train()
    losses = []
    for _ in range(10):
        out = module(x)
        loss = module.criterion(out["out"], y) + sum(0.4 * module.criterion(out[k], y) for k in out if k == "aux")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0], losses
