"""The benchmark scripts run end to end at tiny sizes; their figures live in benchmarks/RESULTS.md, nothing is timed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import SHARED_DATA, fake_run

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def run(*args: str, timeout: int = 300) -> str:
    # scripts run with this interpreter (gpu.sh reads PYTHON), whatever environment seg is installed in
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHON": sys.executable}
    res = subprocess.run([*args], capture_output=True, text=True, timeout=timeout, cwd=BENCH.parent, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res.stdout


def bench(script: str, *args: str) -> str:
    return run(sys.executable, str(BENCH / script), *args)


def test_gpu_script_parses_and_its_python_side_runs_on_the_cpu():
    run("bash", "-n", str(BENCH / "gpu.sh"))
    out = bench(
        "gpu_throughput.py",
        "--device",
        "cpu",
        "--backbones",
        "resnet18",
        "--output-strides",
        "16",
        "--crop",
        "33",
        "--batch",
        "2",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--compile",
        "off",
    )
    assert "resnet18 OS 16 compile=False" in out and "images/s" in out


def test_training_precision_benchmark_times_a_recipe_in_both_precisions():
    out = bench("training_precision.py", "--recipes", "quickstart", "--rounds", "1", "--max-batch", "2")
    assert "| recipe | batch x crop | fp32 s/step | bf16 s/step | fp32 / bf16 |" in out
    assert "| quickstart | 2 x 96x96 |" in out and "machine: " in out


def test_step_time_benchmark_sizes_equal_time_schedules():
    """The quickstart at output stride 32 and 8: the first gets the budget's 100 steps, the other the steps its own
    step time fits into the same time (checked against the printed times, not against a timing order)."""
    configs = ["model.net.output_stride=32", "model.net.output_stride=8"]
    out = bench("step_time.py", *configs, "--rounds", "1", "--budget-steps", "100")
    rows = [line for line in out.splitlines() if line.startswith("| `model.net.output_stride=")]
    (os32, os8) = ([cell.strip() for cell in row.split("|")] for row in rows)
    assert os32[-2] == "100" and os32[3] == os8[3], out  # both in the machine's default precision
    assert abs(int(os8[-2]) - 100 * float(os32[-3]) / float(os8[-3])) <= 1, out
    assert "budget: 100 steps of the first configuration" in out


def test_sliding_window_benchmark_asserts_identical_outputs():
    out = bench(
        "sliding_window.py",
        "--height",
        "48",
        "--width",
        "96",
        "--windows",
        "32",
        "--batch",
        "4",
        "--rounds",
        "1",
        "--precisions",
        "32",
    )
    assert "window 32x32 stride 22" in out and "max abs logit difference" in out


def test_confmat_benchmark_checks_the_accumulators_agree():
    out = bench("confmat.py", "--batch", "2", "--size", "64", "--rounds", "1")
    assert "the three confusion matrices are equal" in out and "% of the validation step" in out


def test_vs_smp_benchmark_runs_both_libraries_on_a_shared_architecture():
    pytest.importorskip("segmentation_models_pytorch", reason="the bench extra (pip install 'seg[bench]')")
    out = bench(
        "vs_smp.py",
        "--archs",
        "dlv3_lite0_os16",
        "--sizes",
        "64x96",
        "--train-batch",
        "2",
        "--infer-batches",
        "1",
        "--formats",
        "cl",
        "--rounds",
        "1",
        "--warmup",
        "0",
    )
    assert "## dlv3_lite0_os16: parameters seg" in out and "smp" in out
    assert "| dlv3_lite0_os16 | train | 64x96 | 2 | cl |" in out
    assert "| dlv3_lite0_os16 | infer | 64x96 | 1 | cl |" in out


@pytest.mark.slow
def test_gpu_script_cpu_check_including_ddp():
    out = run("bash", str(BENCH / "gpu.sh"), "--cpu-check")
    assert "x 2 process(es)" in out and "replicas differ by 0.0e+00" in out


@pytest.mark.slow
def test_lightning_overhead_benchmark_runs():
    out = bench("lightning_overhead.py", "--steps", "5", "--fits", "1", "--skip", "1")
    assert out.count("Lightning / plain loop") == 4


@pytest.mark.slow
def test_torchvision_and_utilisation_benchmarks_run():
    out = bench("vs_torchvision.py", "--size", "64", "--rounds", "1", "--variants", "tv_fp32", "seg_fp32")
    assert "seg_fp32 / tv_fp32" in out
    out = bench("utilisation.py", "--size", "64", "--batch", "2", "--rounds", "1", "--fp32-n", "256", "--bf16-n", "256")
    assert out.count("fraction") == 2 and "convolutions alone" in out


@pytest.mark.slow
def test_scale_benchmark_runs():
    out = bench("scale.py", "--train", "16", "--val", "4", "--epochs", "1", "--factors", "1", "2")
    assert "line: epoch time" in out


def test_sample_time_benchmark_prices_an_augmentation_per_batch(tmp_path):
    """The embedded data with and without brightness-contrast jitter: one row each, the first the reference, the
    second's extra per batch of 8 what its printed per-sample times say."""
    data = f"paths.data_dir={tmp_path} data.prepare.num_train=8 data.prepare.num_val=2"
    jitter = "+data.train_transform.color_jitter=[0.3,0.3,0,0]"
    out = bench("sample_time.py", data, f"{data} {jitter}", "--samples", "4", "--rounds", "1")
    rows = [[c.strip() for c in line.split("|")] for line in out.splitlines() if line.startswith("| `paths.")]
    assert [row[1].endswith("color_jitter=[0.3,0.3,0,0]`") for row in rows] == [False, True], out
    (plain, jittered) = ([float(row[2]), float(row[3])] for row in rows)
    assert plain[1] == 0.0 and plain[0] > 0, out
    assert abs(jittered[1] - 8 * (jittered[0] - plain[0])) <= 0.15, out  # printed to 0.01 ms and 0.1 ms
    assert "one thread" in out


