"""The fast readers agree with the reference readers (FORMAT.md §4.2, §5.1), and hostile work is linear.

``tensors._fast_header`` (msgspec, whole-header checks) only ever accepts; when it does, the
strict parser must accept the same header with the same table. ``manifest.unpack`` (msgpack in
C plus a walk of the decoded tree) must raise exactly the defect that the byte-by-byte reference
``manifest._scan`` names first. Both differentials run on every vector's member and on
hypothesis mutations of them. Work is measured by counting calls, never by the clock.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from datetime import timedelta
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distillgan import DistillganError, conformance, manifest, tensors, values

VECTORS = conformance.default_vectors_dir()
INDEX = json.loads((VECTORS / "index.json").read_text(encoding="utf-8"))["vectors"]
SETTINGS = settings(
    max_examples=int(os.environ.get("DISTILLGAN_HOSTILE_EXAMPLES", "150")) * 2,
    deadline=timedelta(seconds=5),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _members(path: str) -> list[tuple[str, bytes]]:
    try:
        with zipfile.ZipFile(path) as z:
            return [(i.filename, z.read(i)) for i in z.infolist()]
    except Exception:  # noqa: BLE001 - invalid vectors include things zipfile cannot read
        return []


MANIFESTS = []
HEADERS = []
for _v in INDEX:
    for _name, _body in _members(str(VECTORS / _v["file"])):
        if _name == "manifest.msgpack":
            MANIFESTS.append(_body)
        elif _name.endswith(".safetensors") and len(_body) >= 8:
            (_n,) = struct.unpack_from("<Q", _body, 0)
            if 8 + _n <= len(_body) and _n < 1 << 20:
                HEADERS.append((_body[8 : 8 + _n], len(_body) - 8 - _n))


# --- safetensors headers -----------------------------------------------------------------------


def _strict(raw: bytes, data_size: int) -> Any:
    try:
        infos, metadata = tensors._strict_header(raw, data_size, "x")
    except DistillganError as e:
        return e.code
    return sorted(infos), metadata


def _same_verdict(raw: bytes, data_size: int) -> None:
    fast = tensors._fast_header(raw, data_size)
    strict = _strict(raw, data_size)
    if fast is not None:
        assert not isinstance(strict, str), f"fast path accepted what the strict parser refuses with {strict}: {raw[:200]!r}"
        assert (sorted(fast[0]), fast[1]) == strict


@pytest.mark.parametrize("index", range(len(HEADERS)))
def test_fast_header_agrees_on_every_vector(index: int) -> None:
    _same_verdict(*HEADERS[index])


def test_fast_header_takes_the_common_headers() -> None:
    """The fast path is not vacuous: canonical headers, foreign ones with metadata, zero-size tensors."""
    taken = sum(tensors._fast_header(raw, size) is not None for raw, size in HEADERS)
    assert taken > len(HEADERS) // 2
    meta = b'{"__metadata__":{"format":"pt","a:b":"c:d"},"x:y":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    assert tensors._fast_header(meta, 4) is not None


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
        b'{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
        b'{"__metadata__":{"k":"v","k":"v"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
        b'{"__metadata__":{},"__metadata__":{},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
        b'{"a\\u003a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a:":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
        b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[-0,4]}}',
    ],
    ids=["tensor", "field", "metadata-key", "metadata", "escaped-colon", "negative-zero"],
)
def test_fast_header_never_takes_duplicates_or_negative_zero(raw: bytes) -> None:
    assert tensors._fast_header(raw, 4) is None
    assert isinstance(_strict(raw, 4), str)


json_scalars = st.one_of(
    st.sampled_from(["F32", "U8", "BOOL", "F64", "I16", "F99", "", "__metadata__", ":", "a:b"]),
    st.integers(-3, 40), st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64, -0.0, 1.5]), st.none(), st.booleans(),
    st.text(max_size=4),
)
json_trees = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                          max_leaves=6)


@SETTINGS
@given(data=st.data())
def test_fast_header_differential(data: st.DataObject) -> None:
    raw, size = data.draw(st.sampled_from(HEADERS))
    text = raw.rstrip(b" ")
    choice = data.draw(st.integers(0, 3))
    if choice == 0:  # a byte edit of the JSON text
        pos = data.draw(st.integers(0, max(0, len(text) - 1)))
        text = text[:pos] + data.draw(st.sampled_from([b":", b",", b'"', b"-0", b"0", b"\\u003a", b"}", b"[", b" ", b"x"])) + text[pos + 1 :]
    else:  # a structural edit of the decoded header
        try:
            header = json.loads(text)
        except (ValueError, RecursionError):
            header = {}
        if isinstance(header, dict) and header:
            key = data.draw(st.sampled_from(sorted(header)))
            value = data.draw(json_trees)
            if choice == 1 and isinstance(header[key], dict) and header[key]:
                field = data.draw(st.sampled_from(sorted(header[key])))
                header[key][field] = value
            elif choice == 2:
                header[data.draw(st.text(max_size=5))] = value
            else:
                header = {k: header[k] for k in reversed(list(header))}
        text = json.dumps(header, ensure_ascii=data.draw(st.booleans())).encode("utf-8", "surrogatepass")
        if data.draw(st.booleans()) and text.endswith(b"}") and len(text) > 2:  # duplicate the last member
            body = text[1:-1]
            last = body.rsplit(b', "', 1)[-1]
            text = b"{" + body + b', "' + last + b"}" if not last.startswith(b"{") else text
    _same_verdict(text, size)


# --- manifests -----------------------------------------------------------------------------------


def _fast_code(data: bytes) -> str | None:
    try:
        manifest.unpack(data)
    except DistillganError as e:
        return e.code
    return None


def _reference_code(data: bytes) -> str | None:
    err = manifest._scan(data)
    return None if err is None else err.code


@pytest.mark.parametrize("index", range(len(MANIFESTS)))
def test_unpack_agrees_with_the_byte_scan_on_every_vector(index: int) -> None:
    assert _fast_code(MANIFESTS[index]) == _reference_code(MANIFESTS[index])


@SETTINGS
@given(data=st.data())
def test_unpack_differential(data: st.DataObject) -> None:
    body = bytearray(data.draw(st.sampled_from(MANIFESTS)))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(body)))
        action = data.draw(st.integers(0, 3))
        piece = data.draw(st.sampled_from([b"\xc1", b"\xd4\x05\x00", b"\xd6\xff\x00\x00\x00\x01", b"\xca", b"\xc0", b"\x91", b"\x81\xc0\xc0",
                                           b"\x82\xa1a\xc0\xa1a\xc0", b"\xa2\xff\xfe", b"\x91" * 70, b"\x91" * 1100, b"\xdd\xff\xff\xff\xff",
                                           b"\x81\x91\xc0\xc0", b"\x82\x01\xc0\xc3\xc0", bytes(data.draw(st.binary(max_size=4)))]))
        if action == 0:
            body[pos:pos] = piece
        elif action == 1:
            body[pos : pos + len(piece)] = piece
        elif action == 2:
            del body[pos : pos + data.draw(st.integers(1, 8))]
        elif body:
            body[pos % len(body)] ^= 1 << data.draw(st.integers(0, 7))
    assert _fast_code(bytes(body)) == _reference_code(bytes(body))


@pytest.mark.parametrize(
    ("doc", "code"),
    [
        (b"\x82\xa1a\xd4\x05\x00\xa1a\xc0", "manifest-ext-type"),  # ext in the first value, then the duplicate key
        (b"\x83\xa1a\xc0\xa1a\xc0\xa1b\xd4\x05\x00", "manifest-duplicate-key"),
        (b"\x81\xa1a" + b"\x91" * 64 + b"\xc0", "manifest-depth"),
        (b"\x81\xa1a" + b"\x91" * 63 + b"\xc0", None),
        (b"\x82\xa1a" + b"\x91" * 2000 + b"\x90" + b"\xc1", "manifest-depth"),
        (b"\x82\xc3\xc0\xa2\xff\xfe\xc0", "manifest-type"),
        (b"\x82\xa2\xff\xfe\xc0\xc3\xc0", "manifest-msgpack"),
        (b"\x82\x01\xc0\xc3\xc0", "manifest-type"),  # true after 1: a bool key, not a duplicate
        (b"\x82\x01\xc0\xd0\x01\xc0", "manifest-duplicate-key"),  # 1 as fixint and as int8
        (b"\x82\x01\xc0\xa11\xc0", None),  # 1 and "1" are different keys
        (b"\x81\xa1a\xc0\xc0", "manifest-msgpack"),
        (b"", "manifest-msgpack"),
    ],
)
def test_decode_order_by_example(doc: bytes, code: str | None) -> None:
    assert _reference_code(doc) == code
    assert _fast_code(doc) == code


# --- linear work on hostile manifests (counted, not timed) -----------------------------------------


def _count_calls(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    calls = [0]
    original = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def _nils_manifest(n: int, slot: str = "training_config") -> bytes:
    raw = msgpack.unpackb(next(m for m in MANIFESTS if len(m) < 4096), raw=False, strict_map_key=False)
    raw[slot] = {"nils": [None] * n, "lists": [[None]] * (n // 8)}
    return msgpack.packb(raw, use_bin_type=True)


@pytest.mark.parametrize("invalid", [False, True], ids=["valid", "invalid-at-the-end"])
def test_manifest_work_is_linear(monkeypatch: pytest.MonkeyPatch, invalid: bool) -> None:
    """Decoding a manifest of N nils renders no path per value and walks each container once."""
    renders = _count_calls(monkeypatch, values, "render_path")
    mrenders = _count_calls(monkeypatch, manifest, "render_path")
    walks = _count_calls(monkeypatch, manifest, "_walk")
    decs = _count_calls(monkeypatch, values.Decoder, "_dec")
    counts = []
    for n in (1 << 10, 1 << 17):
        renders[0] = mrenders[0] = walks[0] = decs[0] = 0
        data = _nils_manifest(n)
        if invalid:
            data += b"\xc1"
        try:
            manifest.decode_manifest(data)
        except DistillganError as e:
            assert e.code == "manifest-msgpack"
        counts.append((renders[0] + mrenders[0], walks[0], decs[0]))
    (r1, w1, d1), (r2, w2, d2) = counts
    assert r1 <= 1 and r2 <= 1, counts  # a path is rendered only for the error reported
    ratio = (1 << 17) / (1 << 10)
    assert w2 <= ratio * max(w1, 1) * 1.1 and d2 <= ratio * max(d1, 1) * 1.1, counts


def test_inspect_of_a_hostile_manifest_at_the_limit_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1 MiB manifest of nils: one walk of the tree, no per-value path (a per-value path once took 18-44 s here)."""
    data = _nils_manifest(1 << 20)
    assert len(data) > 1 << 20
    renders = _count_calls(monkeypatch, manifest, "render_path")
    scans = _count_calls(monkeypatch, manifest, "_scan")
    with pytest.raises(DistillganError):
        manifest.decode_manifest(data + b"\xc0")
    assert renders[0] == 0 and scans[0] == 0


