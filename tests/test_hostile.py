"""Hostile input: mutated archives never escape the error model, never hang, never blow up memory.

Property: for any bytes derived from a valid archive, ``inspect``, ``verify``
and ``open_archive(...).tensors(...)`` either succeed or raise
``DistillganError`` — nothing else — each within a second. Mutations work at
three depths: raw bytes (flips, truncations, insertions, splices), container
fields, and member contents repacked with correct CRCs, sizes and padding so
that the manifest and safetensors layers are reached. Then: rejecting every
invalid conformance vector runs no pickle machinery and compiles nothing
(audit hooks), and allocates little (tracemalloc).
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import torch  # imported up front: the first tensors() call must not pay for it inside a deadline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import distillgan
from distillgan import DistillganError, conformance
from distillgan.container import ContainerWriter

VECTORS = conformance.default_vectors_dir()
INDEX = json.loads((VECTORS / "index.json").read_text(encoding="utf-8"))["vectors"]
VALID = [(VECTORS / v["file"]).read_bytes() for v in INDEX if v["valid"]]
INVALID_PATHS = [str(VECTORS / v["file"]) for v in INDEX if not v["valid"]]
MEMORY_LIMIT = 64 << 20
# No wall-clock bounds here: on a shared 2-core machine they fail for reasons that are not the
# reader's (they did). Work is bounded by memory (tracemalloc) and by the file size; speed lives
# in bench/ and the fuzzing record; a hang still fails the run through CI's own time limit.
HYPOTHESIS = settings(
    max_examples=int(os.environ.get("DISTILLGAN_HOSTILE_EXAMPLES", "150")),
    deadline=None,
    derandomize=True,  # the same examples on every run: a CI failure reproduces locally
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- the property ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="distillgan-hostile-") as tmp:
        yield Path(tmp) / "input.distillgan"


def read_all_ways(path: Path) -> None:
    """Run every reader entry point on ``path``; anything but success or DistillganError propagates."""
    for entry in (_inspect, _verify, _load_tensors):
        try:
            entry(path)
        except DistillganError as e:
            assert isinstance(e.code, str) and e.code, f"{entry.__name__}: error without a code: {e!r}"


def _inspect(path: Path) -> None:
    json.dumps(distillgan.inspect(path))  # the description must be JSON-serialisable too


def _verify(path: Path) -> None:
    distillgan.verify(path)


def _load_tensors(path: Path) -> None:
    with distillgan.open_archive(path) as archive:
        for member in archive.manifest["members"]:
            archive.tensors(member)


def check(scratch: Path, data: bytes) -> None:
    scratch.write_bytes(data)
    read_all_ways(scratch)


# --- building blocks ------------------------------------------------------------------------


def members_of(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def repack(members: list[tuple[str, bytes]]) -> bytes:
    """A profile-correct container (CRC, sizes, padding) around arbitrary member bytes."""
    f = io.BytesIO()
    writer = ContainerWriter(f)
    for name, body in members:
        writer.write_member(name, len(body), [body])
    writer.finish()
    return f.getvalue()


def with_sizes(members: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Update the manifest's member sizes (when it still decodes) so cross-checks are reached."""
    try:
        manifest = msgpack.unpackb(members[0][1], raw=False, strict_map_key=False)
        for name, body in members[1:]:
            manifest["members"][name]["size"] = len(body)
        return [(members[0][0], msgpack.packb(manifest, use_bin_type=True))] + members[1:]
    except (ValueError, KeyError, TypeError, IndexError):  # the manifest no longer decodes or has no such member
        return members


