"""Weights registry: the 10 upstream entries, fetch over file:// and a local HTTP server into a temp
cache (pins, mismatches, atomicity), verify on good, mis-shaped and malicious files, registering
our own checkpoints. No test touches the network beyond 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch
import yaml

from anatcl_core.model import weights
from anatcl_core.model.checkpoint import save_checkpoint
from anatcl_core.model.network import build_model
from anatcl_core.model.trained import model_config
from anatcl_core.model.upstream import upstream_weight_name
from anatcl_core.model.weights import WeightsError, fetch, inspect_checkpoint, load_registry, register_checkpoint

UPSTREAM_URL = "https://gitlab.di.unito.it/barbano/anatcl-pretrained/-/raw/main/"


def small_checkpoint(path: Path, seed: int = 0, base_width: int = 4) -> Path:
    """Our checkpoint format for a narrow ResNet-18, with random BN statistics (eval != train)."""
    torch.manual_seed(seed)
    model = build_model(base_width=base_width)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    save_checkpoint({"model": model.state_dict(), "config": model_config(model), "epoch": 1}, path)
    return path


class _Exploit:
    """Pickles as a call of ``func(*args)``: what a malicious checkpoint looks like."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"model": {"w": torch.ones(2)}, "opts": _Exploit(os.system, f"touch {marker}")}, path)
    return path


def write_registry(path: Path, entries: dict) -> Path:
    path.write_text(yaml.safe_dump({"schema": 1, "checkpoints": entries}))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tiny(tmp_path) -> Path:
    return small_checkpoint(tmp_path / "src" / "tiny.pth")


def _registry(tmp_path, url, sha=None, name="tiny") -> Path:
    entry = {"format": "anatcl", "url": url, "sha256": sha, "description": "test"}
    return write_registry(tmp_path / "reg.yaml", {name: entry})


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_packaged_registry_lists_the_ten_upstream_files(capsys):
    entries = load_registry()
    expected = {f"resnet18-anatcl-{tag}-fold{fold}" for tag in ("g3", "l3") for fold in range(5)}
    assert set(entries) == expected
    for descriptor in ("global", "local"):
        for fold in range(5):
            tag = {"global": "g3", "local": "l3"}[descriptor]
            entry = entries[f"resnet18-anatcl-{tag}-fold{fold}"]
            assert entry.url == UPSTREAM_URL + upstream_weight_name("resnet18", descriptor, fold)
            assert entry.format == "upstream" and entry.sha256 is None and entry.path is None
            assert entry.provenance["descriptor"] == descriptor and entry.provenance["fold"] == fold
    assert weights.main(["list", "--cache", "/nonexistent-cache"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and all("unpinned" in line for line in lines)


def test_fetch_file_url_pins_then_catches_a_changed_file(tmp_path, tiny, caplog):
    cache = tmp_path / "cache"
    registry = _registry(tmp_path, tiny.as_uri())
    path = fetch("tiny", cache=cache, registries=[registry], pin=True, progress=False)
    assert path == cache / "tiny.pth" and path.read_bytes() == tiny.read_bytes()
    assert yaml.safe_load((cache / "pins.yaml").read_text()) == {"tiny": sha256(tiny)}
    assert weights.expected_sha256(load_registry([registry])["tiny"], cache) == sha256(tiny)
    # the upstream file changes: a forced re-download no longer matches the pin
    small_checkpoint(tiny, seed=1)
    with pytest.raises(WeightsError, match="does not match the pinned"):
        fetch("tiny", cache=cache, registries=[registry], force=True, progress=False)
    assert _leftovers(cache) == ["pins.yaml", "tiny.pth"]  # old copy kept, no temp file
    assert sha256(cache / "tiny.pth") != sha256(tiny)


def test_registry_pin_mismatch_leaves_nothing(tmp_path, tiny):
    cache = tmp_path / "cache"
    registry = _registry(tmp_path, tiny.as_uri(), sha="0" * 64)
    with pytest.raises(WeightsError, match="does not match"):
        fetch("tiny", cache=cache, registries=[registry], progress=False)
    assert _leftovers(cache) == []
    good = _registry(tmp_path, tiny.as_uri(), sha=sha256(tiny))
    assert fetch("tiny", cache=cache, registries=[good], progress=False).is_file()
    assert _leftovers(cache) == ["tiny.pth"]  # registry pin: nothing written to pins.yaml


def test_cache_comes_from_the_environment(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "envcache"))
    path = fetch("tiny", registries=[_registry(tmp_path, tiny.as_uri())], progress=False)
    assert path == tmp_path / "envcache" / "tiny.pth"


def test_malicious_download_is_refused_and_deleted(tmp_path):
    marker = tmp_path / "pwned"
    evil = malicious_checkpoint(tmp_path / "evil.pth", marker)
    cache = tmp_path / "cache"
    with pytest.raises(Exception, match="refusing to load"):
        fetch("tiny", cache=cache, registries=[_registry(tmp_path, evil.as_uri())], progress=False)
    assert not marker.exists() and _leftovers(cache) == []


class _Truncating(http.server.BaseHTTPRequestHandler):
    """Announces 1000 bytes more than it sends, then closes: a dropped connection."""

    def do_GET(self):
        body = b"x" * 500
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) + 1000))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    """Start a server on 127.0.0.1 (random port) for a handler; stopped after the test."""
    servers = []

    def start(handler):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_fetch_over_http_and_truncated_download(tmp_path, tiny, http_server):
    base = http_server(functools.partial(_Quiet, directory=str(tiny.parent)))
    cache = tmp_path / "cache"
    registry = _registry(tmp_path, f"{base}/tiny.pth", sha=sha256(tiny))
    assert fetch("tiny", cache=cache, registries=[registry], progress=False).read_bytes() == tiny.read_bytes()

    broken = http_server(_Truncating)
    cache2 = tmp_path / "cache2"
    with pytest.raises(WeightsError, match="truncated|download failed"):
        fetch("tiny", cache=cache2, registries=[_registry(tmp_path, f"{broken}/tiny.pth")], progress=False)
    assert _leftovers(cache2) == []