def test_archive_round_trip_through_zipfile() -> None:
    """Sanity: the vectors this module reads are real archives."""
    assert MANIFESTS and HEADERS
    assert zipfile.ZipFile(io.BytesIO((VECTORS / "valid" / "minimal.distillgan").read_bytes())).testzip() is None


class _CountingBytes(bytes):
    """bytes that count item and slice reads: the reference scan's work, without a clock."""

    reads = 0

    def __getitem__(self, key: Any) -> Any:
        type(self).reads += 1
        return bytes.__getitem__(self, key)


@pytest.mark.parametrize("item", [b"\xc0", b"\xc0\xcc\x01", b"\xa1a", b"\x91\xc0"], ids=["nil", "nil-uint8", "fixstr", "array"])
def test_reference_scan_is_linear(item: bytes) -> None:
    """The byte scan (run only when msgpack itself stops) reads each item a bounded number of times."""
    reads = []
    for n in (1 << 10, 1 << 14):
        data = _CountingBytes(b"\x81\xa1a\xdd" + (n + 1).to_bytes(4, "big") + item * n + b"\xc1")
        _CountingBytes.reads = 0
        err = manifest._scan(data)
        assert err is not None and err.code == "manifest-msgpack"
        reads.append(_CountingBytes.reads)
    assert reads[1] <= 16 * reads[0] * 1.05 + 64, reads
