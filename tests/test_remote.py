"""Models opened by URL: a real HTTP server on 127.0.0.1 (tests/support/remote_server.py), memory://, and s3:// on moto's server."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
import torch
from remote_server import Bytes, Request, Server, raw_response

import distillgan
from distillgan import DistillganError, ModelMetadata, conformance, inspect, load_model, save_model, source, verify
from distillgan.source import RemoteSource


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


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _model(tmp_path_factory.mktemp("big"), "big", 256)


def _header_bytes(info: dict) -> int:
    """Bytes of the parts inspect must read: end records, directory, local headers, manifest, safetensors headers."""
    members = info["members"]
    tail = info["file_size"] - (members[-1]["data_offset"] + members[-1]["size"])
    heads = sum(m["data_offset"] - m["header_offset"] for m in members)
    st_headers = sum(info["tensors"][m["name"]][0]["data_offset"] - m["data_offset"] for m in members[1:])
    return tail + heads + members[0]["size"] + st_headers


def _same_model(a: distillgan.LoadedModel, b: distillgan.LoadedModel) -> None:
    assert a.state_dict.keys() == b.state_dict.keys()
    for name, t in b.state_dict.items():
        assert torch.equal(a.state_dict[name], t), name
    assert torch.equal(a.vocoder_state["state_dict"]["conv_pre.weight"], b.vocoder_state["state_dict"]["conv_pre.weight"])


# --- what a reader costs over HTTP ---------------------------------------------------------


def test_inspect_of_a_256_mib_archive_takes_three_small_requests(server: Server, big: Path) -> None:
    server.add("/big.distillgan", big.read_bytes())
    info = inspect(server.url("/big.distillgan"))
    assert info == inspect(big)
    assert len(server.requests) <= 3, server.requests
    assert server.bytes_sent - _header_bytes(info) <= 128 << 10, (server.bytes_sent, _header_bytes(info))


def test_inspect_takes_three_requests_when_the_model_header_crosses_32_kib(server: Server, tmp_path: Path) -> None:
    sd = {f"decoder.blocks.{i}.attention.out_proj.weight": torch.full((4, 4), float(i)) for i in range(400)}
    meta = ModelMetadata(name="many", model_id="many", save_date="2026-11-28T00:00:00+00:00")
    path = save_model(sd, {"n_mels": 80}, {}, meta, tmp_path)
    info = inspect(path)
    assert info["tensors"]["model.safetensors"][0]["data_offset"] > 40 << 10  # header ends past a 32 KiB first read
    assert inspect(server.add("/many.distillgan", path.read_bytes())) == info
    assert len(server.requests) == 2, server.requests  # no vocoder: the tail, then the head


def test_remote_load_and_verify_equal_local_reading_each_byte_once(server: Server, tmp_path: Path) -> None:
    path = _model(tmp_path, "small", 4)
    data = path.read_bytes()
    url = server.add("/m.distillgan", data)
    _same_model(load_model(url, verify=True), load_model(path))
    assert server.bytes_sent <= len(data), (server.bytes_sent, len(data))  # what open read is not fetched again
    digest = hashlib.sha256(data).hexdigest()
    server.reset()
    assert verify(url, sha256=digest)["sha256"] == digest
    assert server.bytes_sent == len(data)  # one pass gives the digest, the CRCs and the bool bytes
    assert distillgan.file_sha256(url) == digest


def test_tensor_data_comes_in_concurrent_ranges(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source.remote, "REMOTE_STREAM_BYTES", 256 << 10)
    path = _model(tmp_path, "c", 8)
    data = path.read_bytes()
    url = server.add("/m.distillgan", data)
    _same_model(load_model(url), load_model(path))
    ranges = len(data) // (256 << 10)
    assert ranges - 2 <= len(server.requests) <= ranges + 8, len(server.requests)
    assert server.max_in_flight >= 2, server.max_in_flight


_LOAD_CHILD = textwrap.dedent(
    """
    import gc, json, sys
    import torch, distillgan

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS")
    loaded = distillgan.load_model(sys.argv[1], verify=True)
    tensors = list(loaded.state_dict.values()) + list(loaded.vocoder_state["state_dict"].values())
    print(json.dumps({"growth": status("VmHWM") - before, "tensor_bytes": sum(t.numel() * t.element_size() for t in tensors)}))
    """
)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS is measured with Linux's /proc/self/clear_refs")
def test_remote_load_peak_memory_is_the_tensors_plus_a_little(server: Server, big: Path) -> None:
    url = server.add("/big.distillgan", big.read_bytes())
    r = subprocess.run([sys.executable, "-c", _LOAD_CHILD, url], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["tensor_bytes"] > 250 << 20
    assert out["growth"] <= out["tensor_bytes"] + (64 << 20), ((out["growth"] - out["tensor_bytes"]) >> 20, "MiB over the tensors")


def test_memory_filesystem_counts(tmp_path: Path) -> None:
    path = _model(tmp_path, "mem", 2)
    fsspec.filesystem("memory").pipe("/models/mem.distillgan", path.read_bytes())
    src = RemoteSource("memory:///models/mem.distillgan")
    assert src.size == path.stat().st_size and src.requests == 2  # info() for the size, then the tail
    src.close()
    archive = distillgan.open_archive("memory:///models/mem.distillgan")
    assert archive.source.requests <= 4
    assert archive.manifest == inspect(path)["manifest"]
    archive.close()
    _same_model(load_model("memory:///models/mem.distillgan", verify=True), load_model(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert verify("memory:///models/mem.distillgan", sha256=digest)["sha256"] == digest


def test_memory_filesystem_file_replaced_during_a_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _model(tmp_path, "a", 2).read_bytes(), _model(tmp_path, "b", 3).read_bytes()
    fs = fsspec.filesystem("memory")
    fs.pipe("/models/swap.distillgan", a)
    archive = distillgan.open_archive("memory:///models/swap.distillgan")
    fs.pipe("/models/swap.distillgan", b)
    with pytest.raises(DistillganError) as exc:
        archive.tensors("model.safetensors")
    assert exc.value.code in {"remote-changed", "remote-range", "crc-mismatch"}, exc.value
    archive.close()


# --- servers that fail, lie or change ------------------------------------------------------


def _modes(genuine: bytes, other: bytes) -> dict:
    """Hooks making the server misbehave, by name."""

    def short(req: Request) -> bool:
        start, end = req.range or (0, len(genuine))
        raw_response(req.handler, 206, {"Content-Range": f"bytes {start}-{end - 1}/{len(genuine)}", "Content-Length": str(end - start)},
                     genuine[start : start + (end - start) // 2])
        req.handler.close_connection = True
        return True

    def ignores_range(req: Request) -> bool:
        raw_response(req.handler, 200, {"Content-Length": str(len(genuine))}, genuine)
        return True

    def changes(req: Request) -> bool:
        if req.index > 0:
            req.data = Bytes(other)
        return False

    def error(req: Request) -> bool:
        req.handler.send_error(500)
        return True

    def chunked(req: Request) -> bool:
        start, end = req.range or (0, len(genuine))
        raw_response(req.handler, 206, {"Content-Range": f"bytes {start}-{end - 1}/{len(genuine)}", "Transfer-Encoding": "chunked"},
                     b"%x\r\n%s\r\n0\r\n\r\n" % (end - start, genuine[start:end]))
        return True

    def no_length(req: Request) -> bool:
        start, end = req.range or (0, len(genuine))
        raw_response(req.handler, 206, {"Content-Range": f"bytes {start}-{end - 1}/{len(genuine)}", "Connection": "close"}, genuine[start:end])
        req.handler.close_connection = True
        return True

    def two_lengths(req: Request) -> bool:
        req.extra_headers["Content-Length"] = "7"
        return False

    def wrong_range(req: Request) -> bool:
        start, end = req.range or (0, len(genuine))
        start = max(0, start - 1)
        raw_response(req.handler, 206, {"Content-Range": f"bytes {start}-{end - 1}/{len(genuine)}", "Content-Length": str(end - start)},
                     genuine[start:end])
        return True

    def no_etag_later(req: Request) -> bool:  # the right bytes, but without the validators the first answer had
        if req.index == 0:
            return False
        start, end = req.range or (0, len(genuine))
        raw_response(req.handler, 206, {"Content-Range": f"bytes {start}-{end - 1}/{len(genuine)}", "Content-Length": str(end - start)},
                     genuine[start:end])
        return True

    return {name: fn for name, fn in locals().items() if callable(fn) and not name.startswith("_")}


_CODES = {
    "short": {"remote-range"},
    "ignores_range": {"remote-range"},
    "changes": {"remote-changed"},
    "error": {"remote-io"},
    "chunked": {"remote-range"},
    "no_length": {"remote-range"},
    "two_lengths": {"remote-range"},
    "wrong_range": {"remote-range"},
    "no_etag_later": {"remote-changed"},
}


@pytest.mark.parametrize("mode", sorted(_CODES))
def test_lying_or_failing_server_gives_a_distillgan_error(server: Server, tmp_path: Path, mode: str) -> None:
    genuine = _model(tmp_path, "a", 2).read_bytes()
    other = _model(tmp_path, "b", 2).read_bytes()
    url = server.add("/m.distillgan", genuine)
    server.hook = _modes(genuine, other)[mode]
    with pytest.raises(DistillganError) as exc:
        load_model(url)
    assert exc.value.code in _CODES[mode], exc.value


def test_a_small_file_sent_whole_for_a_suffix_request_is_read_from_that_one_answer(server: Server) -> None:
    vector = conformance.default_vectors_dir() / "valid" / "minimal.distillgan"
    data = vector.read_bytes()
    url = server.add("/small.distillgan", data)

    def whole(req: Request) -> bool:  # a server ignoring Range: lawful, and cheap for a file under 16 KiB
        raw_response(req.handler, 200, {"Content-Length": str(len(data))}, data)
        return True

    server.hook = whole
    assert verify(url, sha256=hashlib.sha256(data).hexdigest()) == verify(vector, sha256=hashlib.sha256(data).hexdigest())
    assert len(server.log) == 1


def test_a_file_replaced_between_requests_is_refused_by_its_etag(server: Server, tmp_path: Path) -> None:
    a, b = _model(tmp_path, "a", 2).read_bytes(), _model(tmp_path, "b", 2).read_bytes()
    url = server.add("/m.distillgan", a)
    archive = distillgan.open_archive(url)
    server.add("/m.distillgan", b)  # a new version: new ETag, the server answers If-Match with 412
    with pytest.raises(DistillganError) as exc:
        archive.tensors("model.safetensors")
    assert exc.value.code == "remote-changed", exc.value
    archive.close()


def test_a_kept_alive_connection_closed_by_the_server_is_retried_once(server: Server, tmp_path: Path) -> None:
    path = _model(tmp_path, "k", 1)
    url = server.add("/m.distillgan", path.read_bytes())

    def hook(req: Request) -> bool:
        req.handler.close_connection = True  # hang up after answering, without saying Connection: close
        return False

    server.hook = hook
    _same_model(load_model(url), load_model(path))


def test_redirects(server: Server, tmp_path: Path) -> None:
    path = _model(tmp_path, "r", 1)
    server.add("/real.distillgan", path.read_bytes())

    def hook(req: Request) -> bool:
        targets = {"/moved.distillgan": "/real.distillgan", "/loop.distillgan": "/loop.distillgan",
                   "/to-file.distillgan": "file:///etc/passwd", "/to-ftp.distillgan": "ftp://127.0.0.1/x"}
        if req.path in targets:
            raw_response(req.handler, 302, {"Location": targets[req.path], "Content-Length": "0"})
            return True
        return False

    server.hook = hook
    _same_model(load_model(server.url("/moved.distillgan")), load_model(path))
    assert sum(1 for r in server.log if r["path"] == "/moved.distillgan") == 1  # later requests go straight to the target
    for name in ("loop", "to-file", "to-ftp"):
        with pytest.raises(DistillganError) as exc:
            inspect(server.url(f"/{name}.distillgan"))
        assert exc.value.code == "remote-redirect", (name, exc.value)


def test_missing_remote_file(server: Server) -> None:
    with pytest.raises(DistillganError) as exc:
        inspect(server.url("/nope.distillgan"))
    assert exc.value.code == "not-found"


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan"])
def test_remote_settings_are_checked(server: Server, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DISTILLGAN_REMOTE_TIMEOUT_S", value)
    with pytest.raises(DistillganError) as exc:
        inspect(server.url("/x.distillgan"))
    assert exc.value.code == "invalid-input" and "DISTILLGAN_REMOTE_TIMEOUT_S" in str(exc.value)


# --- entry points ----------------------------------------------------------------------------


def test_cli_accepts_urls(server: Server, tmp_path: Path) -> None:
    path = _model(tmp_path, "cli", 1)
    url = server.add("/cli.distillgan", path.read_bytes())
    script = Path(sys.executable).parent / "distillgan"
    r = subprocess.run([str(script), "verify", url], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stderr
    r = subprocess.run([str(script), "inspect", "--json", "--sha256", url], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout)["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_safe_open_and_load_file_over_http(server: Server, tmp_path: Path) -> None:
    """safe_open on a URL reads one tensor with one small range request; load_file gives the local state dict."""
    sd = {"big": torch.arange(1 << 20, dtype=torch.float32), **{f"small{i}": torch.full((3, 5), float(i)) for i in range(50)}}
    path = distillgan.save_file(sd, tmp_path / "f.distillgan", metadata={"name": "remote"})
    url = server.add("/f.distillgan", path.read_bytes())
    with distillgan.safe_open(url) as f:
        assert f.keys() == list(sd) and f.metadata()["name"] == "remote"
        server.reset()
        assert torch.equal(f.get_tensor("big"), sd["big"])
        # range requests for its bytes, nothing else (what open already fetched is not fetched again)
        assert server.requests and 0 < server.bytes_sent <= sd["big"].nbytes, (server.requests, server.bytes_sent)
        server.reset()
        assert torch.equal(f.get_tensor("small7"), sd["small7"])  # at most one request (open may have fetched it already)
        assert len(server.requests) <= 1 and server.bytes_sent <= sd["small7"].nbytes, (server.requests, server.bytes_sent)
        server.reset()
        assert torch.equal(f.get_slice("big")[10:20], sd["big"][10:20])
        assert server.bytes_sent <= sd["big"].nbytes  # the slice's tensor, nothing else of the file
    local = distillgan.load_file(path)
    remote = distillgan.load_file(url)
    assert remote.keys() == local.keys() and all(torch.equal(remote[k], local[k]) for k in local)


@pytest.mark.parametrize(("missing", "url"), [("urllib3", "http://127.0.0.1:9/x.distillgan"), ("fsspec", "memory:///x.distillgan")])
def test_url_without_the_remote_extra_names_it(missing: str, url: str) -> None:
    """http(s) is read with urllib3, other schemes with fsspec: both come with distillgan[remote]."""
    code = (f"import sys; sys.modules[{missing!r}] = None\n"
            "import distillgan\n"
            f"try:\n    distillgan.inspect({url!r})\n"
            "except distillgan.DistillganError as e:\n    print(e.code, e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith("remote-unavailable") and "distillgan[remote]" in r.stdout and missing in r.stdout, (r.stdout, r.stderr)


def test_file_url_is_mapped_locally(tmp_path: Path) -> None:
    path = _model(tmp_path, "f", 1)
    assert inspect(path.as_uri()) == inspect(path)


# --- s3:// on a real S3-compatible server (moto's, on 127.0.0.1) ------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """The endpoint of moto's S3 server on 127.0.0.1, with fsspec's s3 options pointing at it."""
    threaded = pytest.importorskip("moto.moto_server.threaded_moto_server")
    pytest.importorskip("s3fs")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved_env = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    server = threaded.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    try:
        server.start()
    except OSError as e:  # pragma: no cover - a sandbox without sockets
        pytest.skip(f"moto's server cannot start: {e}")
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved_conf = fsspec.config.conf.get("s3")
    fsspec.config.conf["s3"] = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    try:
        fsspec.filesystem("s3", skip_instance_cache=True).mkdir("models")
        yield endpoint
    finally:
        server.stop()
        if saved_conf is None:
            fsspec.config.conf.pop("s3", None)
        else:
            fsspec.config.conf["s3"] = saved_conf
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_s3_urls_read_like_local_files(s3: str, tmp_path: Path) -> None:
    path = _model(tmp_path, "s3", 4)
    data = path.read_bytes()
    fs = fsspec.filesystem("s3")
    fs.pipe("models/m.distillgan", data)
    url = "s3://models/m.distillgan"
    assert inspect(url) == inspect(path)
    _same_model(load_model(url, verify=True), load_model(path))
    digest = hashlib.sha256(data).hexdigest()
    assert verify(url, sha256=digest)["sha256"] == digest
    archive = distillgan.open_archive(url)
    assert archive.source.requests <= 3  # signed once, then the same three range requests as over HTTP
    fs.pipe("models/m.distillgan", _model(tmp_path, "s3-new", 4).read_bytes())
    with pytest.raises(DistillganError) as exc:
        archive.tensors("model.safetensors")
    assert exc.value.code == "remote-changed"  # S3 answers If-Match with 412
    archive.close()
    with pytest.raises(DistillganError) as exc:
        inspect("s3://models/absent.distillgan")
    assert exc.value.code == "not-found"
