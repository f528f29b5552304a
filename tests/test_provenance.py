"""provenance.json's code record: the commit and the changed files of a checkout, the version of an install."""

from __future__ import annotations

import json
import subprocess

import pytest

import seg.runs.provenance as provenance


def git(repo, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git checkout holding seg/__init__.py, as provenance sees the source tree."""
    repo = tmp_path / "repo"
    (repo / "seg").mkdir(parents=True)
    (repo / "seg" / "__init__.py").write_text("x = 1\n")
    (repo / "README.md").write_text("seg\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    monkeypatch.setattr(provenance, "_SOURCE", repo)
    return repo


def test_a_clean_checkout_records_its_commit(checkout):
    record = provenance.code_record()
    assert record["commit"] == git(checkout, "rev-parse", "HEAD") and record["dirty"] is False
    assert "changed_files" not in record and record["source"] == str(checkout)


def test_a_dirty_checkout_names_the_changed_files(checkout):
    (checkout / "seg" / "__init__.py").write_text("x = 2\n")  # " M seg/__init__.py": a leading space
    (checkout / "README.md").unlink()
    (checkout / "notes.txt").write_text("untracked files do not make a tree dirty\n")
    record = provenance.code_record()
    assert record["dirty"] is True and record["changed_files"] == ["README.md", "seg/__init__.py"]


def test_outside_a_checkout_only_the_installed_version(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "_SOURCE", tmp_path)  # site-packages: no .git
    record = provenance.code_record()
    assert record == {"seg_version": provenance._version("seg"), "source": "installed", "commit": None, "dirty": None}


def test_the_record_is_completed_or_marked_failed_at_the_end(tmp_path):
    with provenance.provenance(tmp_path / "ok", "evaluate", precision="32-true") as record:
        started = json.loads(record.path.read_text())
        assert started["status"] == "running" and started["ended"] is None and started["precision"] == "32-true"
        record.update(precision="bf16-mixed")
    done = json.loads((tmp_path / "ok" / "provenance.json").read_text())
    assert done["status"] == "completed" and done["precision"] == "bf16-mixed" and done["ended"] >= done["started"]
    with pytest.raises(KeyError), provenance.provenance(tmp_path / "bad", "train"):
        raise KeyError("data.root")
    failed = json.loads((tmp_path / "bad" / "provenance.json").read_text())
    assert failed["status"] == "failed" and failed["error"] == "KeyError: 'data.root'"
    with provenance.provenance(tmp_path / "rank1", "train", write=False):
        pass
    assert not (tmp_path / "rank1").exists()  # ranks other than 0 write nothing
