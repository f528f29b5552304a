"""Packaging: console scripts, configs inside the package, optional extras that fail with one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from seg.utils.errors import one_line, plugin_hint
from seg.utils.extras import MissingExtraError, require
from tests.helpers import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_configs_are_the_top_level_conf_folder():
    assert Path(CONF_DIR) == ROOT / "conf" and (Path(CONF_DIR) / "train.yaml").is_file()
    assert not (ROOT / "seg" / "conf").exists()  # one copy


def test_every_package_and_config_folder_is_installed():
    """pyproject lists seg's packages and conf/'s folders (installed as seg.conf.*) by hand: it must match the disk."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"seg.conf": "conf"}
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "seg").rglob("__init__.py")}
    on_disk |= {
        ".".join(("seg", *d.relative_to(ROOT).parts))
        for d in [ROOT / "conf", *(ROOT / "conf").rglob("*")]
        if d.is_dir() and any(d.glob("*.yaml"))
    }
    assert sorted(setuptools["packages"]) == sorted(on_disk)


@pytest.mark.parametrize("script", sorted(PYPROJECT["project"]["scripts"]))
def test_every_console_script_points_at_a_main(script):
    module, _, attr = PYPROJECT["project"]["scripts"][script].partition(":")
    assert callable(getattr(__import__(module, fromlist=[attr]), attr))


def test_a_missing_extra_names_the_pip_command():
    with pytest.raises(MissingExtraError, match=r"no_such_pkg is not installed: pip install 'seg\[export\]'"):
        require("no_such_pkg", "export")
    assert require("json", "none").dumps([]) == "[]"


def test_a_missing_hydra_plugin_names_the_extra():
    message = (
        "In 'hparams_search/optuna': Could not find 'hydra/sweeper/optuna'\n\nAvailable options in 'hydra/sweeper'"
    )
    assert plugin_hint(message) == " (pip install 'seg[sweep]')"
    assert plugin_hint("Could not find 'hydra/launcher/submitit_slurm'") == " (pip install 'seg[slurm]')"
    assert plugin_hint("Could not find 'model/nope'") == ""
    assert one_line(ValueError("a\nb")) == "a b"


def test_console_script_runs_and_reports_bad_input_in_one_line(tmp_path):
    script = Path(sys.executable).parent / "seg-train"
    if not script.exists():
        pytest.skip(f"{script} not installed (pip install -e . creates it)")
    proc = subprocess.run([str(script), "model=nope"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "model" in proc.stderr


@pytest.mark.slow
def test_a_non_editable_install_trains_from_another_directory(tmp_path):
    """``pip install . --no-deps --target DIR`` (a wheel, not the source tree), then from an empty folder: the
    composed config comes from the installed package and a short training run writes its run folder."""
    target, source = tmp_path / "site", tmp_path / "source"
    # a copy of the project: building in place would leave build/ in the checkout
    top = {".venv", ".git", "outputs", "build", "data", "notebooks", "benchmarks", "tests"}  # seg/data stays

    def skip(folder: str, names: list[str]) -> set[str]:
        return {
            n for n in names if (Path(folder) == ROOT and n in top) or n == "__pycache__" or n.endswith(".egg-info")
        }

    shutil.copytree(ROOT, source, ignore=skip)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        timeout=600,
    )
    assert (target / "seg" / "conf" / "model" / "net" / "deeplabv3.yaml").is_file()
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    shown = subprocess.run(
        [sys.executable, "-m", "seg.train", "--cfg", "job", "--resolve"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "seg.models.deeplabv3.DeepLabV3" in shown.stdout
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import seg, sys; print(seg.__file__); sys.argv[0] = 'seg-train'; from seg.train import main; main()",
            "data.prepare.num_train=8",
            "data.prepare.num_val=2",
            "data.train_transform.crop_size=64",
            "data.prepare.size=64",
            "data.batch_size=4",
            "data.val_batch_size=2",
            "data.num_workers=0",
            "trainer.max_steps=2",
            "trainer.enable_progress_bar=false",
            "~callbacks.progress_bar",
            f"hydra.run.dir={work / 'run'}",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines()[0].startswith(str(target))
    assert (work / "run" / "metrics.json").is_file() and (work / "run" / ".hydra" / "config.yaml").is_file()