valid_archives = st.sampled_from(VALID)
interesting_ints = st.sampled_from([0, 1, 2, 3, 7, 8, 63, 64, 65, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x10000,
                                    0x7FFFFFFF, 0xFFFFFFFF, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -1, -(2**63)])
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | interesting_ints | st.floats() | st.text(max_size=12)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | interesting_ints | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12) | st.sampled_from(["F32", "BOOL", "U8", "F8_E4M3", "C64", "__metadata__", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _edit(obj: Any, path: tuple[Any, ...], action: str, value: Any, key: str) -> Any:
    """Replace, delete or add under ``path`` in a decoded document (returns the new root)."""
    if not path:
        return value if action == "replace" else obj
    parent = obj
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif isinstance(parent[last], dict):
        parent[last][key] = value
    elif isinstance(parent[last], list):
        parent[last].append(value)
    return obj


# --- raw bytes ------------------------------------------------------------------------------


@HYPOTHESIS
@given(data=valid_archives, flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 7)), min_size=1, max_size=4))
def test_bit_flips(scratch: Path, data: bytes, flips: list[tuple[int, int]]) -> None:
    buf = bytearray(data)
    for pos, bit in flips:
        buf[pos % len(buf)] ^= 1 << bit
    check(scratch, bytes(buf))


@HYPOTHESIS
@given(data=valid_archives, cut=st.integers(0, 1 << 20), from_end=st.booleans())
def test_truncations(scratch: Path, data: bytes, cut: int, from_end: bool) -> None:
    cut %= len(data)
    check(scratch, data[cut:] if from_end else data[:cut])


@HYPOTHESIS
@given(data=valid_archives, pos=st.integers(0, 1 << 20), insert=st.binary(min_size=1, max_size=64), replace=st.integers(0, 8))
def test_insertions(scratch: Path, data: bytes, pos: int, insert: bytes, replace: int) -> None:
    pos %= len(data) + 1
    check(scratch, data[:pos] + insert + data[pos + replace :])


@HYPOTHESIS
@given(a=valid_archives, b=valid_archives, cuts=st.lists(st.integers(0, 1 << 20), min_size=4, max_size=4))
def test_splices(scratch: Path, a: bytes, b: bytes, cuts: list[int]) -> None:
    i, j = sorted(c % (len(a) + 1) for c in cuts[:2])
    k, m = sorted(c % (len(b) + 1) for c in cuts[2:])
    check(scratch, a[:i] + b[k:m] + a[j:])


# --- container fields -----------------------------------------------------------------------


def _field_offsets(data: bytes) -> list[tuple[int, int]]:
    """(offset, width) of every fixed field of the local headers, directory entries and end record."""
    fields = []
    widths_local = [4, 2, 2, 2, 2, 2, 4, 4, 4, 2, 2]
    widths_central = [4, 2, 2, 2, 2, 2, 2, 4, 4, 4, 2, 2, 2, 2, 2, 4, 4]
    widths_eocd = [4, 2, 2, 2, 2, 4, 4, 2]
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = z.infolist()
    eocd = len(data) - 22
    _, _, _, _, n, _cd_size, cd_off, _ = struct.unpack_from("<4sHHHHIIH", data, eocd)
    starts = [(i.header_offset, widths_local) for i in infos] + [(eocd, widths_eocd)]
    pos = cd_off
    for _ in range(n):
        starts.append((pos, widths_central))
        nlen, xlen, klen = struct.unpack_from("<HHH", data, pos + 28)
        pos += 46 + nlen + xlen + klen
    for start, widths in starts:
        off = start
        for w in widths:
            fields.append((off, w))
            off += w
    return fields


@HYPOTHESIS
@given(data=valid_archives, picks=st.lists(st.tuples(st.integers(0, 1 << 16), interesting_ints | st.integers(0, 2**32 - 1)),
                                           min_size=1, max_size=3))