@pytest.mark.slow
def test_data_pipeline_benchmark_runs():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data {SHARED_DATA} not present")
    out = bench("data_pipeline.py", "--samples", "8", "--model-steps", "0")
    assert "one worker, in process" in out and "workers" in out


def test_malloc_benchmark_runs_both_variants_in_their_own_processes():
    out = bench("malloc.py", "--size", "48", "64", "--batch", "2", "--steps", "1", "--rounds", "1")
    assert "| glibc default |" in out and "| keep_freed_memory |" in out and "speed-up:" in out


def test_camvid_speed_benchmark_times_each_runtime():
    out = bench(
        "camvid_speed.py",
        "--experiment",
        "camvid_imagenet_cpu",
        "--size",
        "64",
        "96",
        "--batch",
        "2",
        "--rounds",
        "2",
        "--bf16",
    )
    assert "untrained camvid_imagenet_cpu: input_scale 1.0, frames 64x96" in out
    assert "| eager fp32 NCHW |" in out and "| eager fp32 channels_last |" in out
    assert "| eager fp32 channels_last, BatchNorm folded |" in out and "folded 55 BatchNorms" in out
    assert "| eager bf16 autocast channels_last, BatchNorm folded |" in out


def test_camvid_speed_scores_each_runtime_on_real_frames(cfg_train, tmp_path):
    """--score: every runtime's dataset-level mIoU on a run's split; fp32 runtimes agree to four digits (the same
    arithmetic, reordered), bf16 within a bf16 margin."""
    ckpt = fake_run(cfg_train, tmp_path / "run")
    args = ["--ckpt", str(ckpt), "--size", "64", "96", "--batch", "2", "--rounds", "1", "--bf16", "--score", "val"]
    out = bench("camvid_speed.py", *args)
    header = "| runtime | ms / frame (batch 1) | frames / s (batch 1) | frames / s (batch 2) | mIoU val (5 frames) |"
    assert header in out, out[-1500:]
    rows = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in out.splitlines() if "| eager" in line}
    scores = {name: float(value) for name, value in rows.items()}
    fp32 = {v for k, v in scores.items() if "fp32" in k}
    assert len(scores) == 4 and len(fp32) == 1 and 0 < fp32.pop() < 1, out[-1500:]
    bf16 = scores["eager bf16 autocast channels_last, BatchNorm folded"]
    assert abs(bf16 - scores["eager fp32 NCHW"]) < 0.05


def test_camvid_speed_score_needs_a_checkpoint():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "camvid_speed.py"), "--score", "val"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "--score needs --ckpt" in proc.stderr


@pytest.mark.slow
def test_camvid_speed_int8_pt2e_runs_and_matches_eager_mostly():
    pytest.importorskip("torchao", reason="the int8 PT2E runtime needs torchao (pip install -e .[bench])")
    out = bench("camvid_speed.py", "--size", "64", "96", "--batch", "2", "--rounds", "1", "--int8", "--calib", "2")
    assert "| int8 PT2E (X86InductorQuantizer), compiled |" in out and "calibrated on 2 frames" in out


@pytest.mark.slow
def test_camvid_speed_compiled_runtimes_compile_and_match_eager():
    out = bench("camvid_speed.py", "--size", "64", "96", "--batch", "2", "--rounds", "2", "--compile")
    assert "| torch.compile fp32 (Inductor, freezing), BatchNorm folded |" in out
    assert "class map differs from eager fp32 on 0.000% of the test frame's pixels" in out


def test_camvid_speed_profile_breaks_a_frame_down():
    out = bench("camvid_speed.py", "--profile", "--size", "64", "96", "--rounds", "1")
    parts = ("| encoder (backbone) |", "| head (logits at the feature size) |", "| upsample to the frame + argmax |")
    assert all(part in out for part in parts), out[-2000:]
    assert "Self CPU" in out


def test_large_image_benchmark_runs_both_paths_and_cleans_up(tmp_path):
    out = bench("large_image.py", "--sides", "400", "--folder", str(tmp_path / "li"))
    rows = [line for line in out.splitlines() if line.startswith("| 400 |")]
    assert [row.split("|")[3].strip() for row in rows] == ["slide", "windows"]
    assert all(float(row.split("|")[5]) > 0 for row in rows)  # a peak memory was measured
    assert not (tmp_path / "li").exists()
