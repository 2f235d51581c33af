"""Models opened by fsspec URL: a real HTTP server with Range support on 127.0.0.1, and memory://."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fsspec
import pytest
import torch

import distillgan
from distillgan import DistillganError, ModelMetadata, inspect, load_model, save_model, verify
from distillgan.source import RemoteSource

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class Server:
    """Serves files from memory with Range support; counts requests and bytes; can be told to lie."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.bytes_sent = 0
        self.mode = "honest"
        self.swap: bytes | None = None  # served instead after the first request, for mode "changes"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(self.headers.get("Range", "-"))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                if server.mode == "changes" and len(server.requests) > 1 and server.swap is not None:
                    data = server.swap
                if server.mode == "error":
                    self.send_error(500)
                    return
                rng = self.headers.get("Range")
                start, end, status = 0, len(data), 200
                m = _RANGE.match(rng or "")
                if m and server.mode != "ignores-range":
                    a, b = m.groups()
                    if a == "":
                        start, end = max(0, len(data) - int(b)), len(data)
                    else:
                        start, end = int(a), min(len(data), int(b) + 1 if b else len(data))
                    status = 206
                body = data[start:end]
                if server.mode == "short":
                    body = body[: len(body) // 2]
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                self.wfile.write(body)
                server.bytes_sent += len(body)

            do_HEAD = do_GET  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{name}"

    def reset(self) -> None:
        self.requests.clear()
        self.bytes_sent = 0

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def _model(folder: Path, name: str, mib: int, *, vocoder: bool = True) -> Path:
    n = mib * (1 << 20) // 4
    sd = {f"layer{i}.weight": torch.arange(n // 4, dtype=torch.float32) + i for i in range(4)}
    sd.update({f"small{i}": torch.full((3, 5), float(i)) for i in range(200)})
    voc = {"type": "hifigan", "state_dict": {"conv_pre.weight": torch.ones(64, 80, 7)}, "config": {}, "training_metadata": {}}
    meta = ModelMetadata(name=name, model_id=name, save_date="2026-11-28T00:00:00+00:00")
    return save_model(sd, {"n_mels": 80}, {}, meta, folder, vocoder_state=voc if vocoder else None)


def _header_bytes(info: dict) -> int:
    """Bytes of the parts inspect must read: end records, directory, local headers, manifest, safetensors headers."""
    members = info["members"]
    tail = info["file_size"] - (members[-1]["data_offset"] + members[-1]["size"])
    heads = sum(m["data_offset"] - m["header_offset"] for m in members)
    st_headers = sum(info["tensors"][m["name"]][0]["data_offset"] - m["data_offset"] for m in members[1:])
    return tail + heads + members[0]["size"] + st_headers


def test_inspect_of_a_256_mib_archive_takes_three_small_requests(server: Server, tmp_path: Path) -> None:
    path = _model(tmp_path, "big", 256)
    server.files["/big.distillgan"] = path.read_bytes()
    info = inspect(server.url("/big.distillgan"))
    assert info == inspect(path)
    assert len(server.requests) <= 3, server.requests
    assert server.bytes_sent - _header_bytes(info) <= 128 << 10, (server.bytes_sent, _header_bytes(info))


def test_remote_load_and_verify_equal_local(server: Server, tmp_path: Path) -> None:
    path = _model(tmp_path, "small", 4)
    server.files["/m.distillgan"] = path.read_bytes()
    url = server.url("/m.distillgan")
    remote, local = load_model(url), load_model(path)
    assert remote.state_dict.keys() == local.state_dict.keys()
    for name, t in local.state_dict.items():
        assert torch.equal(remote.state_dict[name], t), name
    assert torch.equal(remote.vocoder_state["state_dict"]["conv_pre.weight"], local.vocoder_state["state_dict"]["conv_pre.weight"])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert verify(url, sha256=digest)["sha256"] == digest
    assert distillgan.file_sha256(url) == digest


def test_memory_filesystem_counts(tmp_path: Path) -> None:
    path = _model(tmp_path, "mem", 2)
    fsspec.filesystem("memory").pipe("/models/mem.distillgan", path.read_bytes())
    src = RemoteSource("memory:///models/mem.distillgan")
    assert src.size == path.stat().st_size and src.requests == 1
    archive = distillgan.open_archive("memory:///models/mem.distillgan")
    assert archive.source.requests <= 3
    assert archive.manifest == inspect(path)["manifest"]
    loaded = load_model("memory:///models/mem.distillgan")
    assert torch.equal(loaded.state_dict["layer3.weight"], load_model(path).state_dict["layer3.weight"])


@pytest.mark.parametrize("mode", ["short", "ignores-range", "changes", "error"])
def test_lying_or_failing_server_gives_a_distillgan_error(server: Server, tmp_path: Path, mode: str) -> None:
    path = _model(tmp_path, "a", 2)
    other = _model(tmp_path, "b", 2)
    data = path.read_bytes()
    server.files["/m.distillgan"] = data
    server.swap = other.read_bytes()
    server.mode = mode
    with pytest.raises(DistillganError) as exc:
        load_model(server.url("/m.distillgan"))
    assert exc.value.code in {"remote-range", "remote-io", "crc-mismatch", "zip-eocd", "zip-layout", "manifest-mismatch",
                              "zip-header-mismatch", "truncated", "not-zip", "st-header-json", "st-offsets"}, exc.value.code


def test_missing_remote_file(server: Server) -> None:
    with pytest.raises(DistillganError) as exc:
        inspect(server.url("/nope.distillgan"))
    assert exc.value.code in {"not-found", "remote-io"}


def test_cli_accepts_urls(server: Server, tmp_path: Path) -> None:
    path = _model(tmp_path, "cli", 1)
    server.files["/cli.distillgan"] = path.read_bytes()
    script = Path(sys.executable).parent / "distillgan"
    r = subprocess.run([str(script), "verify", server.url("/cli.distillgan")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stderr
    r = subprocess.run([str(script), "inspect", "--json", "--sha256", server.url("/cli.distillgan")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout)["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_url_without_fsspec_names_the_extra(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['fsspec'] = None\n"
            "import distillgan\n"
            "try:\n    distillgan.inspect('http://127.0.0.1:9/x.distillgan')\n"
            "except distillgan.DistillganError as e:\n    print(e.code, e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith("remote-unavailable") and "distillgan[remote]" in r.stdout, r.stderr


def test_file_url_is_mapped_locally(tmp_path: Path) -> None:
    path = _model(tmp_path, "f", 1)
    assert inspect(path.as_uri()) == inspect(path)