def test_container_field_edits(scratch: Path, data: bytes, picks: list[tuple[int, int]]) -> None:
    fields = _field_offsets(data)
    buf = bytearray(data)
    for which, value in picks:
        off, width = fields[which % len(fields)]
        buf[off : off + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
    check(scratch, bytes(buf))


# --- member contents, repacked with correct CRCs ---------------------------------------------


@HYPOTHESIS
@given(data=valid_archives, which=st.integers(0, 2), pos=st.integers(0, 1 << 20), insert=st.binary(max_size=16),
       drop=st.integers(0, 16), flip=st.integers(0, 255), fix_sizes=st.booleans())
def test_member_byte_edits(scratch: Path, data: bytes, which: int, pos: int, insert: bytes, drop: int, flip: int, fix_sizes: bool) -> None:
    members = members_of(data)
    name, body = members[which % len(members)]
    pos %= len(body) + 1
    edited = bytearray(body[:pos] + insert + body[pos + drop :])
    if edited and flip:
        edited[pos % len(edited)] ^= flip
    members[which % len(members)] = (name, bytes(edited))
    check(scratch, repack(with_sizes(members) if fix_sizes else members))


@HYPOTHESIS
@given(data=valid_archives, choice=st.data(), value=msgpack_values, key=st.text(max_size=8),
       action=st.sampled_from(["replace", "replace", "delete", "add"]))
def test_manifest_edits(scratch: Path, data: bytes, choice: st.DataObject, value: Any, key: str, action: str) -> None:
    members = members_of(data)
    manifest = msgpack.unpackb(members[0][1], raw=False, strict_map_key=False)
    path = choice.draw(st.sampled_from(list(_paths(manifest))))
    if action == "delete" and not path:
        action = "replace"
    manifest = _edit(manifest, path, action, value, key)
    members[0] = (members[0][0], msgpack.packb(manifest, use_bin_type=True))
    check(scratch, repack(members))


@HYPOTHESIS
@given(data=valid_archives, choice=st.data(), value=json_values, key=st.text(max_size=8),
       action=st.sampled_from(["replace", "replace", "delete", "add"]), pad=st.booleans())
def test_safetensors_header_edits(scratch: Path, data: bytes, choice: st.DataObject, value: Any, key: str, action: str, pad: bool) -> None:
    members = members_of(data)
    which = choice.draw(st.integers(1, len(members) - 1))
    name, body = members[which]
    (n,) = struct.unpack_from("<Q", body, 0)
    header = json.loads(body[8 : 8 + n])
    path = choice.draw(st.sampled_from(list(_paths(header))))
    if action == "delete" and not path:
        action = "replace"
    header = _edit(header, path, action, value, key)
    text = json.dumps(header, ensure_ascii=choice.draw(st.booleans())).encode("utf-8", "surrogatepass")
    if pad:
        text += b" " * ((-(8 + len(text))) % 64)
    members[which] = (name, struct.pack("<Q", len(text)) + text + body[8 + n :])
    check(scratch, repack(with_sizes(members)))


# --- limits that no small vector reaches (FORMAT.md §8) ----------------------------------------


def _raises(path: Path, code: str) -> None:
    for entry in (distillgan.inspect, distillgan.verify):
        tracemalloc.start()
        try:
            with pytest.raises(DistillganError) as e:
                entry(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert e.value.code == code, str(e.value)
        assert peak < MEMORY_LIMIT + 2 * path.stat().st_size, f"{entry.__name__} allocated {peak >> 20} MiB"


@pytest.mark.parametrize(("extra", "code"), [(0, "zip-eocd"), (1, "file-too-large")])
def test_file_size_limit(tmp_path: Path, extra: int, code: str) -> None:
    """MAX_FILE_BYTES (FORMAT.md §8, §13.1 F3): a sparse file of exactly 1 TiB is read (its end record decides), one byte more is not.

    Not a vector: hashing 1 TiB for index.json (and the runner's check of it) would take an hour.
    """
    path = tmp_path / "huge.distillgan"
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04")
        f.truncate(distillgan.source.MAX_FILE_BYTES + extra)  # sparse: no disk space used
    for entry in (distillgan.inspect, distillgan.verify):
        with pytest.raises(DistillganError) as e:
            entry(path)
        assert e.value.code == code, str(e.value)


def test_manifest_over_the_limit(tmp_path: Path) -> None:
    members = members_of(VALID[0])
    manifest = msgpack.unpackb(members[0][1], raw=False, strict_map_key=False)
    manifest["training_config"]["filler"] = "x" * distillgan.manifest.MAX_MANIFEST_BYTES
    path = tmp_path / "big-manifest.distillgan"
    path.write_bytes(repack([(members[0][0], msgpack.packb(manifest))] + members[1:]))
    _raises(path, "manifest-too-large")


@pytest.mark.parametrize("count", [16, 17])
def test_tensor_count_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """MAX_TENSORS (1 048 576) scaled down to 16: at the limit accepted, one past refused by both parsers.

    The real boundary (a header of MAX_TENSORS + 1 tensors) is in ``generate.py --large``.
    """
    monkeypatch.setattr(distillgan.tensors, "MAX_TENSORS", 16)
    names = [f"t{i}" for i in range(count)]
    header = {name: {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]} for name in names}
    text = json.dumps(header, separators=(",", ":")).encode()
    body = struct.pack("<Q", len(text)) + text
    raw = msgpack.unpackb(members_of(VALID[0])[0][1], raw=False, strict_map_key=False)
    raw["state_dict"] = {"$": "tensors", "prefix": "", "keys": names}
    raw["members"]["model.safetensors"] = {"aliases": {}, "size": len(body)}
    path = tmp_path / "many-tensors.distillgan"
    path.write_bytes(repack([("manifest.msgpack", msgpack.packb(raw, use_bin_type=True)), ("model.safetensors", body)]))
    if count > 16:
        for entry in (distillgan.inspect, distillgan.verify):
            with pytest.raises(DistillganError) as e:
                entry(path)
            assert e.value.code == "st-header-size", str(e.value)
        assert distillgan.tensors._fast_header(text, 0) is None
    else:
        assert len(distillgan.inspect(path)["tensors"]["model.safetensors"]) == 16
        assert distillgan.tensors._fast_header(text, 0) is not None


def test_central_directory_over_the_limit(tmp_path: Path) -> None:
    data = VALID[0]
    eocd = len(data) - 22
    _, _, _, _, n, cd_size, cd_off, _ = struct.unpack_from("<4sHHHHIIH", data, eocd)
    filler = bytes(70 << 10)  # a directory that ends where the end record starts but is over 64 KiB
    big = data[:eocd] + filler + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, cd_size + len(filler), cd_off, 0)
    path = tmp_path / "big-directory.distillgan"
    path.write_bytes(big)
    _raises(path, "zip-layout")


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x02" + b"N" * (4 << 20) + b".",  # 4 Mi opcodes: the opcode budget must stop the walk
        b"\x80\x04" + b"\x95" + struct.pack("<Q", 2**63) + b"N.",  # a frame declaring 2^63 bytes
        b"\x80\x02" + b"X" + struct.pack("<I", 0xFFFFFFF0) + b"short",  # a string declaring 4 GiB
        b"\x80\x05" + b"(" * 100_000 + b".",  # 100k MARKs
        (b"\x80\x02N." * 10) + b"\x80\x02" + b"\x8a\x04" + b"\xff" * 4,  # many pickles in a row, then a torn one
    ],
    ids=["many-opcodes", "huge-frame", "huge-string", "many-marks", "pickle-chain"],
)
def test_pickle_scans_are_bounded(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "x.distillgan"
    path.write_bytes(data)
    _raises(path, "pickle")


# --- audit hooks: rejection runs nothing ---------------------------------------------------------

_AUDIT_SCRIPT = r"""
import json, sys
import distillgan
from distillgan import DistillganError, verify

paths, warm = json.loads(sys.argv[1]), sys.argv[2]
verify(warm)  # the valid path's lazy imports happen before the hook is installed
WATCH = ("pickle.find_class", "exec", "compile", "import", "os.system", "subprocess.Popen", "os.exec", "os.posix_spawn",
         "os.fork", "ctypes.dlopen", "marshal.loads", "socket.connect", "urllib.Request")
events = []
current = [None]

def hook(event, args):
    if event in WATCH or event.startswith("os.exec"):
        events.append([event, ascii(args)[:300], current[0]])

sys.addaudithook(hook)
accepted = []
for p in paths:
    current[0] = p
    try:
        verify(p)
    except DistillganError:
        continue
    accepted.append(p)
current[0] = "control"
import collections, pickle  # positive control: the hook must see a find_class done on purpose
pickle.loads(pickle.dumps(collections.OrderedDict))
print(json.dumps({"events": events, "accepted": accepted, "torch": "torch" in sys.modules}))
"""

# Imports that may happen while rejecting: codec modules looked up by name (pickletools decodes some
# string opcodes with them). Anything else imported lazily on an error path is a finding.
IMPORT_ALLOWLIST = ("encodings.",)


def test_rejection_runs_no_untrusted_code() -> None:
    warm = str(VECTORS / next(v["file"] for v in INDEX if v["valid"]))
    proc = subprocess.run(
        [sys.executable, "-c", _AUDIT_SCRIPT, json.dumps(INVALID_PATHS), warm],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    control = [e for e in out["events"] if e[2] == "control"]
    assert any(event == "pickle.find_class" for event, _, _ in control), "the audit hook saw nothing: the test is blind"
    bad = []
    for event, args, path in (e for e in out["events"] if e[2] != "control"):
        if event == "import":
            module = args.split("'")[1] if "'" in args else args
            if any(module.startswith(prefix) for prefix in IMPORT_ALLOWLIST):
                continue
        bad.append((event, args, path and Path(path).name))
    assert not bad, f"audit events while rejecting invalid vectors: {bad[:10]}"
    assert not out["torch"], "rejecting files imported torch"
    assert out["accepted"] == [], "invalid vectors accepted by verify"


# --- memory ---------------------------------------------------------------------------------------


def test_rejection_allocates_little() -> None:
    worst: list[tuple[int, str]] = []
    for path in INVALID_PATHS:
        tracemalloc.start()
        try:
            distillgan.verify(path)
        except DistillganError:
            pass
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        worst.append((peak, Path(path).name))
    worst.sort(reverse=True)
    assert worst[0][0] < MEMORY_LIMIT, f"peak allocations: {worst[:5]}"


_BOOL_RSS = r"""
import json, sys
import torch, distillgan

def peak_kib():  # this process's own peak (ru_maxrss would include the parent's, copied at fork)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

path, copy = sys.argv[1], sys.argv[2] == "copy"
before = peak_kib()
loaded = distillgan.load_model(path, copy=copy)
t = loaded.state_dict["mask"]
after = peak_kib()
print(json.dumps({"growth_mib": (after - before) / 1024, "dtype": str(t.dtype), "numel": t.numel()}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM is read from Linux's /proc")
@pytest.mark.parametrize("copy", [False, True], ids=["mapped", "copy"])
def test_loading_a_large_bool_tensor_checks_its_bytes_in_bounded_memory(tmp_path: Path, copy: bool) -> None:
    """The 0/1 check of a BOOL tensor (FORMAT.md §5.3) costs a few MiB of scratch, not a second tensor."""
    mib = 128
    mask = torch.zeros(mib << 20, dtype=torch.bool)
    mask[::4096] = True
    path = distillgan.save_model({"mask": mask}, {}, {}, distillgan.ModelMetadata(name="b"), tmp_path / "m")
    del mask
    r = subprocess.run([sys.executable, "-c", _BOOL_RSS, str(path), "copy" if copy else "map"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["dtype"] == "torch.bool" and got["numel"] == mib << 20
    # before: the whole tensor compared at once (128 MiB of scratch) on top of every mapped page touched or the
    # copy (128 MiB): 265 MiB. Now: the 8 MiB read buffer and its copy (mapped; ~20 MiB), or the copy and ~11 MiB
    limit = (mib if copy else 0) + 48
    assert got["growth_mib"] < limit, got
