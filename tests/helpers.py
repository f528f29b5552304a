"""Test helpers, imported as ``tests.helpers`` (pyproject puts the repository root on pytest's path): the compose
API as the entry points use it, the tiny synthetic-data settings, ../shared/data lookup and fake run folders."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seg.utils.compose import CONF_DIR, compose_config

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY = {"num_train": 24, "num_val": 5, "size": 64, "max_objects": 2, "seed": 0}

compose_cfg = compose_config  # the name the tests use
__all__ = ["CONF_DIR", "SHARED_DATA", "TINY", "compose_cfg", "fake_run", "labelled_val_pixels", "needs_shared"]


def needs_shared(sub: str) -> Path:
    """Path of a ../shared/data folder, or skip the test with the reason when it is absent."""
    path = SHARED_DATA / sub
    if not path.is_dir():
        pytest.skip(f"real data {path} not present (fresh clone without ../shared)")
    return path


def labelled_val_pixels(data_dir: Path) -> int:
    """Non-ignored label pixels of the tiny tree's val split: what a validation that scores each image once counts."""
    from seg.data.synthetic import SyntheticShapes

    val = SyntheticShapes(data_dir, "val")
    assert len(val) % 2 == 1  # an odd count on 2 processes: a padding sampler would score one image twice
    return sum(int((val.load(i)[1] != 255).sum()) for i in range(len(val)))


def fake_run(cfg: DictConfig, run_dir: Path, seed: int = 0) -> Path:
    """Write ``run_dir/.hydra/config.yaml`` and ``run_dir/checkpoints/last.ckpt``; return the checkpoint path."""
    torch.manual_seed(seed)
    module = instantiate(cfg.model)
    for m in module.net.modules():  # non-trivial BatchNorm statistics, so that loading them matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    return ckpt


class LoopbackServer:
    """Serves ``files`` (URL path -> bytes) on 127.0.0.1 and records each request (with its Range header);
    ``mode`` "corrupt" flips a byte of every body, "drop" closes the connection half-way; ``ranges`` answers a
    Range request with the rest (206). Every answer carries the headers of a Hugging Face hub file too."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.mode = "ok"
        self.ranges = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                asked = self.headers.get("Range")
                server.requests.append(f"{self.command} {self.path}" + (f" {asked}" if asked else ""))
                data = server.files.get(self.path.split("?")[0])
                if data is None:
                    self.send_error(404)
                    return
                sha = hashlib.sha256(data).hexdigest()
                start = int(asked.split("=")[1].split("-")[0]) if asked and server.ranges else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("ETag", f'"{sha}"')
                self.send_header("X-Repo-Commit", "0" * 40)
                self.end_headers()
                if not body:
                    return
                if server.mode == "corrupt":
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                if server.mode == "drop":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(data[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
