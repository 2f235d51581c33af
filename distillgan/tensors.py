"""safetensors members: header layout, strict header validation, tensors as views (FORMAT.md §5).

Header parsing and the dtype table need no torch, so ``inspect`` stays
torch-free; the functions that make or read tensors import torch lazily.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import re
import struct
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from .errors import DistillganError, InputError, TensorError

if TYPE_CHECKING:
    import torch

ALIGNMENT = 64  # FORMAT.md §5.2: the canonical header pads tensor data to this boundary
MAX_HEADER_BYTES = 100_000_000  # FORMAT.md §8: safetensors' own limit (its MAX_HEADER_SIZE)
MAX_HEADER_DEPTH = 3  # FORMAT.md §8: JSON nesting; a header needs 3 (object, tensor object, shape array)
MAX_TENSORS = 1 << 20  # FORMAT.md §8: 1 048 576 tensors per member
MAX_NAME_BYTES = 1024  # FORMAT.md §8: UTF-8 bytes of a decoded name
MAX_RANK = 32  # FORMAT.md §8
MAX_DIM = (1 << 63) - 1  # FORMAT.md §8: torch sizes are int64
U64_MAX = (1 << 64) - 1  # FORMAT.md §5.1: data_offsets are u64
METADATA_KEY = "__metadata__"
TENSOR_KEYS = frozenset({"dtype", "shape", "data_offsets"})
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 control characters

# safetensors dtype code -> (bytes per element, torch dtype attribute); FORMAT.md §5.3
DTYPES: dict[str, tuple[int, str]] = {
    "F64": (8, "float64"),
    "F32": (4, "float32"),
    "F16": (2, "float16"),
    "BF16": (2, "bfloat16"),
    "F8_E4M3": (1, "float8_e4m3fn"),
    "F8_E5M2": (1, "float8_e5m2"),
    "F8_E4M3FNUZ": (1, "float8_e4m3fnuz"),
    "F8_E5M2FNUZ": (1, "float8_e5m2fnuz"),
    "C64": (8, "complex64"),
    "I64": (8, "int64"),
    "I32": (4, "int32"),
    "I16": (2, "int16"),
    "I8": (1, "int8"),
    "U64": (8, "uint64"),
    "U32": (4, "uint32"),
    "U16": (2, "uint16"),
    "U8": (1, "uint8"),
    "BOOL": (1, "bool"),
}


_Dim = Annotated[int, msgspec.Meta(ge=0, le=MAX_DIM)]
_Offset = Annotated[int, msgspec.Meta(ge=0)]


class TensorInfo(msgspec.Struct, forbid_unknown_fields=True, gc=False, order=True):
    """One tensor of a safetensors member; ``begin``/``end`` are relative to its data section.

    It is also what the fast header parser decodes each tensor entry into (FORMAT.md §5.1): the
    JSON object of an entry is its first three fields, and the parser sets ``name`` from the key
    (an entry that holds a ``name`` key of its own fails the parser's key count and goes to the
    strict parser). Treat instances as immutable.
    """

    dtype: str
    shape: Annotated[tuple[_Dim, ...], msgspec.Meta(max_length=MAX_RANK)]
    data_offsets: tuple[_Offset, _Offset]
    name: str = ""

    @property
    def begin(self) -> int:
        return self.data_offsets[0]

    @property
    def end(self) -> int:
        return self.data_offsets[1]

    @property
    def nbytes(self) -> int:
        return self.data_offsets[1] - self.data_offsets[0]


@dataclass(frozen=True)
class TensorTable:
    """A validated safetensors header: tensors in offset order and where their data starts."""

    tensors: tuple[TensorInfo, ...]
    data_start: int  # absolute offset of the data section in the archive
    metadata: dict[str, str] | None


def valid_name(name: str) -> bool:
    """True when ``name`` passes :func:`check_name`."""
    try:
        check_name(name, "", InputError)
    except InputError:
        return False
    return True


def check_name(name: str, where: str, error: type[DistillganError] = TensorError) -> None:
    """Tensor names: 1..MAX_NAME_BYTES bytes of UTF-8, no control characters (FORMAT.md §5.4)."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError as e:
        raise error(f"{where}: tensor name {name!r} is not valid UTF-8 (FORMAT.md §5.4)", code="st-name") from e
    if not encoded or len(encoded) > MAX_NAME_BYTES:
        raise error(f"{where}: tensor name of {len(encoded)} bytes; expected 1..{MAX_NAME_BYTES} (FORMAT.md §5.4)", code="st-name")
    if _CONTROL.search(name):
        raise error(f"{where}: tensor name {name!r} contains control characters (FORMAT.md §5.4)", code="st-name")
    if name == METADATA_KEY:
        raise error(f"{where}: {METADATA_KEY!r} is reserved by safetensors", code="st-name")