def test_bad_registry_entries_are_named(tmp_path, tiny):
    cases = [({"format": "anatcl", "url": "x", "sha256": "abc"}, "sha256"),
             ({"format": "keras", "url": "x"}, "format"),
             ({"format": "anatcl", "url": "x", "path": "y"}, "exactly one"),
             ({"format": "anatcl", "url": "x", "checksum": "y"}, "unknown key")]
    for entry, message in cases:
        registry = write_registry(tmp_path / "bad.yaml", {"broken": entry})
        with pytest.raises(WeightsError, match=message) as info:
            load_registry([registry])
        assert "broken" in str(info.value) and "bad.yaml" in str(info.value)
    with pytest.raises(WeightsError, match="scheme"):
        fetch("tiny", cache=tmp_path / "c", registries=[_registry(tmp_path, "ftp://host/tiny.pth")])
    with pytest.raises(KeyError, match="unknown checkpoint"):
        fetch("nope", cache=tmp_path / "c")


def test_verify_good_misshaped_and_malicious(tmp_path, tiny, capsys):
    assert weights.main(["verify", str(tiny)]) == 0
    out = capsys.readouterr().out
    assert sha256(tiny) in out and "format anatcl" in out and "feature_dim 32" in out
    info = inspect_checkpoint(tiny)
    assert (info.format, info.depth, info.feature_dim, info.n_tensors) == ("anatcl", "resnet18", 32, 124)

    state = torch.load(tiny, weights_only=True)
    del state["model"]["head.2.bias"]
    save_checkpoint(state, tmp_path / "missing.pth")
    assert weights.main(["verify", str(tmp_path / "missing.pth")]) == 1
    with pytest.raises(WeightsError, match="head.2.bias"):
        inspect_checkpoint(tmp_path / "missing.pth")
    state["model"]["head.2.bias"] = torch.zeros(7)
    save_checkpoint(state, tmp_path / "shape.pth")
    with pytest.raises(WeightsError, match=r"wrong shapes \['head.2.bias \(7,\) != \(128,\)'\]"):
        inspect_checkpoint(tmp_path / "shape.pth")
    # an upstream-format file (no config) of a narrow net fits no full-width AnatCL
    save_checkpoint({"model": state["model"] | {"head.2.bias": torch.zeros(128)}}, tmp_path / "up.pth")
    with pytest.raises(WeightsError, match="upstream-format"):
        inspect_checkpoint(tmp_path / "up.pth")

    marker = tmp_path / "pwned"
    evil = malicious_checkpoint(tmp_path / "evil.pth", marker)
    assert weights.main(["verify", str(evil)]) == 1
    assert not marker.exists()


def test_verify_against_a_named_pin(tmp_path, tiny):
    registry = _registry(tmp_path, tiny.as_uri(), sha=sha256(tiny))
    assert weights.main(["verify", str(tiny), "--name", "tiny", "--registry", str(registry)]) == 0
    other = small_checkpoint(tmp_path / "other.pth", seed=3)
    assert weights.main(["verify", str(other), "--name", "tiny", "--registry", str(registry)]) == 1


def test_register_checkpoint_records_hash_and_provenance(tmp_path, tiny):
    registry = tmp_path / "results" / "weights.yaml"
    ckpt = small_checkpoint(tmp_path / "results" / "pretrain" / "model.pth")
    provenance = {"config": {"temperature": 0.1}, "data_version": "synth-v1", "commit": "abc123"}
    entry = register_checkpoint(ckpt, "ours-anatcl-fold0", registry, provenance)
    assert entry.sha256 == sha256(ckpt) and entry.format == "anatcl"
    raw = yaml.safe_load(registry.read_text())["checkpoints"]["ours-anatcl-fold0"]
    assert raw["path"] == "pretrain/model.pth" and raw["provenance"] == provenance
    loaded = load_registry([registry])
    assert len(loaded) == 11 and loaded["ours-anatcl-fold0"].path == str(ckpt)
    assert fetch("ours-anatcl-fold0", cache=tmp_path / "c", registries=[registry]) == ckpt
    register_checkpoint(tiny, "ours-second", registry, provenance)  # a second entry, absolute path
    assert set(yaml.safe_load(registry.read_text())["checkpoints"]) == {"ours-anatcl-fold0", "ours-second"}
    small_checkpoint(ckpt, seed=5)  # the file changes after registration
    with pytest.raises(WeightsError, match="does not match"):
        fetch("ours-anatcl-fold0", cache=tmp_path / "c", registries=[registry])
    with pytest.raises(WeightsError, match="packaged registry"):
        register_checkpoint(tiny, "resnet18-anatcl-g3-fold0", registry, provenance)
    with pytest.raises(WeightsError, match="plain values"):
        register_checkpoint(tiny, "ours-bad", registry, {"config": object()})
