"""Int8 post-training static quantization of an ONNX export (onnxruntime) and its accuracy / speed check."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from rich.console import Console
from rich.progress import Progress
from torchmetrics.classification import MulticlassConfusionMatrix

from seg.data.voc import IGNORE_INDEX
from seg.metrics import metrics_from_confmat

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}  # fmt: skip
Runner = Callable[[np.ndarray], np.ndarray]


def _image(dataset: Sequence, index: int) -> np.ndarray:
    """Sample ``index`` of a dataset with a normalising transform as a (1, 3, H, W) float32 batch."""
    image = dataset[index][0]
    return np.asarray(image, dtype=np.float32)[None]


class ImageReader(CalibrationDataReader):
    """Feeds ``count`` images spread evenly over ``dataset`` to onnxruntime's calibrator, one at a time."""

    def __init__(self, dataset: Sequence, count: int, input_name: str = "image") -> None:
        count = max(1, min(int(count), len(dataset)))
        self.indices = iter(np.linspace(0, len(dataset) - 1, count).round().astype(int).tolist())
        self.dataset, self.input_name = dataset, input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        index = next(self.indices, None)
        return None if index is None else {self.input_name: _image(self.dataset, index)}


def quantize_int8(
    fp32_path: str | Path, int8_path: str | Path, dataset: Sequence, count: int, method: str = "minmax"
) -> Path:
    """Write a QDQ int8 model (per-channel int8 weights, uint8 activations) calibrated on ``count`` images."""
    if method not in METHODS:
        raise ValueError(f"int8.calibration_method={method!r}; expected one of {sorted(METHODS)}")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # onnxruntime's recommended pre-pass (shape inference + graph optimisation); symbolic shape inference
        # cannot follow the dynamo export's dynamic Resize sizes, ONNX's own shape inference can
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8_path),
            ImageReader(dataset, count),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=METHODS[method],
        )
    return Path(int8_path)


def compare_on_split(
    fp32: Runner,
    int8: Runner,
    dataset: Sequence,
    num_classes: int,
    limit: int | None = None,
    console: Console | None = None,
) -> dict:
    """mIoU of both models on ``dataset`` (image, mask) pairs and their mean per-image latency, interleaved.

    Each image goes through fp32 then int8 right after, so load on the machine slows both alike.
    """
    count = len(dataset) if limit is None else min(int(limit), len(dataset))
    confmats = {k: MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX) for k in ("fp32", "int8")}
    seconds = {"fp32": 0.0, "int8": 0.0}
    for run in (fp32, int8):  # warm-up: the first call allocates
        run(_image(dataset, 0))
    with Progress(console=console or Console(stderr=True), transient=True) as progress:
        for index in progress.track(range(count), description="int8 vs fp32"):
            image, mask = dataset[index]
            x = np.asarray(image, dtype=np.float32)[None]
            target = torch.as_tensor(np.asarray(mask)).long()[None]
            for name, run in (("fp32", fp32), ("int8", int8)):
                start = time.perf_counter()
                logits = run(x)
                seconds[name] += time.perf_counter() - start
                confmats[name].update(torch.from_numpy(logits).argmax(dim=1), target)
    miou = {k: metrics_from_confmat(m.compute())["mIoU"] for k, m in confmats.items()}
    ms = {k: 1000 * s / count for k, s in seconds.items()}
    return {
        "images": count,
        "mIoU_fp32": miou["fp32"],
        "mIoU_int8": miou["int8"],
        "mIoU_change": miou["int8"] - miou["fp32"],
        "ms_fp32": ms["fp32"],
        "ms_int8": ms["int8"],
        "speedup": ms["fp32"] / ms["int8"],
    }
