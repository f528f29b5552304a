"""Export entry point: ``python -m seg.export ckpt_path=PATH format=onnx|export|torchscript [quantize=int8]``.

ONNX (torch.onnx's dynamo exporter) with dynamic batch, height and width, for onnxruntime and other runtimes; a
``torch.export`` program (``model.pt2``: PyTorch's successor to TorchScript, loadable with ``torch.export.load``
without seg, the input to AOTInductor) with the same dynamic axes; or TorchScript (traced; the traced graph keeps
the input size symbolic; TorchScript is no longer developed upstream). Each file is reloaded and checked against
the PyTorch model on random inputs of two sizes; the max abs logit difference is printed and the command fails
above ``tolerance``. ``quantize=int8`` adds an onnxruntime static-int8 model and reports its mIoU change and
speed-up on the val split.
"""

from __future__ import annotations

import copy
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.console import Console
from torch import nn

from seg.data.base import IGNORE_INDEX
from seg.inference import class_map, rescale
from seg.metrics import ConfusionMatrix, metrics_from_confmat
from seg.runs.config import run_inference_defaults
from seg.runs.loaded import LoadedModel, check_num_classes, data_config, load_model
from seg.utils.atomic import write_json_atomic
from seg.utils.cli import entry_point
from seg.utils.extras import require
from seg.utils.progress import progress_bar

FORMATS = ("onnx", "export", "torchscript")
_ORT_METHOD = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}  # onnxruntime's enum names
CALIBRATION_METHODS = tuple(_ORT_METHOD)
Runner = Callable[[np.ndarray], np.ndarray]  # a float32 batch (B, 3, H, W) -> logits, whatever runs it


def export_onnx(net: nn.Module, path: str | Path, opset: int = 18, bands: int = 3) -> Path:
    """Write ``net`` (fp32, eval) as ONNX: input "image" (batch, bands, height, width) -> output "logits", batch
    and sizes dynamic."""
    require("onnxscript", "export")  # torch.onnx's dynamo exporter needs onnx and onnxscript
    example = torch.randn(1, bands, 64, 64)
    torch.onnx.export(
        net,
        (example,),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        opset_version=opset,
        dynamo=True,
        dynamic_shapes=_dynamic_axes(),
        external_data=False,
        verbose=False,
    )
    return Path(path)


def _dynamic_axes() -> tuple[dict[int, object], ...]:
    """Batch, height and width dynamic (16 px at least: the smallest input the strided stem takes)."""
    batch, height, width = (torch.export.Dim(n, min=m) for n, m in (("batch", 1), ("height", 16), ("width", 16)))
    return ({0: batch, 2: height, 3: width},)


def export_program(net: nn.Module, path: str | Path, bands: int = 3) -> Path:
    """Write ``net`` (fp32, eval) as a ``torch.export`` program with dynamic batch, height and width:
    ``torch.export.load(path).module()`` runs it without seg."""
    example = torch.randn(2, bands, 64, 64)  # a batch of 1 would be specialised to 1 (torch.export's 0/1 rule)
    program = torch.export.export(net, (example,), dynamic_shapes=_dynamic_axes())
    torch.export.save(program, str(path))
    return Path(path)


def program_runner(path: str | Path) -> Runner:
    """The saved ``torch.export`` program, reloaded, as a function of a numpy batch."""
    module = torch.export.load(str(path)).module()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return run


def export_torchscript(net: nn.Module, path: str | Path, bands: int = 3) -> Path:
    """Write ``net`` traced to TorchScript; shapes are read from the input at run time, so any size works."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream but still supported
        traced = torch.jit.trace(net, torch.randn(1, bands, 64, 64), check_trace=False)
        torch.jit.save(traced, str(path))
    return Path(path)


def onnx_runner(path: str | Path, threads: int | None = None) -> Runner:
    """An onnxruntime CPU session as a function of a float32 batch (B, 3, H, W) -> logits."""
    ort = require("onnxruntime", "export")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def torchscript_runner(path: str | Path) -> Runner:
    """The saved TorchScript module, reloaded, as a function of a numpy batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return run


def max_abs_diffs(net: nn.Module, run: Runner, shapes: Sequence[Sequence[int]], seed: int = 0) -> list[float]:
    """Max abs logit difference between ``run`` and the PyTorch ``net`` on one random batch per shape."""
    generator = torch.Generator().manual_seed(seed)
    diffs = []
    for shape in shapes:
        x = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            reference = net(x).numpy()
        out = run(x.numpy())
        if out.shape != reference.shape:
            raise ValueError(f"export gives shape {out.shape} for input {tuple(shape)}; expected {reference.shape}")
        diffs.append(float(np.abs(out - reference).max()))
    return diffs


