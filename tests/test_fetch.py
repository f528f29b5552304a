"""Weights fetched on first use, as torchvision and timm do, tested against an HTTP server on 127.0.0.1 that the
test starts (the real fetching code, pointed at it): fetched once and then read from the cache; a corrupted byte
refused naming the file and the expected hash; a connection dropped half-way leaves nothing in the cache; offline
(SEG_OFFLINE or HF_HUB_OFFLINE) no request is made at all."""

from __future__ import annotations

import enum
import hashlib
import io
from pathlib import Path

import pytest
import timm
import torch

from seg.models.backbones import build_backbone
from seg.models.backbones.timm import timm_weights_file
from seg.models.support import weights as weights_module
from seg.models.support.weights import torchvision_weights_file
from seg.utils.download import DownloadError, download, hash_prefix
from tests.helpers import LoopbackServer


@pytest.fixture
def online(monkeypatch, tmp_path):
    """The offline switch lifted (conftest sets it for every test) and empty caches under tmp_path."""
    import huggingface_hub.constants

    monkeypatch.delenv("SEG_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    return tmp_path


def resnet18_file() -> tuple[bytes, dict]:
    torch.manual_seed(0)
    state = build_backbone("resnet18", output_stride=32).state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue(), state


def serve_as_torchvision_enum(server: LoopbackServer, monkeypatch, data: bytes) -> Path:
    """``data`` served under a torch hub file name carrying its hash prefix, as torchvision's enum of resnet18
    (a stand-in enum: the real one points at download.pytorch.org)."""
    name = f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    server.files[f"/models/{name}"] = data

    class Weights(enum.Enum):
        IMAGENET1K_V1 = "v1"

        @property
        def url(self) -> str:
            return f"{server.url}/models/{name}"

    Weights.__name__ = "ResNet18_Weights"
    monkeypatch.setattr(weights_module, "get_model_weights", lambda arch: Weights)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def test_torchvision_weights_are_fetched_once_verified_and_then_read_from_the_cache(server, online, monkeypatch):
    data, state = resnet18_file()
    cached = serve_as_torchvision_enum(server, monkeypatch, data)
    assert torchvision_weights_file("imagenet", "resnet18") == cached and cached.read_bytes() == data
    assert torchvision_weights_file("imagenet", "resnet18") == cached
    assert len(server.requests) == 1  # the second call read the cache
    backbone = build_backbone("resnet18", output_stride=32, weights="imagenet")
    assert torch.equal(backbone.conv1.weight, state["conv1.weight"])  # loaded strictly from the fetched file


def test_a_corrupted_byte_is_refused_naming_the_file_and_the_expected_hash(server, online, monkeypatch):
    data, _ = resnet18_file()
    cached = serve_as_torchvision_enum(server, monkeypatch, data)
    server.mode = "corrupt"
    with pytest.raises(DownloadError) as caught:
        torchvision_weights_file("imagenet", "resnet18")
    message = str(caught.value)
    assert cached.name in message and f"expected {hash_prefix(cached.name)}" in message and "was not written" in message
    assert not cached.parent.exists() or not any(cached.parent.iterdir())  # nothing in the cache, no .part left


def test_a_connection_dropped_half_way_leaves_nothing_in_the_cache_and_says_so(server, online, monkeypatch):
    data, _ = resnet18_file()
    cached = serve_as_torchvision_enum(server, monkeypatch, data)
    server.mode = "drop"
    with pytest.raises(DownloadError, match=r"nothing was written to .*resnet18-"):
        torchvision_weights_file("imagenet", "resnet18")
    assert not any(cached.parent.iterdir())
    server.mode = "ok"  # the next try fetches it whole
    assert torchvision_weights_file("imagenet", "resnet18").read_bytes() == data


@pytest.mark.parametrize("switch", ["SEG_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_no_request_is_made_and_the_error_names_path_and_url(server, online, monkeypatch, switch):
    data, _ = resnet18_file()
    cached = serve_as_torchvision_enum(server, monkeypatch, data)
    monkeypatch.setenv(switch, "1")
    with pytest.raises(FileNotFoundError) as caught:
        torchvision_weights_file("imagenet", "resnet18")
    assert str(cached) in str(caught.value) and f"{server.url}/models/{cached.name}" in str(caught.value)
    assert f"{switch}=1 is set" in str(caught.value)
    with pytest.raises(FileNotFoundError, match=f"no ImageNet weights for regnetx_002 .*{switch}=1 is set"):
        timm_weights_file("regnetx_002", "imagenet")
    with pytest.raises(DownloadError, match=f"{switch}=1 is set"):
        download(f"{server.url}/models/{cached.name}", online / "x.pth")
    assert server.requests == []


def test_timm_weights_come_from_the_hugging_face_hub_checked_against_its_sha256(server, online, monkeypatch):
    """huggingface_hub's own download, pointed at the test's server by HF_ENDPOINT: the file lands in the hub
    cache and loads strictly; a body that does not hash to the hub's SHA-256 is removed and refused."""
    from safetensors.torch import save

    name = "regnetx_002"
    repo = timm.get_pretrained_cfg(name).hf_hub_id
    torch.manual_seed(2)
    full = timm.create_model(name)
    data = save(full.state_dict())
    server.files[f"/{repo}/resolve/main/model.safetensors"] = data
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    path = timm_weights_file(name, "imagenet")
    assert path.read_bytes() == data and str(online / "hf") in str(path)
    backbone = build_backbone(name, output_stride=16, weights="imagenet")
    assert torch.equal(backbone.model.stem.conv.weight, full.stem.conv.weight)
    before = len(server.requests)
    assert timm_weights_file(name, "imagenet") == path and len(server.requests) == before  # from the cache now

    other = "regnetx_004"
    repo = timm.get_pretrained_cfg(other).hf_hub_id
    server.files[f"/{repo}/resolve/main/model.safetensors"] = data
    server.mode = "corrupt"
    with pytest.raises(DownloadError, match=rf"model\.safetensors \(from {repo}\): its SHA-256 is .*removed"):
        timm_weights_file(other, "imagenet")
    assert not list((online / "hf").glob(f"models--{repo.replace('/', '--')}/blobs/*"))