# --- building ---------------------------------------------------------------------


def build_header(entries: list[tuple[str, str, tuple[int, ...]]], metadata: Mapping[str, str] | None = None) -> tuple[bytes, list[TensorInfo]]:
    """Lay out ``(name, dtype, shape)`` entries canonically (FORMAT.md §5.2).

    Tensors are ordered by element size (largest first), then by name, so each
    one starts at a multiple of its element size; the JSON is compact and
    padded with spaces so that the data section starts at a multiple of 64.
    A non-empty ``metadata`` (user metadata, already in its stored order) is
    written first as ``__metadata__``. Returns the header bytes (8-byte length
    prefix included) and the layout.
    """
    ordered = sorted(entries, key=lambda e: (-DTYPES[e[1]][0], e[0].encode("utf-8")))
    layout = []
    offset = 0
    for name, dtype, shape in ordered:
        n = DTYPES[dtype][0]
        for d in shape:
            n *= d
        layout.append(_info(name, dtype, tuple(shape), offset, offset + n))
        offset += n
    header: dict[str, Any] = {METADATA_KEY: dict(metadata)} if metadata else {}
    header.update({t.name: {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [t.begin, t.end]} for t in layout})
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * ((-(8 + len(raw))) % ALIGNMENT)
    return struct.pack("<Q", len(raw)) + raw, layout


# --- reading ----------------------------------------------------------------------
#
# Two parsers, one verdict. ``_strict_header`` is the reference: it applies the numbered rules of
# FORMAT.md §5.1 one by one and names the first that fails. ``_fast_header`` decodes the header
# with msgspec's typed JSON decoder and checks the rest with a few whole-header operations; it only
# ever *accepts*: on anything unusual (a failed decode, a duplicate-key certificate that does not
# hold, a ``-0`` token, a ``\u003a`` escape, a name or offset that needs a closer look) it returns
# None and the strict parser decides. tests/test_parsers.py checks that the two agree.

_NUMBER_SIZE = {code: size for code, (size, _) in DTYPES.items()}
_NEG_ZERO_TOKEN = re.compile(rb"[\[,][ \t\r\n]*-0")  # a -0 number token inside an array (shape, data_offsets)
_COLON_ESCAPE = re.compile(rb"\\u003[aA]")  # an escaped ':' would fool the duplicate-key certificate
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")  # bytes.translate deletes these, keeping brackets
_INNERMOST = re.compile(rb"\[\]|\{\}")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _parse_uint(token: str) -> Any:
    """``parse_int`` of the strict parser: a JSON int token, with ``-0`` and over-long tokens made harmless.

    ``-0`` is not a uint (safetensors refuses it: FORMAT.md §5.1), so it becomes a marker that
    no type check accepts; a token of more than 20 digits cannot be a u64 and becomes 2**64
    (Python's ``int()`` would refuse more than 4300 digits with an error of its own).
    """
    if token == "-0":
        return _NEGATIVE_ZERO
    digits = len(token) - (token[0] == "-")
    if digits > 20:
        return -(1 << 64) if token[0] == "-" else 1 << 64
    return int(token)


class _NegativeZero:
    """The JSON token ``-0``: a number, but not an int of any rule (FORMAT.md §5.1)."""

    def __repr__(self) -> str:
        return "-0"


_NEGATIVE_ZERO = _NegativeZero()


def _json_depth_ok(raw: bytes) -> bool:
    """True when no value of the JSON text nests deeper than MAX_HEADER_DEPTH (FORMAT.md §5.1, §8).

    Strings are blanked out, then innermost bracket pairs are removed MAX_HEADER_DEPTH times: text
    of valid JSON within the limit is then empty. Anything left is either deeper nesting or not
    JSON — both are [st-header-json], so the scan never needs to tell them apart. Linear in the
    size of the text, and without recursion.
    """
    brackets = _JSON_STRING.sub(b'""', raw).translate(None, _BRACKETS)
    for _ in range(MAX_HEADER_DEPTH):
        if not brackets:
            return True
        brackets = _INNERMOST.sub(b"", brackets)
    return not brackets