def _batch(image: object, input_scale: float = 1.0) -> np.ndarray:
    """A dataset's normalised (3, H, W) image as a (1, 3, H, W) float32 batch, resized by the model's
    ``input_scale`` as seg's inference resizes it."""
    return rescale(torch.as_tensor(np.asarray(image, dtype=np.float32))[None], input_scale).numpy()


class ImageReader:
    """Feeds ``count`` images spread evenly over ``dataset`` to onnxruntime's calibrator, one at a time (the
    ``CalibrationDataReader`` protocol: ``get_next`` until None)."""

    def __init__(self, dataset: Sequence, count: int, input_name: str = "image", input_scale: float = 1.0) -> None:
        count = max(1, min(int(count), len(dataset)))
        self.indices = iter(np.linspace(0, len(dataset) - 1, count).round().astype(int).tolist())
        self.dataset, self.input_name, self.input_scale = dataset, input_name, input_scale

    def get_next(self) -> dict[str, np.ndarray] | None:
        index = next(self.indices, None)
        return None if index is None else {self.input_name: _batch(self.dataset[index][0], self.input_scale)}


def quantize_int8(
    fp32_path: str | Path,
    int8_path: str | Path,
    dataset: Sequence,
    count: int,
    method: str = "minmax",
    input_scale: float = 1.0,
) -> Path:
    """Write a QDQ int8 model (per-channel int8 weights, uint8 activations) calibrated on ``count`` images, resized
    by ``input_scale`` (the size the network sees them at)."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"int8.calibration_method={method!r}; expected one of {list(CALIBRATION_METHODS)}")
    quantization = require("onnxruntime.quantization", "export")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # onnxruntime's recommended pre-pass (shape inference + graph optimisation); symbolic shape inference
        # cannot follow the dynamo export's dynamic Resize sizes, ONNX's own shape inference can
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantization.quantize_static(
            str(prepared),
            str(int8_path),
            ImageReader(dataset, count, input_scale=input_scale),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=getattr(quantization.CalibrationMethod, _ORT_METHOD[method]),
        )
    return Path(int8_path)


def compare_on_split(
    fp32: Runner,
    int8: Runner,
    dataset: Sequence,
    num_classes: int,
    limit: int | None = None,
    console: Console | None = None,
    input_scale: float = 1.0,
) -> dict:
    """mIoU of both models on ``dataset`` (image, mask) pairs and their mean per-image latency, interleaved.

    The images are resized by the model's ``input_scale`` first and the logits scored at the mask's size, as the
    training validation scores them. Each image goes through fp32 then int8 right after, so load on the machine
    slows both alike.
    """
    count = len(dataset) if limit is None else min(int(limit), len(dataset))
    confmats = {k: ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX) for k in ("fp32", "int8")}
    seconds = {"fp32": 0.0, "int8": 0.0}
    for run in (fp32, int8):  # warm-up: the first call allocates
        run(_batch(dataset[0][0], input_scale))
    with progress_bar(console or Console(stderr=True), transient=True) as progress:
        for index in progress.track(range(count), description="int8 vs fp32"):
            image, mask = dataset[index]
            x = _batch(image, input_scale)
            target = torch.as_tensor(np.asarray(mask)).long()[None]
            for name, run in (("fp32", fp32), ("int8", int8)):
                start = time.perf_counter()
                logits = torch.from_numpy(run(x))
                seconds[name] += time.perf_counter() - start
                if logits.shape[-2:] != target.shape[-2:]:
                    logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
                confmats[name].update(class_map(logits), target)
    miou = {k: metrics_from_confmat(m.compute())["mIoU"] for k, m in confmats.items()}
    ms = {k: 1000 * s / count for k, s in seconds.items()}
    return {
        "images": count,
        "input_scale": input_scale,
        "mIoU_fp32": miou["fp32"],
        "mIoU_int8": miou["int8"],
        "mIoU_change": miou["int8"] - miou["fp32"],
        "ms_fp32": ms["fp32"],
        "ms_int8": ms["int8"],
        "speedup": ms["fp32"] / ms["int8"],
    }


def export(cfg: DictConfig, console: Console | None = None) -> dict:
    """Export, check parity (raise ValueError above tolerance), optionally quantize; return the report."""
    console = console or Console()
    if cfg.format not in FORMATS:
        raise ValueError(f"format={cfg.format!r}; expected one of {FORMATS}")
    if cfg.quantize not in (None, "int8"):
        raise ValueError(f"quantize={cfg.quantize!r}; expected null or int8")
    if cfg.quantize and cfg.format != "onnx":
        raise ValueError("quantize=int8 produces an ONNX model: use it with format=onnx")
    out_dir = Path(cfg.output if cfg.get("output") else cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_model(cfg.ckpt_path, cfg.paths.output_dir, channels_last=False)
    net = copy.deepcopy(loaded.net).float().eval()
    bands = len(loaded.net.input_mean)  # 3, or the run's model.net.in_channels

    path = out_dir / {"onnx": "model.onnx", "export": "model.pt2", "torchscript": "model.pt"}[cfg.format]
    with console.status(f"exporting {cfg.format} to {path}"):
        if cfg.format == "onnx":
            export_onnx(net, path, cfg.opset, bands)
            run = onnx_runner(path)
        elif cfg.format == "export":
            export_program(net, path, bands)
            run = program_runner(path)
        else:
            export_torchscript(net, path, bands)
            run = torchscript_runner(path)
    shapes = [(int(s[0]), bands, *(int(v) for v in s[2:])) for s in cfg.check_shapes]
    diffs = max_abs_diffs(net, run, shapes)
    # the exported file is the network alone: a model trained on downscaled frames wants them downscaled first
    input_scale = run_inference_defaults(loaded.run_cfg)["input_scale"]
    report = {
        "ckpt_path": str(cfg.ckpt_path),
        "format": cfg.format,
        "file": str(path),
        "tolerance": cfg.tolerance,
        "input_scale": input_scale,
        "max_abs_diff": {"x".join(map(str, s)): d for s, d in zip(shapes, diffs, strict=True)},
    }
    if input_scale != 1.0:
        console.print(
            f"the network was trained on frames resized by {input_scale:g}: resize inputs by input_scale "
            "first and the logits back to the frame (export.json records it)",
            markup=False,
        )
    for shape, diff in report["max_abs_diff"].items():
        console.print(f"{cfg.format} vs PyTorch, input {shape}: max abs logit difference {diff:.3g}")
    if cfg.quantize:
        report["int8"] = _quantize(cfg, loaded, path, out_dir, console, input_scale)
    write_json_atomic(out_dir / "export.json", report)
    worst = max(diffs)
    if worst > cfg.tolerance:
        raise ValueError(f"{path}: max abs difference {worst:.3g} to PyTorch exceeds tolerance={cfg.tolerance}")
    console.print(f"wrote {path} (parity within {cfg.tolerance})", markup=False, soft_wrap=True)
    return report


def _quantize(
    cfg: DictConfig, loaded: LoadedModel, fp32_path: Path, out_dir: Path, console: Console, input_scale: float
) -> dict:
    """Write model.int8.onnx calibrated on training images; score both ONNX models on the val split; both at the
    network's ``input_scale``, the size it was trained at."""
    datamodule = instantiate(data_config(cfg, loaded))
    # calibrate on training images as the network sees them at test time: normalised, not augmented
    datamodule.train_transform = datamodule.val_transform
    datamodule.prepare_data()
    datamodule.setup("fit")
    check_num_classes(loaded, type(datamodule.val_set).__name__, datamodule.val_set.num_classes)
    q = cfg.int8
    int8_path = out_dir / "model.int8.onnx"
    with console.status(f"calibrating on {q.calibration_images} training images and quantizing to {int8_path}"):
        quantize_int8(
            fp32_path, int8_path, datamodule.train_set, q.calibration_images, q.calibration_method, input_scale
        )
    result = compare_on_split(
        onnx_runner(fp32_path, q.threads),
        onnx_runner(int8_path, q.threads),
        datamodule.val_set,
        loaded.num_classes,
        limit=q.val_images,
        console=console,
        input_scale=input_scale,
    )
    result.update(file=str(int8_path), calibration_images=q.calibration_images, method=q.calibration_method)
    console.print(
        f"int8 vs fp32 ONNX on {result['images']} {datamodule.val_split} images: mIoU {result['mIoU_int8']:.4f} vs "
        f"{result['mIoU_fp32']:.4f} ({result['mIoU_change']:+.4f}); {result['ms_int8']:.1f} vs {result['ms_fp32']:.1f} "
        f"ms per image, speed-up x{result['speedup']:.2f}",
        markup=False,
        soft_wrap=True,
    )
    return result


main = entry_point("export", export)

if __name__ == "__main__":
    main()
