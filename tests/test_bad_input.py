"""Bad input through the real command lines: each case exits 1 with one ``error: ...`` line naming the file, key or
value and what was expected, no traceback (the full one with HYDRA_FULL_ERROR=1), and no checkpoint or metrics.

The cases run as ``python -m seg.train ...`` / ``python -m seg.evaluate ...``: one driver process imports torch and
seg once, then forks a child per case that executes the module as ``__main__`` with the case's argv (what
``python -m`` does after its imports), its stdout and stderr in files. That keeps ~18 command lines to seconds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seg.data.io import write_index_mask
from seg.data.synthetic import SyntheticShapes
from tests.helpers import fake_run
from tests.test_reliability import ROOT, malicious_checkpoint, tiny_args, tiny_cfg

DRIVER = r"""
import json, os, runpy, sys, traceback
import seg.train, seg.evaluate  # imported once; every child starts from here
cases, out = json.loads(open(sys.argv[1]).read()), sys.argv[2]
results, running = {}, {}

def child(case):
    for fd, name in ((1, "stdout"), (2, "stderr")):
        os.dup2(os.open(os.path.join(out, case["name"] + "." + name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    os.environ.update(case.get("env", {}))
    sys.argv = [case["module"], *case["args"]]
    sys.modules.pop(case["module"], None)  # executed afresh as __main__, as python -m does
    code = 0
    try:
        runpy.run_module(case["module"], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()  # what the interpreter does with an uncaught exception
        code = 1
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(code)

pending = list(cases)
while pending or running:
    while pending and len(running) < 2:  # two at a time: one per core
        case = pending.pop(0)
        pid = os.fork()
        if pid == 0:
            child(case)
        running[pid] = case["name"]
    pid, status = os.wait()
    results[running.pop(pid)] = os.waitstatus_to_exitcode(status)
print(json.dumps(results))
"""


def _write_mask(path: Path, mask: np.ndarray) -> None:
    write_index_mask(path, mask, SyntheticShapes.palette)


def damage(root: Path, case: str) -> None:
    """Break one thing in a copy of the tiny synthetic tree (train_00003 is listed in the train split)."""
    image, mask = root / "JPEGImages" / "train_00003.jpg", root / "SegmentationClass" / "train_00003.png"
    if case == "corrupt_jpeg":
        image.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    elif case == "truncated_png":
        mask.write_bytes(mask.read_bytes()[:-20])  # the end of the pixel data and the closing IEND chunk
    elif case == "rgb_mask":
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(mask)
    elif case == "label_out_of_range":
        _write_mask(mask, np.full((64, 64), 7, np.uint8))  # 5 classes: 0..4 and 255
    elif case == "size_mismatch":
        _write_mask(mask, np.zeros((48, 64), np.uint8))
    elif case == "missing_file":
        image.unlink()
    elif case == "empty_split":
        (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n")


# name: (what is damaged or overridden, expected text of the error line)
CASES = {
    "corrupt_jpeg": ("data", "train_00003.jpg: cannot decode image (corrupt or not an image file)"),
    "truncated_png": ("data", "train_00003.png: truncated PNG (no IEND chunk at the end)"),
    "rgb_mask": ("data", "train_00003.png: mask is in mode RGB; expected an index mask"),
    "label_out_of_range": ("data", "train_00003.png: label values [7] outside 0..4 and 255 (void)"),
    "size_mismatch": ("data", "train_00003.png: mask size 64x48 differs from image"),
    "missing_file": ("data", "train_00003.jpg is listed in split 'train' but missing; expected JPEGImages/<id>.jpg"),
    "empty_split": ("data", "val.txt is empty"),
    "missing_root": ("args", "dataset root {tmp}/nowhere does not exist; expected JPEGImages/<id>.jpg"),
    "output_stride_12": ("args", "model.net: output_stride must be one of (8, 16, 32), got 12"),
    "unknown_backbone": (
        "args",
        "model.net: unknown backbone 'resnet7': not one of seg's ['resnet18', 'resnet34', "
        "'resnet50', 'resnet101', 'vgg16', 'vgg16_bn'] nor a timm model; did you mean resnet50",
    ),
    "unknown_override_key": (
        "args",
        "Could not override 'model.net.dilation'. To append to your config use "
        "+model.net.dilation=2 (Key 'dilation' is not in struct)",
    ),
    "missing_checkpoint": ("args", "checkpoint not found: {tmp}/missing.ckpt"),
    "dataset_option_in_its_old_place": (
        "args",
        "data.dataset.label_format: dataset options sit at the data. level now, next to data.root: "
        "data.label_format='labelTrainIds'",
    ),
    "unquoted_path_with_space": (
        "args",
        "cannot parse the override 'set': the shell split a value with a space into words; quote the whole "
        'override: "data.root={tmp}/my set"',
    ),
    "path_with_grammar_characters": (
        "args",
        "cannot parse the override 'data.root={tmp}/my set (1)': quote the value for Hydra, inside the shell's "
        "quotes: \"data.root='{tmp}/my set (1)'\"",
    ),
    "other_class_count": ("args", "last.ckpt: its run trained for 5 classes, this run for 21: a resume continues"),
    "unsafe_checkpoint": ("args", "evil.ckpt: refused by torch.load(weights_only=True): it pickles a"),
    "evaluate_missing_checkpoint": ("args", "checkpoint not found: {tmp}/missing.ckpt"),
    "evaluate_other_class_count": ("args", "last.ckpt predicts 5 classes but VOCSegmentation has 21"),
    "evaluate_unsafe_checkpoint": ("args", "evil.ckpt: refused by torch.load(weights_only=True): it pickles a"),
}


def case_args(name: str, tmp: Path, data: Path, run_ckpt: Path) -> tuple[str, list[str]]:
    """(module, argv) of a case; the run writes into ``tmp/<name>`` (checked to stay free of outputs)."""
    out = [f"hydra.run.dir={tmp / name}"]
    train = [*tiny_args(data), "data.prepare=null", "trainer.max_epochs=1", *out]
    voc = [*tiny_args(data, synthetic=False), "data=voc", "trainer.max_epochs=1", *out]  # the tiny tree as VOC
    evil = tmp / "evil.ckpt"
    return {
        "missing_root": ("seg.train", [*voc, f"data.root={tmp / 'nowhere'}"]),
        "output_stride_12": ("seg.train", [*train, "model.net.output_stride=12"]),
        "unknown_backbone": ("seg.train", [*train, "model.net.backbone=resnet7"]),
        "unknown_override_key": ("seg.train", [*train, "model.net.dilation=2"]),
        "missing_checkpoint": ("seg.train", [*train, f"ckpt_path={tmp / 'missing.ckpt'}"]),
        "dataset_option_in_its_old_place": (
            "seg.train",
            [*tiny_args(data, synthetic=False), "data=cityscapes", *out, "+data.dataset.label_format=labelTrainIds"],
        ),
        "unquoted_path_with_space": ("seg.train", [*train, f"data.root={tmp}/my", "set"]),  # data.root=.../my set
        "path_with_grammar_characters": ("seg.train", [*train, f"data.root={tmp}/my set (1)"]),
        "other_class_count": ("seg.train", [*voc, f"ckpt_path={run_ckpt}"]),
        "unsafe_checkpoint": ("seg.train", [*train, f"ckpt_path={evil}"]),
        "evaluate_missing_checkpoint": ("seg.evaluate", [f"ckpt_path={tmp / 'missing.ckpt'}", *out]),
        "evaluate_other_class_count": (
            "seg.evaluate",
            [f"ckpt_path={run_ckpt}", "data=voc", f"data.root={data}", "trainer.enable_progress_bar=false", *out],
        ),
        "evaluate_unsafe_checkpoint": ("seg.evaluate", [f"ckpt_path={evil}", *out]),
    }.get(name, ("seg.train", [*train, f"data.root={tmp / name / 'data'}"]))


def run_cases(cases: list[dict], tmp: Path) -> dict[str, tuple[int, str]]:
    """Run the cases through the forking driver; (exit status, stderr) per case."""
    spec, logs = tmp / "cases.json", tmp / "logs"
    logs.mkdir()
    spec.write_text(json.dumps(cases))
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(spec), str(logs)], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    codes = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: (code, (logs / f"{name}.stderr").read_text()) for name, code in codes.items()}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, tiny_data_dir):
    """Every case run once (module scope: the driver's start-up is paid once)."""
    tmp = tmp_path_factory.mktemp("bad_input")
    run_ckpt = fake_run(tiny_cfg(tiny_data_dir, tmp / "run5"), tmp / "run5")  # a 5-class run folder
    marker = tmp / "pwned"
    malicious_checkpoint(tmp / "evil.ckpt", marker)
    cases = []
    for name, (kind, _) in CASES.items():
        if kind == "data":
            shutil.copytree(tiny_data_dir, tmp / name / "data")
            damage(tmp / name / "data", name)
        module, args = case_args(name, tmp, tiny_data_dir, run_ckpt)
        cases.append({"name": name, "module": module, "args": args})
    full_error = {
        "name": "full_error",
        "module": "seg.train",
        "env": {"HYDRA_FULL_ERROR": "1"},
        "args": case_args("missing_checkpoint", tmp, tiny_data_dir, run_ckpt)[1],
    }
    results = run_cases([*cases, full_error], tmp)
    return tmp, results, marker


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_with_one_clear_line(matrix, name):
    tmp, results, _ = matrix
    code, stderr = results[name]
    assert code == 1, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], stderr[-2000:]
    assert CASES[name][1].format(tmp=tmp) in errors[0], errors[0]
    assert "Traceback" not in stderr
    outputs = [p.name for p in (tmp / name).rglob("*") if p.suffix == ".ckpt" or p.name == "metrics.json"]
    assert outputs == [], outputs


def test_hydra_full_error_shows_the_traceback(matrix):
    _, results, _ = matrix
    code, stderr = results["full_error"]
    assert code == 1 and "Traceback (most recent call last)" in stderr and "checkpoint not found" in stderr


def test_unsafe_checkpoints_never_run_their_payload(matrix):
    _, results, marker = matrix
    assert results["unsafe_checkpoint"][0] == results["evaluate_unsafe_checkpoint"][0] == 1
    assert not marker.exists()  # the payload does run under an unrestricted torch.load: tests/test_reliability.py