def _strings(value: Any) -> Any:
    """Every str of a decoded JSON value (keys included); depth is bounded by MAX_HEADER_DEPTH."""
    if type(value) is str:
        yield value
    elif type(value) is list:
        for v in value:
            yield from _strings(v)
    elif type(value) is dict:
        for k, v in value.items():
            yield k
            yield from _strings(v)


def _header_json(raw: bytes, where: str) -> dict[str, Any]:
    """Steps 4-7 of FORMAT.md §5.1: the header text as one JSON object, duplicates refused after syntax."""
    def bad(why: str, cause: BaseException | None = None) -> TensorError:
        err = TensorError(f"{where}: header is not valid JSON: {why} (FORMAT.md §5.1)", code="st-header-json")
        err.__cause__ = cause
        return err

    if not raw.startswith(b"{"):
        raise bad("it does not start with '{'")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad("not UTF-8", e) from e
    if not _json_depth_ok(raw):
        raise bad(f"not JSON, or nested deeper than {MAX_HEADER_DEPTH} levels (FORMAT.md §8)")
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) != len(items) and not duplicates:
            seen: set[str] = set()
            duplicates.append(next(k for k, _ in items if k in seen or seen.add(k)))  # type: ignore[func-returns-value]
        return out

    def constant(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    try:
        header = json.loads(text, object_pairs_hook=pairs, parse_constant=constant, parse_int=_parse_uint)
    except ValueError as e:
        raise bad(str(e), e) from e
    if _SURROGATE_ESCAPE.search(raw):
        for s in _strings(header):
            if not _utf8(s):
                raise bad(f"the string {s!r} holds a lone surrogate escape")
    if duplicates:
        raise TensorError(f"{where}: duplicate key {duplicates[0]!r} in the header (FORMAT.md §5.1)", code="st-duplicate-key")
    if type(header) is not dict:  # unreachable: the text starts with '{'; kept as the rule it is
        raise bad(f"it is a JSON {type(header).__name__}, not an object")
    return header


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bad_shape(where: str, name: str, shape: Any) -> TensorError:
    return TensorError(
        f"{where}: tensor {name!r}: shape {shape!r} must be an array of at most {MAX_RANK} uints in 0..{MAX_DIM} (FORMAT.md §5.1)",
        code="st-shape",
    )


def _bad_offsets(where: str, name: str, offsets: Any) -> TensorError:
    return TensorError(
        f"{where}: tensor {name!r}: data_offsets {offsets!r} must be [begin, end], two uints with begin <= end (FORMAT.md §5.1)",
        code="st-offsets",
    )


def _is_uint(v: Any) -> bool:
    return type(v) is int and 0 <= v <= U64_MAX


def _strict_header(raw: bytes, data_size: int, where: str) -> tuple[list[TensorInfo], dict[str, str] | None]:
    """FORMAT.md §5.1 steps 4-18, in order: the reference parser (any header, any defect)."""
    header = _header_json(raw, where)
    metadata = header.pop(METADATA_KEY, None)
    if metadata is not None and not (type(metadata) is dict and all(type(v) is str for v in metadata.values())):
        raise TensorError(f"{where}: {METADATA_KEY} must be an object mapping str to str (FORMAT.md §5.1)", code="st-metadata")
    if len(header) > MAX_TENSORS:
        raise TensorError(f"{where}: {len(header)} tensors; the limit is {MAX_TENSORS} (FORMAT.md §8)", code="st-header-size")
    infos = []
    for name, spec in header.items():
        check_name(name, where)
        if type(spec) is not dict or len(spec) != 3 or spec.keys() != TENSOR_KEYS:
            raise TensorError(
                f"{where}: tensor {name!r}: expected an object with exactly dtype, shape, data_offsets (FORMAT.md §5.1)",
                code="st-header-json",
            )
        dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
        itemsize = _NUMBER_SIZE.get(dtype) if type(dtype) is str else None
        if itemsize is None:
            raise TensorError(
                f"{where}: tensor {name!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)} (FORMAT.md §5.3)", code="st-dtype"
            )
        if type(shape) is not list or len(shape) > MAX_RANK or not all(type(d) is int and 0 <= d <= MAX_DIM for d in shape):
            raise _bad_shape(where, name, shape)
        if type(offsets) is not list or len(offsets) != 2 or not all(map(_is_uint, offsets)) or offsets[0] > offsets[1]:
            raise _bad_offsets(where, name, offsets)
        begin, end = offsets
        elements = math.prod(d or 1 for d in shape)  # zero dimensions count as 1: torch computes strides from the others
        if elements > MAX_DIM:
            raise TensorError(
                f"{where}: tensor {name!r}: shape {shape!r} has more than {MAX_DIM} elements "
                "(zero dimensions counted as 1; FORMAT.md §5.1)",
                code="st-shape",
            )
        expected = math.prod(shape) * itemsize
        if expected != end - begin:
            raise TensorError(
                f"{where}: tensor {name!r}: shape {shape} of {dtype} needs {expected} bytes; "
                f"data_offsets give {end - begin} (FORMAT.md §5.1)",
                code="st-shape",
            )
        infos.append(_info(name, dtype, tuple(shape), begin, end))
    _check_contiguous(infos, data_size, where)
    return infos, metadata


def _check_contiguous(infos: list[TensorInfo], data_size: int, where: str) -> None:
    """Steps 17-18 of FORMAT.md §5.1: sorted by (begin, end), contiguous from 0 to the end of the data."""
    infos.sort(key=_by_offsets)
    pos = 0
    for t in infos:
        if t.begin != pos:
            raise TensorError(
                f"{where}: tensor {t.name!r} starts at {t.begin}; expected {pos} "
                "(offsets are contiguous from 0, no gaps or overlaps; FORMAT.md §5.1)",
                code="st-offsets",
            )
        pos = t.end
    if pos != data_size:
        raise TensorError(f"{where}: tensors cover {pos} bytes; the data section holds {data_size} (FORMAT.md §5.1)", code="st-offsets")


def _by_offsets(t: TensorInfo) -> tuple[int, int]:
    return (t.begin, t.end)


# The fast path: msgspec's typed decoder checks types and ranges in C (anything it refuses goes to
# the strict parser). Field constraints only narrow what is accepted; the strict parser is the rule.
_DECODE_PLAIN = msgspec.json.Decoder(dict[str, TensorInfo])
_DECODE_RAW = msgspec.json.Decoder(dict[str, msgspec.Raw])
_DECODE_ENTRIES = msgspec.json.Decoder(list[TensorInfo])
_DECODE_METADATA = msgspec.json.Decoder(dict[str, str])
_JSON_STR = rb'"(?:[^"\\\x00-\x1f]|\\.)*"'
# safetensors writes __metadata__ first, as an object of strings: split it off so the tensors decode in one pass
_METADATA_FIRST = re.compile(rb'\{[ \t\r\n]*"__metadata__"[ \t\r\n]*:[ \t\r\n]*(\{[ \t\r\n]*(?:' + _JSON_STR + rb'[ \t\r\n]*:[ \t\r\n]*'
                             + _JSON_STR + rb'[ \t\r\n]*(?:,[ \t\r\n]*' + _JSON_STR + rb'[ \t\r\n]*:[ \t\r\n]*' + _JSON_STR
                             + rb'[ \t\r\n]*)*)?\})[ \t\r\n]*(,|\})')


def _fast_header(raw: bytes, data_size: int) -> tuple[list[TensorInfo], dict[str, str] | None] | None:
    """The table when ``raw`` certainly passes FORMAT.md §5.1 (the strict parser would accept it), else None."""
    if not raw.startswith(b"{"):
        return None
    # single-byte searches first (memchr): real headers rarely hold a '-' or a backslash at all
    if (b"-" in raw and _NEG_ZERO_TOKEN.search(raw)) or (b"\\" in raw and _COLON_ESCAPE.search(raw)):
        return None
    metadata: dict[str, str] | None = None
    try:
        first = _METADATA_FIRST.match(raw) if raw[:32].find(b'"__metadata__"') >= 0 else None
        if first is None and b'"__metadata__"' not in raw:
            table = _DECODE_PLAIN.decode(raw)
            keys_seen = len(table) * 4
        elif first is not None:  # {"__metadata__": {...}, then the tensors
            metadata = _DECODE_METADATA.decode(first.group(1))
            table = _DECODE_PLAIN.decode(b"{" + raw[first.end() :] if first.group(2) == b"," else b"{}")
            if first.group(2) == b"}" and raw[first.end() :].strip(b" \t\r\n"):
                return None
            keys_seen = 1 + len(metadata) + len(table) * 4
        else:  # __metadata__ elsewhere, or null: decode each entry's bytes, then the entries in one pass
            pieces = _DECODE_RAW.decode(raw)
            meta_raw = pieces.pop(METADATA_KEY, None)
            if meta_raw is not None:
                metadata = None if bytes(meta_raw) == b"null" else _DECODE_METADATA.decode(meta_raw)
            entries = _DECODE_ENTRIES.decode(b"[" + b",".join(pieces.values()) + b"]") if pieces else []
            table = dict(zip(pieces, entries))
            keys_seen = len(table) * 4 + (0 if meta_raw is None else 1 + (len(metadata) if metadata is not None else 0))
        names = list(table)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    if len(names) > MAX_TENSORS or METADATA_KEY in names:
        return None
    # Names (FORMAT.md §5.4), all at once: no control character, none empty, none over MAX_NAME_BYTES.
    joined = "".join(names)
    if (not joined.isprintable() and _CONTROL.search(joined)) or "" in names:  # isprintable: no control character, in C
        return None
    if names and max(map(len, names)) * 4 > MAX_NAME_BYTES and any(len(n.encode("utf-8")) > MAX_NAME_BYTES for n in names):
        return None
    # Duplicate keys: msgspec keeps the last of two equal keys. Every ':' of valid JSON is either a
    # key's separator or inside a string, so with no escaped ':' the text has exactly one ':' per key
    # seen plus those of the strings kept; any key dropped (with its value) breaks the equality.
    strings_colons = joined.count(":")
    if metadata:
        strings_colons += "".join(metadata).count(":") + "".join(metadata.values()).count(":")
    sizes = _NUMBER_SIZE
    prod = math.prod
    pos = 0
    in_order = True
    # Per tensor only what msgspec did not check: a known dtype (which has no ':' to count) and
    # byte size = elements x dtype size. begin <= end follows from it; end <= the data size and so
    # every element count <= MAX_DIM follow from contiguity, checked below.
    for name, info in table.items():
        itemsize = sizes.get(info.dtype)
        begin, end = info.data_offsets
        shape = info.shape
        elements = prod(shape)
        if itemsize is None or elements * itemsize != end - begin:
            return None
        if not elements and shape and prod(d or 1 for d in shape) > MAX_DIM:
            return None
        if begin != pos:
            in_order = False
        pos = end
        info.name = name
    infos = list(table.values())
    if raw.count(b":") != keys_seen + strings_colons:
        return None
    if in_order:
        if pos != data_size:
            return None
    else:
        try:
            _check_contiguous(infos, data_size, "")
        except TensorError:
            return None
    return infos, metadata


def parse_header(src: Any, offset: int, size: int, where: str) -> TensorTable:
    """Validate the safetensors member of ``size`` bytes at ``offset`` of source ``src`` (FORMAT.md §5.1).

    Reads only the 8-byte length and the JSON header. Raises :class:`TensorError`
    for the first rule of §5.1 that the member breaks.
    """
    if size < 8:
        raise TensorError(f"{where}: member of {size} bytes cannot hold a safetensors header (FORMAT.md §5.1)", code="st-header-size")
    (n,) = struct.unpack("<Q", src.read(offset, 8))
    if n > MAX_HEADER_BYTES:
        raise TensorError(f"{where}: header length {n}; the limit is {MAX_HEADER_BYTES} (FORMAT.md §8)", code="st-header-size")
    if 8 + n > size:
        raise TensorError(f"{where}: header length {n} runs past the member's {size} bytes (FORMAT.md §5.1)", code="st-header-size")
    raw = src.read(offset + 8, n)
    data_size = size - 8 - n
    with gc_paused():
        fast = _fast_header(raw, data_size)
        infos, metadata = fast if fast is not None else _strict_header(raw, data_size, where)
    return TensorTable(tuple(infos), offset + 8 + n, metadata)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage collection inside: a million small objects would trigger collections that find nothing to free.

    The objects made here hold no reference cycles; collection resumes (if it was on) on the way out.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _info(name: str, dtype: str, shape: tuple[int, ...], begin: int, end: int) -> TensorInfo:
    return TensorInfo(dtype, shape, (begin, end), name)


# --- torch ------------------------------------------------------------------------


_STRIDED: list[Any] = []


def _torch() -> Any:
    import torch

    if not _STRIDED:
        _STRIDED.append(torch.strided)
    if sys.byteorder != "little":
        raise InputError("distillgan stores little-endian tensors and needs a little-endian host", code="big-endian-host")
    return torch


_CODES: dict[Any, str] = {}  # torch dtype -> safetensors code, filled on first use (torch is imported lazily)


def dtype_code(dtype: torch.dtype) -> str:
    """safetensors code of a torch dtype; InputError for dtypes safetensors cannot hold."""
    if not _CODES:
        torch = _torch()
        _CODES.update({getattr(torch, tname): code for code, (_, tname) in DTYPES.items() if hasattr(torch, tname)})
    code = _CODES.get(dtype)
    if code is None:
        raise InputError(f"dtype {dtype} cannot be stored in safetensors (supported: {', '.join(DTYPES)})", code="unsupported-dtype")
    return code


def storable(t: Any) -> bool:
    """The fast path of :func:`check_storable` for a tensor: True when it passes (False: call it for the error)."""
    if not _CODES:
        dtype_code(t.dtype)  # fills the table (or raises for an unsupported dtype)
    # quantized dtypes are not in _CODES, so the dtype test covers them
    return t.dtype in _CODES and t.layout is _STRIDED[0] and not t.is_meta and t.dim() <= MAX_RANK


def torch_dtype(code: str) -> torch.dtype:
    torch = _torch()
    dtype = getattr(torch, DTYPES[code][1], None)
    if dtype is None:
        raise TensorError(f"this torch has no {DTYPES[code][1]} for safetensors dtype {code}", code="st-dtype")
    return dtype


def check_storable(t: Any, where: str) -> None:
    """InputError unless ``t`` is a dense tensor with data of a storable dtype."""
    torch = _torch()
    if not isinstance(t, torch.Tensor):
        raise InputError(f"{where}: expected a torch.Tensor, got {type(t).__name__}", code="invalid-input")
    if t.layout != torch.strided or t.is_quantized or t.device.type == "meta":
        raise InputError(
            f"{where}: {t.layout}, quantized and meta tensors cannot be stored; convert to a dense tensor first",
            code="invalid-input",
        )
    try:
        dtype_code(t.dtype)
    except InputError as e:
        raise InputError(f"{where}: {e}", code=e.code) from e
    if t.dim() > MAX_RANK:
        raise InputError(f"{where}: rank {t.dim()} is over the limit of {MAX_RANK} (FORMAT.md §8)", code="st-shape")


def plain_tensor(t: Any, where: str) -> torch.Tensor:
    """A dense, contiguous CPU tensor with the same values as ``t`` (no copy when already so)."""
    check_storable(t, where)
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    return t.contiguous()


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, without copying; ``t`` must outlive the view."""
    import ctypes

    n = t.numel() * t.element_size()
    if n == 0:
        return memoryview(b"")
    return memoryview((ctypes.c_char * n).from_address(t.data_ptr())).cast("B")


BOOL_CHECK_ELEMENTS = 1 << 20  # a BOOL tensor's bytes are checked this many at a time: bounded scratch memory


def bool_tensor_ok(t: torch.Tensor) -> bool:
    """True when every byte of a bool (or uint8) tensor is 0 or 1 (FORMAT.md §5.3).

    Checked in slices of BOOL_CHECK_ELEMENTS, so the scratch memory is 1 MiB whatever the
    tensor's size (comparing a whole 1 GiB tensor at once would allocate another 1 GiB).
    """
    torch = _torch()
    raw = t.reshape(-1).view(torch.uint8)
    return not any(bool((raw[i : i + BOOL_CHECK_ELEMENTS] > 1).any()) for i in range(0, raw.numel(), BOOL_CHECK_ELEMENTS))


def tensor_from(buf: Any, info: TensorInfo, data_start: int, where: str, *, bools_checked: bool = False) -> torch.Tensor:
    """A tensor viewing ``info``'s bytes in ``buf`` (copied only when misaligned).

    A BOOL tensor's bytes are checked to be 0 or 1 in bounded slices, unless the caller has
    already checked them (``bools_checked``: through the descriptor, so that a mapped file's
    pages are not all touched by the check).
    """
    torch = _torch()
    dtype = torch_dtype(info.dtype)
    itemsize = DTYPES[info.dtype][0]
    start = data_start + info.begin
    count = info.nbytes // itemsize
    if count == 0:
        return torch.empty(info.shape, dtype=dtype)
    if start % itemsize == 0:
        t = torch.frombuffer(buf, dtype=dtype, count=count, offset=start)
    else:  # another writer's layout: copy rather than hand out a misaligned view
        t = torch.frombuffer(bytearray(buf[start : start + info.nbytes]), dtype=dtype)
    if info.dtype == "BOOL" and not bools_checked and not bool_tensor_ok(t):
        raise TensorError(f"{where}: tensor {info.name!r} holds bool bytes other than 0 and 1 (FORMAT.md §5.3)", code="st-bool")
    return t.reshape(info.shape)


NUMPY_TYPESTR = {  # FORMAT.md §5: little-endian; the dtypes numpy has (no BF16, no F8)
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "C64": "<c8", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}  # fmt: skip


def array_from(buf: Any, info: TensorInfo, data_start: int, where: str) -> Any:
    """A numpy array viewing ``info``'s bytes in ``buf`` (copied only when misaligned); torch is not imported."""
    try:
        import numpy as np
    except ImportError as e:
        raise InputError("framework='np' needs numpy; install it, or use framework='pt'", code="numpy-unavailable") from e
    typestr = NUMPY_TYPESTR.get(info.dtype)
    if typestr is None:
        raise InputError(f"{where}: tensor {info.name!r} is {info.dtype}, which numpy has no dtype for; "
                         "load it with framework='pt'", code="invalid-input")
    itemsize = DTYPES[info.dtype][0]
    start = data_start + info.begin
    count = info.nbytes // itemsize
    if count == 0:
        return np.empty(info.shape, dtype=typestr)
    if start % itemsize == 0:
        a = np.frombuffer(buf, dtype=typestr, count=count, offset=start)
    else:  # another writer's layout: copy rather than hand out a misaligned view
        a = np.frombuffer(bytearray(buf[start : start + info.nbytes]), dtype=typestr)
    if info.dtype == "BOOL" and bool((a.view(np.uint8) > 1).any()):
        raise TensorError(f"{where}: tensor {info.name!r} holds bool bytes other than 0 and 1 (FORMAT.md §5.3)", code="st-bool")
    return a.reshape(info.shape)


def as_numpy(t: torch.Tensor) -> Any:
    """numpy array sharing a CPU tensor's memory (for arrays stored from numpy)."""
    try:
        import numpy  # noqa: F401  (torch.Tensor.numpy needs it, and says so only as a RuntimeError)
    except ImportError as e:
        raise InputError("this model stores numpy arrays; install numpy to load it", code="numpy-unavailable") from e
    return t.numpy()


def from_numpy(array: Any, where: str) -> torch.Tensor:
    torch = _torch()
    if not (array.flags.c_contiguous and array.flags.writeable):  # negative strides or read-only: copy
        array = array.copy(order="C")
    try:
        return torch.from_numpy(array)
    except TypeError as e:
        raise InputError(f"{where}: numpy array of dtype {array.dtype} cannot be stored as a tensor", code="unsupported-dtype") from e


def unique_views(
    tensors: Mapping[str, torch.Tensor], kinds: Mapping[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Split named tensors into stored tensors and aliases of identical views.

    Two names bound to the same view (same storage address, dtype, shape and
    strides, conjugate and negative bits — tied weights) and the same kind
    (``kinds[name]``: how the value comes back, FORMAT.md §4.4) are stored
    once; the second becomes an alias of the first in name order. Partially
    overlapping views are stored apart.
    """
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for name in tensors:
        if not isinstance(name, str):
            raise InputError(f"tensor name {name!r} is a {type(name).__name__}; expected str", code="st-name")
        check_name(name, "state dict", InputError)
    for name in sorted(tensors, key=lambda s: s.encode("utf-8")):
        t = tensors[name]
        check_storable(t, f"tensor {name!r}")
        if t.numel() > 0:
            kind = kinds.get(name) if kinds is not None else None
            key = (str(t.device), t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride()), t.is_conj(), t.is_neg(), kind)
            if key in seen:
                aliases[name] = seen[key]
                continue
            seen[key] = name
        stored[name] = t
    return stored, aliases
