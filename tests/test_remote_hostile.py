"""A server is an attacker too (FORMAT.md §12).

Each test reproduces an attack by a hostile server with a real HTTP server on
127.0.0.1 (tests/support/remote_server.py): split views (different bytes for
different ranges of the same file), memory driven by what a server declares,
slow drips and stalls, redirects, and local/remote verdicts that differ.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from remote_server import LAST_MODIFIED, Bytes, Request, Server, Sparse, drip, etag_of, raw_response, stall, write_body

import distillgan
from distillgan import DistillganError, ModelMetadata, conformance, inspect, load_model, save_model, verify
from distillgan import container as zc
from distillgan.crc import CHUNK

SMALL = 64 << 10  # the requests a reader makes to validate structure are below this; tensor data comes in larger ones


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def _model(folder: Path, name: str = "m", *, mib: int = 2) -> bytes:
    n = mib * (1 << 20) // 4
    sd = {"w": torch.arange(n, dtype=torch.float32), "b": torch.ones(16)}
    meta = ModelMetadata(name=name, model_id=f"id-{name}", save_date="2026-11-28T00:00:00+00:00")
    return save_model(sd, {"n_mels": 80}, {}, meta, folder).read_bytes()


def members(data: bytes) -> dict[str, tuple[int, int, int]]:
    """name -> (local header offset, data offset, size), from the central directory of one of our archives."""
    (_, _, _, _, count, _, cd_off, _) = zc.EOCD_FMT.unpack(data[-22:])
    out, pos = {}, cd_off
    for _ in range(count):
        f = zc.CENTRAL_FMT.unpack_from(data, pos)
        name = data[pos + 46 : pos + 46 + f[10]].decode()
        lho = f[16]
        lf = zc.LOCAL_FMT.unpack_from(data, lho)
        out[name] = (lho, lho + 30 + lf[9] + lf[10], f[9])
        pos += 46 + f[10] + f[11] + f[12]
    return out


def replace_member_bytes(data: bytes, name: str, offset: int, new: bytes, *, fix_crc: bool) -> bytes:
    """``data`` with bytes of member ``name`` replaced at ``offset`` (same length), CRC-32 patched in both headers if asked."""
    lho, start, size = members(data)[name]
    out = bytearray(data)
    out[start + offset : start + offset + len(new)] = new
    if fix_crc:
        crc = struct.pack("<I", zlib.crc32(out[start : start + size]))
        out[lho + 14 : lho + 18] = crc
        (_, _, _, _, count, _, cd_off, _) = zc.EOCD_FMT.unpack(data[-22:])
        pos = cd_off
        for _ in range(count):
            f = zc.CENTRAL_FMT.unpack_from(data, pos)
            if f[16] == lho:
                out[pos + 16 : pos + 20] = crc
            pos += 46 + f[10] + f[11] + f[12]
    return bytes(out)


def tampered_manifest(data: bytes) -> bytes:
    """A valid archive differing from ``data`` only in its manifest (the model's name), CRC-32 fixed."""
    _, start, size = members(data)["manifest.msgpack"]
    manifest = data[start : start + size]
    i = manifest.index(b"\xa7genuine") + 1  # the msgpack str "genuine": the model's name
    return replace_member_bytes(data, "manifest.msgpack", i, b"EVILEVI", fix_crc=True)


def split_by_size(genuine: bytes, other: bytes) -> object:
    """A hook: requests under SMALL bytes (and suffix requests) get ``other``; the rest get ``genuine``."""
    from remote_server import Bytes

    g, o = Bytes(genuine), Bytes(other)

    def hook(req: Request) -> bool:
        rng = req.headers.get("Range") or ""
        small = rng.startswith("bytes=-") or (req.range is not None and req.range[1] - req.range[0] < SMALL)
        req.data = o if small else g
        return False

    return hook


# --- split view -------------------------------------------------------------------------


def test_split_view_cannot_pass_a_tampered_manifest_with_a_genuine_digest(server: Server, tmp_path: Path) -> None:
    genuine = _model(tmp_path, "genuine", mib=12)
    evil = tampered_manifest(genuine)
    assert inspect_bytes(tmp_path, evil)["manifest"]["metadata"]["name"] == "EVILEVI"  # a valid file on its own
    url = server.add("/m.distillgan", genuine)
    server.hook = split_by_size(genuine, evil)
    with pytest.raises(DistillganError):
        verify(url, sha256=hashlib.sha256(genuine).hexdigest())


def test_split_view_cannot_change_a_tensor_dtype(server: Server, tmp_path: Path) -> None:
    genuine = _model(tmp_path, "genuine", mib=2)
    _, start, _ = members(genuine)["model.safetensors"]
    header = genuine[start : start + 4096]
    evil = replace_member_bytes(genuine, "model.safetensors", header.index(b'"F32"'), b'"I32"', fix_crc=False)
    url = server.add("/m.distillgan", genuine)
    server.hook = split_by_size(genuine, evil)
    for check in (True, False):
        try:
            loaded = load_model(url, verify=check)
        except DistillganError:
            continue
        assert all(t.dtype == torch.float32 for t in loaded.state_dict.values()), {k: t.dtype for k, t in loaded.state_dict.items()}


def inspect_bytes(tmp_path: Path, data: bytes) -> dict:
    p = tmp_path / "probe.distillgan"
    p.write_bytes(data)
    return inspect(p)


# --- memory grows with bytes received, never with bytes declared ------------------------

_RSS_CHILD = textwrap.dedent(
    """
    import gc, json, sys
    import torch, distillgan

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

    out = {}
    for name, url, op in json.loads(sys.argv[1]):
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the peak (VmHWM) starts again from the current RSS
        before = status("VmRSS")
        try:
            result = getattr(distillgan, op)(url)
            code = None
        except distillgan.DistillganError as e:
            code = e.code
        result = None
        out[name] = {"code": code, "growth": status("VmHWM") - before}
    print(json.dumps(out))
    """
)


def _peak_growth(cases: list[tuple[str, str, str]], env: dict[str, str] | None = None) -> dict[str, dict]:
    """Peak RSS growth of each (name, url, distillgan function) in a fresh process (Linux: /proc/self/clear_refs)."""
    import os

    r = subprocess.run([sys.executable, "-c", _RSS_CHILD, json.dumps(cases)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def _gzip_bomb(n: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return b"".join([c.compress(zeros) for _ in range(n >> 20)] + [c.flush()])


def _huge_member_archive(size: int) -> Sparse:
    """An archive whose model member declares one U8 tensor of ``size`` bytes; only its structure is stored."""
    from distillgan.archive import ArchivePlan, encode_checked, plan_archive
    from distillgan.manifest import coerce_metadata
    from distillgan.tensors import build_header

    meta = coerce_metadata({"name": "huge", "model_id": "huge", "save_date": "2026-11-28T00:00:00+00:00"})
    small = plan_archive({"latent_dim": 8, "metadata": meta, "state_dict": {"w": torch.zeros(64, dtype=torch.uint8)},
                          "spectrogram_config": {}, "training_config": {}})
    header, _ = build_header([("state_dict/w", "U8", (size,))])
    raw = dict(small.raw)
    raw["members"] = {zc.MODEL_NAME: {"size": len(header) + size, "aliases": {}}}
    zeros = memoryview(bytes(CHUNK))

    def chunks() -> Iterator[bytes | memoryview]:
        yield header
        for pos in range(0, size, len(zeros)):
            yield zeros[: min(len(zeros), size - pos)]

    plan = ArchivePlan(raw, encode_checked(raw), [(zc.MODEL_NAME, len(header) + size, chunks)])
    sink = _SparseSink(zeros.obj)
    total = distillgan.write_archive(sink, plan)  # type: ignore[arg-type]
    return Sparse(total, sink.regions)


class _SparseSink:
    """A write-only seekable file that keeps every write except the shared zero chunk."""

    def __init__(self, zeros: object) -> None:
        self.zeros = zeros
        self.regions: dict[int, bytes] = {}
        self.pos = 0

    def write(self, b: bytes | memoryview) -> int:
        n = memoryview(b).nbytes
        if not (isinstance(b, memoryview) and b.obj is self.zeros):
            self.regions[self.pos] = bytes(b)
        self.pos += n
        return n

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos
        return pos

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS is measured with Linux's /proc/self/clear_refs")
def test_memory_follows_bytes_received_not_bytes_declared(server: Server, tmp_path: Path) -> None:
    genuine = _model(tmp_path, "genuine", mib=1)
    server.add("/ok.distillgan", genuine)
    huge = _huge_member_archive(3 << 30)
    server.add("/huge.distillgan", huge)
    bomb = _gzip_bomb(512 << 20)

    def hook(req: Request) -> bool:
        h = req.handler
        if req.path == "/ignores-range.distillgan":  # 200 and a 768 MiB body, whatever the Range asked
            raw_response(h, 200, {"Content-Length": str(768 << 20), "Content-Type": "application/octet-stream"})
            try:
                chunk = bytes(1 << 20)
                for _ in range(768):
                    h.wfile.write(chunk)
            except OSError:
                pass
            h.close_connection = True
            return True
        if req.path == "/gzip.distillgan":  # the range asked for, as a gzip bomb
            start, end = req.range or (0, len(genuine))
            raw_response(h, 206, {"Content-Range": f"bytes {start}-{end - 1}/{len(genuine)}", "Content-Encoding": "gzip",
                                  "Content-Length": str(len(bomb))}, bomb)
            return True
        if req.path == "/huge.distillgan" and req.range and req.range[1] - req.range[0] > SMALL:  # 48 KiB of the data, then hang up
            start, end = req.range
            raw_response(h, 206, {"Content-Range": f"bytes {start}-{end - 1}/{huge.size}", "Content-Length": str(end - start),
                                  "ETag": etag_of(huge), "Last-Modified": LAST_MODIFIED})
            try:
                write_body(h, huge, start, start + (48 << 10))
            except OSError:
                pass
            h.close_connection = True
            return True
        return False

    server.hook = hook
    growth = _peak_growth([
        ("ignores-range", server.url("/ignores-range.distillgan"), "inspect"),
        ("gzip", server.url("/gzip.distillgan"), "inspect"),
        ("huge", server.url("/huge.distillgan"), "load_model"),
    ])
    figures = {name: (r["code"], r["growth"] >> 20) for name, r in growth.items()}  # (code, MiB)
    assert all(code is not None and mib < 64 for code, mib in figures.values()), figures


# --- deadlines ---------------------------------------------------------------------------


def test_a_dripping_server_meets_the_deadline(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    genuine = _model(tmp_path, "genuine", mib=1)
    server.add("/m.distillgan", genuine)
    dripped: list[int] = []

    def hook(req: Request) -> bool:
        start, end = req.range or (0, len(genuine))
        headers = {"Content-Range": f"bytes {start}-{end - 1}/{len(genuine)}", "Content-Length": str(end - start)}
        dripped.append(drip(req.handler, headers, every_s=0.05, limit_s=20))
        return True

    server.hook = hook
    monkeypatch.setenv("DISTILLGAN_REMOTE_TIMEOUT_S", "1")
    monkeypatch.setenv("DISTILLGAN_REMOTE_STALL_S", "0.5")
    with pytest.raises(DistillganError) as exc:
        inspect(server.url("/m.distillgan"))
    assert exc.value.code == "remote-timeout", exc.value
    assert sum(dripped) < 100, dripped  # a second's worth of drops, not the 400 of the server's own limit


def test_a_silent_server_meets_the_stall_timeout(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.add("/m.distillgan", b"x" * 1000)
    calls = []

    def hook(req: Request) -> bool:
        calls.append(req.index)
        stall(req.handler, limit_s=20)
        return True

    server.hook = hook
    monkeypatch.setenv("DISTILLGAN_REMOTE_STALL_S", "0.3")
    with pytest.raises(DistillganError) as exc:
        inspect(server.url("/m.distillgan"))
    assert exc.value.code == "remote-timeout", exc.value
    assert len(calls) == 1


def test_a_hung_fsspec_backend_meets_the_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    release = threading.Event()

    class HungFileSystem(MemoryFileSystem):  # a real fsspec backend whose reads never answer (for 20 s at most)
        protocol = "hungmem"

        @classmethod
        def _strip_protocol(cls, path: str) -> str:
            return MemoryFileSystem._strip_protocol(path.replace("hungmem://", "memory://", 1))

        def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: object) -> bytes:
            release.wait(20)
            return super().cat_file(path, start, end, **kwargs)

    fsspec.register_implementation("hungmem", HungFileSystem, clobber=True)
    HungFileSystem().pipe("/m.distillgan", _model(tmp_path, "genuine", mib=1))
    monkeypatch.setenv("DISTILLGAN_REMOTE_TIMEOUT_S", "0.5")
    try:
        with pytest.raises(DistillganError) as exc:
            inspect("hungmem:///m.distillgan")
        assert exc.value.code == "remote-timeout", exc.value
    finally:
        release.set()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (openssl's command line), trusted through SSL_CERT_FILE by the tests using it."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    return cert, key


def test_https_reads_and_never_redirects_to_http(tls: tuple[str, str], server: Server, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", tls[0])
    genuine = _model(tmp_path, "genuine", mib=1)
    plain = server.add("/m.distillgan", genuine)
    secure = Server(tls=tls)
    try:
        url = secure.add("/m.distillgan", genuine)
        secure.add("/drip.distillgan", genuine)
        assert verify(url, sha256=hashlib.sha256(genuine).hexdigest())["sha256"] == hashlib.sha256(genuine).hexdigest()
        assert load_model(url).state_dict["w"].shape == (1 << 18,)

        def hook(req: Request) -> bool:
            if req.path == "/down.distillgan":
                raw_response(req.handler, 302, {"Location": plain, "Content-Length": "0"})
                return True
            if req.path == "/drip.distillgan":
                start, end = req.range or (0, len(genuine))
                drip(req.handler, {"Content-Range": f"bytes {start}-{end - 1}/{len(genuine)}", "Content-Length": str(end - start)},
                     every_s=0.05, limit_s=20)
                return True
            return False

        secure.hook = hook
        with pytest.raises(DistillganError) as exc:
            inspect(secure.url("/down.distillgan"))
        assert exc.value.code == "remote-redirect", exc.value
        assert len(server.log) == 0  # the plain server was never asked
        monkeypatch.setenv("DISTILLGAN_REMOTE_TIMEOUT_S", "1")
        monkeypatch.setenv("DISTILLGAN_REMOTE_STALL_S", "0.5")
        with pytest.raises(DistillganError) as exc:
            inspect(secure.url("/drip.distillgan"))  # the deadline also wakes a read blocked inside TLS
        assert exc.value.code == "remote-timeout", exc.value
    finally:
        secure.close()


# --- the same verdict locally and remotely ----------------------------------------------

VECTORS = conformance.default_vectors_dir()
INDEX = json.loads((VECTORS / "index.json").read_text(encoding="utf-8"))["vectors"]


def _outcome(fn: object, target: object) -> object:
    try:
        return fn(target)  # type: ignore[operator]
    except DistillganError as e:
        return e.code


@pytest.fixture(scope="module")
def vector_server() -> Iterator[Server]:
    s = Server()
    for v in INDEX:
        s.add("/" + v["file"], (VECTORS / v["file"]).read_bytes())
    yield s
    s.close()


@pytest.mark.parametrize("vector", INDEX, ids=[v["id"] for v in INDEX])
def test_every_vector_gets_the_same_verdict_over_http(vector_server: Server, vector: dict) -> None:
    path = VECTORS / vector["file"]
    url = vector_server.url("/" + vector["file"])
    local = _outcome(verify, path)
    assert _outcome(verify, url) == local
    assert _outcome(inspect, url) == _outcome(inspect, path)
    if isinstance(local, str):
        assert not vector["valid"] and local == vector["expected"]["code"], local


def test_junk_before_a_copied_tail_is_refused_remotely_as_locally(server: Server, tmp_path: Path) -> None:
    genuine = _model(tmp_path, "genuine", mib=1)
    forged = genuine + bytes(4096) + genuine[-(16 << 10) :]  # A + junk + A's last 16 KiB
    path = tmp_path / "forged.distillgan"
    path.write_bytes(forged)
    url = server.add("/forged.distillgan", forged)
    local = _outcome(verify, path)
    assert local == "zip-layout"
    assert _outcome(verify, url) == local
    assert _outcome(lambda u: verify(u, sha256=hashlib.sha256(genuine).hexdigest()), url) == local
    assert _outcome(inspect, url) == local


def test_a_torch_checkpoint_is_named_a_pickle_remotely_as_locally(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"w": torch.ones(3), "epoch": 3}, path)
    url = server.add("/ckpt.pt", path.read_bytes())
    assert _outcome(inspect, path) == "pickle"
    assert _outcome(inspect, url) == "pickle"
    assert _outcome(verify, url) == "pickle"


# --- the split-view generator: property over which requests see which version -----------------


def _variants(genuine: bytes, tmp: Path) -> dict[str, bytes]:
    """Other versions of ``genuine`` a server could mix in: valid ones (checksums fixed), broken ones, another file."""
    _, start, _ = members(genuine)["model.safetensors"]
    header_len = struct.unpack("<Q", genuine[start : start + 8])[0]
    dtype_at = genuine[start : start + 8 + header_len].index(b'"F32"')
    data_at = 8 + header_len + 4096  # inside the first tensor's data
    return {
        "manifest": tampered_manifest(genuine),
        "dtype": replace_member_bytes(genuine, "model.safetensors", dtype_at, b'"I32"', fix_crc=True),
        "dtype-same-crc": replace_member_bytes(genuine, "model.safetensors", dtype_at, b'"I32"', fix_crc=False),
        "data": replace_member_bytes(genuine, "model.safetensors", data_at, b"\x7f" * 16, fix_crc=True),
        "data-same-crc": replace_member_bytes(genuine, "model.safetensors", data_at, b"\x7f" * 16, fix_crc=False),
        "other-file": _model(tmp, "another", mib=1),
    }


def _result(op: str, target: object, sha: str) -> object:
    if op == "inspect":
        return inspect(target)  # type: ignore[arg-type]
    if op == "verify":
        return verify(target)  # type: ignore[arg-type]
    if op == "verify-sha256":
        return verify(target, sha256=sha)  # type: ignore[arg-type]
    loaded = load_model(target, verify=op == "load-verified")  # type: ignore[arg-type]
    return {k: (str(t.dtype), t.view(torch.uint8).tolist() if t.numel() < 64 else hashlib.sha256(t.numpy().tobytes()).hexdigest())
            for k, t in loaded.state_dict.items()}


class SplitView:
    """A server, the genuine file, its variants and the local results for each (op, version)."""

    def __init__(self, server: Server, genuine: bytes, variants: dict[str, bytes], expected: dict) -> None:
        self.server, self.genuine, self.variants, self.expected = server, genuine, variants, expected

    def __repr__(self) -> str:  # hypothesis prints it with a failing example
        return f"SplitView({len(self.genuine)} bytes, {sorted(self.variants)})"


@pytest.fixture(scope="module")
def split_view(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SplitView]:
    from distillgan import source

    tmp = tmp_path_factory.mktemp("split")
    genuine = _model(tmp, "genuine", mib=1)
    variants = _variants(genuine, tmp)
    sha = hashlib.sha256(genuine).hexdigest()
    expected: dict = {}
    for name, data in [("genuine", genuine), *variants.items()]:
        p = tmp / f"{name}.distillgan"
        p.write_bytes(data)
        for op in OPS:
            expected[(op, name)] = _outcome(lambda t, op=op: _result(op, t, sha), p)
    s = Server()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(source.remote, "REMOTE_STREAM_BYTES", 64 << 10)  # a member comes in many ranges, each a chance to switch
        yield SplitView(s, genuine, variants, expected)
    s.close()


OPS = ["inspect", "verify", "verify-sha256", "load", "load-verified"]
VARIANTS = ["manifest", "dtype", "dtype-same-crc", "data", "data-same-crc", "other-file"]
# which version each request gets: any pattern, or one version up to some request and the other after it
_patterns = st.lists(st.booleans(), min_size=1, max_size=24) | st.builds(
    lambda k, first: [first] * k + [not first] * 24, st.integers(1, 6), st.booleans()
)


@settings(max_examples=int(os.environ.get("DISTILLGAN_HOSTILE_EXAMPLES", "150")) // 3, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(variant=st.sampled_from(VARIANTS), picks=_patterns)
def test_split_view_gives_an_error_or_exactly_one_version(split_view: SplitView, variant: str, picks: list[bool]) -> None:
    """Whatever mix of versions the server sends, request by request, every reader gives a DistillganError or exactly
    one version's result; with a pinned SHA-256, only the genuine one's."""
    server, genuine, variants, expected = split_view.server, split_view.genuine, split_view.variants, split_view.expected
    versions = [Bytes(genuine), Bytes(variants[variant])]
    sha = hashlib.sha256(genuine).hexdigest()
    url = server.add("/split.distillgan", genuine)
    for op in OPS:
        base = len(server.log)

        def hook(req: Request, base: int = base) -> bool:
            i = req.index - base
            req.data = versions[picks[i]] if i < len(picks) else versions[0]
            return False

        server.hook = hook
        outcome = _outcome(lambda t, op=op: _result(op, t, sha), url)
        if isinstance(outcome, str):  # a DistillganError's code
            continue
        allowed = [expected[(op, "genuine")]] + ([] if op == "verify-sha256" else [expected[(op, variant)]])
        assert outcome in allowed, (op, variant, picks)


def _cli_error(*args: str) -> str:
    """Run ``distillgan ARGS`` in a subprocess; it must fail with exit 1 and exactly one ``error [CODE]`` line."""
    r = subprocess.run([sys.executable, "-m", "distillgan", *args], capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, (r.returncode, r.stderr[-2000:])
    assert lines[0].startswith("distillgan: error ["), lines
    return lines[0][len("distillgan: error [") :].split("]", 1)[0]


@pytest.mark.parametrize(
    "location",
    ["http://127.0.0.1:99999/m.distillgan", "http://127.0.0.1:x/m.distillgan", "http://[::1/m.distillgan",
     "http://[zz]/m.distillgan", "http:///m.distillgan"],
    ids=["port-out-of-range", "port-not-a-number", "broken-ipv6", "bad-ipv6-literal", "no-host"],
)
def test_a_redirect_to_a_url_that_cannot_be_requested_is_remote_redirect(server: Server, location: str) -> None:
    def hook(req: Request) -> bool:
        raw_response(req.handler, 302, {"Location": location, "Content-Length": "0"})
        return True

    server.hook = hook
    with pytest.raises(DistillganError) as exc:
        inspect(server.url("/m.distillgan"))
    assert exc.value.code == "remote-redirect", exc.value
    assert _cli_error("inspect", server.url("/m.distillgan")) == "remote-redirect"


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/m.distillgan", "http://[::1/m.distillgan", "https://:443/x.distillgan"])
def test_a_url_that_cannot_be_requested_is_refused_before_any_request(url: str) -> None:
    with pytest.raises(DistillganError) as exc:
        inspect(url)
    assert exc.value.code == "invalid-input", exc.value
    assert _cli_error("inspect", url) == "invalid-input"


def test_a_non_ascii_path_is_requested_percent_encoded(server: Server, tmp_path: Path) -> None:
    genuine = _model(tmp_path, "genuine", mib=1)
    server.add("/mod%C3%A8les/pi%C3%A0no%201.distillgan", genuine)
    url = server.url("/modèles/piàno 1.distillgan")
    assert inspect(url)["manifest"]["metadata"]["name"] == "genuine"
    assert {r["path"] for r in server.log} == {"/mod%C3%A8les/pi%C3%A0no%201.distillgan"}

    def hook(req: Request) -> bool:  # a server's Location may carry raw UTF-8 too
        if req.path == "/old.distillgan":
            req.handler.send_response(302)
            req.handler.send_header("Location", "/modèles/piàno 1.distillgan")
            req.handler.send_header("Content-Length", "0")
            req.handler.end_headers()
            return True
        return False

    server.hook = hook
    digest = hashlib.sha256(genuine).hexdigest()
    assert verify(server.url("/old.distillgan"), sha256=digest)["sha256"] == digest
