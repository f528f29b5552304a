"""seg.export: ONNX and TorchScript parity with dynamic sizes, the tolerance failure, int8 quantization figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from omegaconf import open_dict
from torchmetrics.classification import MulticlassConfusionMatrix

from seg.data.synthetic import SyntheticShapes
from seg.data.transforms import val_transforms
from seg.export import export, onnx_runner, torchscript_runner
from seg.metrics import metrics_from_confmat
from seg.runs.loaded import load_model
from tests.helpers import compose_cfg, fake_run


def export_cfg(ckpt: Path, out: Path, *overrides: str):
    cfg = compose_cfg([f"ckpt_path={ckpt}", f"output={out}", *overrides], config_name="export")
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        del cfg.hydra
    return cfg


def test_onnx_export_is_dynamic_checked_and_quantizes(cfg_train, tmp_path):
    """One ONNX export (the slow step) serves three checks: parity, the tolerance failure, int8 figures."""
    ckpt = fake_run(cfg_train, tmp_path / "run")
    out = tmp_path / "export"
    cfg = export_cfg(ckpt, out, "quantize=int8", "int8.calibration_images=4", "tolerance=1e-12")
    with pytest.raises(ValueError, match=r"model.onnx: max abs difference .* exceeds tolerance=1e-12"):
        export(cfg)
    report = json.loads((out / "export.json").read_text())
    assert set(report["max_abs_diff"]) == {"1x3x96x128", "2x3x75x131"}
    assert 0 < max(report["max_abs_diff"].values()) < 1e-4

    model = onnx.load(out / "model.onnx")
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    net = load_model(ckpt).net.float().to(memory_format=torch.contiguous_format)
    x = torch.randn(3, 3, 40, 56)
    with torch.no_grad():
        np.testing.assert_allclose(onnx_runner(out / "model.onnx")(x.numpy()), net(x).numpy(), atol=1e-4)

    int8 = report["int8"]
    ops = {node.op_type for node in onnx.load(out / "model.int8.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert int8["images"] == 5 and int8["calibration_images"] == 4
    # the speed-up is the measured fp32 time over the int8 time of the same images (a ratio, not a timed assertion)
    assert int8["ms_fp32"] > 0 and int8["ms_int8"] > 0
    assert int8["speedup"] == pytest.approx(int8["ms_fp32"] / int8["ms_int8"], rel=1e-9)
    assert int8["mIoU_change"] == pytest.approx(int8["mIoU_int8"] - int8["mIoU_fp32"])
    # the fp32 ONNX model scores what PyTorch scores on the same split
    ds = SyntheticShapes(cfg_train.data.root, "val", transform=val_transforms())
    confmat = MulticlassConfusionMatrix(5, ignore_index=255)
    with torch.no_grad():
        for image, mask in (ds[i] for i in range(len(ds))):
            confmat.update(net(image[None]).argmax(dim=1), torch.as_tensor(mask)[None].long())
    assert int8["mIoU_fp32"] == pytest.approx(metrics_from_confmat(confmat.compute())["mIoU"], abs=1e-3)


def test_torchscript_export_runs_at_any_size(cfg_train, tmp_path):
    ckpt = fake_run(cfg_train, tmp_path / "run")
    report = export(export_cfg(ckpt, tmp_path / "ts", "format=torchscript"))
    assert max(report["max_abs_diff"].values()) < 1e-4
    run = torchscript_runner(tmp_path / "ts" / "model.pt")
    net = load_model(ckpt).net.float().to(memory_format=torch.contiguous_format)
    x = torch.randn(2, 3, 33, 71)
    with torch.no_grad():
        np.testing.assert_allclose(run(x.numpy()), net(x).numpy(), atol=1e-4)


def test_a_torch_export_program_loads_without_seg_and_matches_at_other_sizes(cfg_train, tmp_path):
    """format=export: a torch.export program with dynamic batch and size, reloaded in a fresh interpreter that
    never imports seg, gives the eager model's logits."""
    ckpt = fake_run(cfg_train, tmp_path / "run")
    report = export(export_cfg(ckpt, tmp_path / "pt2", "format=export"))
    assert report["file"].endswith("model.pt2") and max(report["max_abs_diff"].values()) < 1e-4
    net = load_model(ckpt).net.float().to(memory_format=torch.contiguous_format)
    x = torch.randn(2, 3, 45, 83)
    torch.save(x, tmp_path / "x.pt")
    script = (
        "import sys, torch; program = torch.export.load(sys.argv[1]).module(); "
        "out = program(torch.load(sys.argv[2])); torch.save(out, sys.argv[3]); "
        "assert not any(m.startswith('seg') for m in sys.modules)"
    )
    args = [str(tmp_path / "pt2" / "model.pt2"), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")]
    subprocess.run([sys.executable, "-c", script, *args], check=True, cwd=tmp_path, timeout=300)
    with torch.no_grad():
        np.testing.assert_allclose(torch.load(tmp_path / "y.pt").numpy(), net(x).numpy(), atol=1e-4)


def test_bad_export_options_are_refused(cfg_train, tmp_path):
    ckpt = fake_run(cfg_train, tmp_path / "run")
    with pytest.raises(ValueError, match="quantize=int8 produces an ONNX model"):
        export(export_cfg(ckpt, tmp_path / "x", "format=torchscript", "quantize=int8"))
    with pytest.raises(ValueError, match="format='tflite'"):
        export(export_cfg(ckpt, tmp_path / "x", "format=tflite"))


# the ONNX export of a TF-ported timm model takes ~70 s (its "same" padding is traced symbolically), 10 s otherwise
@pytest.mark.parametrize(
    "backbone", ["mobilenetv3_small_100", pytest.param("tf_efficientnet_lite0", marks=pytest.mark.slow)]
)
def test_timm_backbone_exports_to_onnx_int8_and_torchscript_with_parity(cfg_train, tmp_path, backbone):
    with open_dict(cfg_train):
        cfg_train.model.net.update(backbone=backbone, output_stride=16, aspp_rates=[1, 2, 3])
    ckpt = fake_run(cfg_train, tmp_path / "run")
    report = export(export_cfg(ckpt, tmp_path / "onnx", "quantize=int8", "int8.calibration_images=2"))
    assert 0 < max(report["max_abs_diff"].values()) < 1e-4
    assert report["int8"]["images"] == 5 and abs(report["int8"]["mIoU_change"]) <= 1.0
    report = export(export_cfg(ckpt, tmp_path / "ts", "format=torchscript"))
    assert max(report["max_abs_diff"].values()) < 1e-4
    net = load_model(ckpt).net.float().to(memory_format=torch.contiguous_format)
    x = torch.randn(1, 3, 45, 61)  # odd sizes: a TF port's "same" padding is computed from the input at run time
    with torch.no_grad():
        scripted = torchscript_runner(tmp_path / "ts" / "model.pt")(x.numpy())
        np.testing.assert_allclose(scripted, net(x).numpy(), atol=1e-4)


def test_int8_comparison_runs_a_downscaled_model_at_its_input_scale():
    """A model trained at input_scale 0.5 is scored as validation scores it: half-size input, logits upsampled to
    the full-size mask (here a runner that is right only at half size scores mIoU 1 and sees only half sizes)."""
    from seg.export import ImageReader, compare_on_split

    masks = [np.kron(np.eye(2, dtype=np.uint8)[[i % 2, 1 - i % 2]], np.ones((8, 12), np.uint8)) for i in range(3)]
    dataset = [(np.zeros((3, 16, 24), np.float32) + i, m) for i, m in enumerate(masks)]  # (image CHW, mask 16x24)
    seen = []

    def runner(x: np.ndarray) -> np.ndarray:
        seen.append(x.shape[-2:])
        half = masks[int(x[0, 0, 0, 0])][::2, ::2]  # the right answer at the size it is given
        return (
            np.stack([half == 0, half == 1])[None].astype(np.float32)
            if x.shape[-2:] == (8, 12)
            else np.zeros((1, 2, *x.shape[-2:]), np.float32)
        )

    result = compare_on_split(runner, runner, dataset, num_classes=2, input_scale=0.5)
    assert set(seen) == {(8, 12)} and result["mIoU_fp32"] == result["mIoU_int8"] == 1.0
    assert result["input_scale"] == 0.5
    reader = ImageReader(dataset, 2, input_scale=0.5)
    assert [batch["image"].shape for batch in iter(reader.get_next, None)] == [(1, 3, 8, 12)] * 2
