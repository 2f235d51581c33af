"""safetensors members: header layout, strict header validation, tensors as views (FORMAT.md §5).

Header parsing and the dtype table need no torch, so ``inspect`` stays
torch-free; the functions that make or read tensors import torch lazily.
"""

from __future__ import annotations

import json
import re
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import DistillganError, InputError, TensorError

if TYPE_CHECKING:
    import torch

ALIGNMENT = 64  # FORMAT.md §5.2: the canonical header pads tensor data to this boundary
MAX_HEADER_BYTES = 4 << 20  # FORMAT.md §8 (safetensors itself allows 100 MB; ours is smaller on purpose)
MAX_TENSORS = 1 << 16  # FORMAT.md §8
MAX_NAME_BYTES = 1024  # FORMAT.md §8
MAX_RANK = 32  # FORMAT.md §8
MAX_DIM = (1 << 63) - 1  # FORMAT.md §8: torch sizes are int64
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


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors member; ``begin``/``end`` are relative to its data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


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


def build_header(entries: list[tuple[str, str, tuple[int, ...]]]) -> tuple[bytes, list[TensorInfo]]:
    """Lay out ``(name, dtype, shape)`` entries canonically (FORMAT.md §5.2).

    Tensors are ordered by element size (largest first), then by name, so each
    one starts at a multiple of its element size; the JSON is compact and
    padded with spaces so that the data section starts at a multiple of 64.
    Returns the header bytes (8-byte length prefix included) and the layout.
    """
    ordered = sorted(entries, key=lambda e: (-DTYPES[e[1]][0], e[0].encode("utf-8")))
    layout = []
    offset = 0
    for name, dtype, shape in ordered:
        n = DTYPES[dtype][0]
        for d in shape:
            n *= d
        layout.append(TensorInfo(name, dtype, tuple(shape), offset, offset + n))
        offset += n
    header = {t.name: {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [t.begin, t.end]} for t in layout}
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * ((-(8 + len(raw))) % ALIGNMENT)
    return struct.pack("<Q", len(raw)) + raw, layout


# --- reading ----------------------------------------------------------------------


def _no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise TensorError(f"duplicate key {k!r} in a safetensors header (FORMAT.md §5.1)", code="st-duplicate-key")
            seen.add(k)
    return out


def _no_constants(token: str) -> Any:
    raise TensorError(f"{token} is not valid JSON (FORMAT.md §5.1)", code="st-header-json")


def _utf8(s: str) -> bool:
    """JSON may escape lone surrogates (\\ud800); such strings are not UTF-8 and are refused."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bad_shape(where: str, name: str, shape: Any) -> TensorError:
    return TensorError(
        f"{where}: tensor {name!r}: shape {shape!r} must be at most {MAX_RANK} ints in 0..{MAX_DIM} (FORMAT.md §5.1)", code="st-shape"
    )


def _bad_offsets(where: str, name: str, offsets: Any) -> TensorError:
    return TensorError(f"{where}: tensor {name!r}: data_offsets {offsets!r} must be [begin, end] with 0 <= begin <= end", code="st-offsets")


def parse_header(src: Any, offset: int, size: int, where: str) -> TensorTable:
    """Validate the safetensors member of ``size`` bytes at ``offset`` of source ``src``.

    Reads only the 8-byte length and the JSON header. Raises :class:`TensorError`.
    """
    if size < 8:
        raise TensorError(f"{where}: member of {size} bytes cannot hold a safetensors header (FORMAT.md §5.1)", code="st-header-size")
    (n,) = struct.unpack("<Q", src.read(offset, 8))
    if n > MAX_HEADER_BYTES:
        raise TensorError(f"{where}: header length {n}; the limit is {MAX_HEADER_BYTES} (FORMAT.md §8)", code="st-header-size")
    if 8 + n > size:
        raise TensorError(f"{where}: header length {n} runs past the member's {size} bytes (FORMAT.md §5.1)", code="st-header-size")
    raw = src.read(offset + 8, n)
    if not raw.startswith(b"{"):
        raise TensorError(f"{where}: header does not start with '{{' (FORMAT.md §5.1)", code="st-header-json")
    try:
        text = raw.decode("utf-8")
        header = json.loads(text, object_pairs_hook=_no_dupes, parse_constant=_no_constants)
    except TensorError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise TensorError(f"{where}: header is not UTF-8 JSON: {e} (FORMAT.md §5.1)", code="st-header-json") from e
    if not isinstance(header, dict):
        raise TensorError(f"{where}: header is a JSON {type(header).__name__}; expected an object", code="st-header-json")
    metadata = header.pop(METADATA_KEY, None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) and _utf8(v) and _utf8(k) for k, v in metadata.items())
    ):
        raise TensorError(f"{where}: {METADATA_KEY} must map str to str (FORMAT.md §5.1)", code="st-metadata")
    if len(header) > MAX_TENSORS:
        raise TensorError(f"{where}: {len(header)} tensors; the limit is {MAX_TENSORS} (FORMAT.md §8)", code="st-header-size")
    data_size = size - 8 - n
    infos = []
    sizes = {code: size for code, (size, _) in DTYPES.items()}
    for name, spec in header.items():
        check_name(name, where)
        if type(spec) is not dict or len(spec) != 3 or spec.keys() != TENSOR_KEYS:
            raise TensorError(
                f"{where}: tensor {name!r}: expected an object with exactly dtype, shape, data_offsets (FORMAT.md §5.1)",
                code="st-header-json",
            )
        dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
        itemsize = sizes.get(dtype) if type(dtype) is str else None
        if itemsize is None:
            raise TensorError(
                f"{where}: tensor {name!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)} (FORMAT.md §5.3)", code="st-dtype"
            )
        if type(shape) is not list or len(shape) > MAX_RANK:
            raise _bad_shape(where, name, shape)
        expected = itemsize
        elements = 1
        for d in shape:
            if type(d) is not int or d < 0 or d > MAX_DIM:
                raise _bad_shape(where, name, shape)
            expected *= d  # Python ints: no overflow
            if d:
                elements *= d  # zero dims count as 1: torch computes strides from the others
        if type(offsets) is not list or len(offsets) != 2:
            raise _bad_offsets(where, name, offsets)
        begin, end = offsets
        if type(begin) is not int or type(end) is not int or begin < 0 or begin > end:
            raise _bad_offsets(where, name, offsets)
        if elements > MAX_DIM:
            raise TensorError(
                f"{where}: tensor {name!r}: shape {shape!r} has more than {MAX_DIM} elements (zero dimensions counted as 1; FORMAT.md §5.1)",
                code="st-shape",
            )
        if expected != end - begin:
            raise TensorError(
                f"{where}: tensor {name!r}: shape {shape} of {dtype} needs {expected} bytes; data_offsets give {end - begin} (FORMAT.md §5.1)",
                code="st-shape",
            )
        infos.append(TensorInfo(name, dtype, tuple(shape), begin, end))
    infos.sort(key=lambda t: (t.begin, t.end))
    pos = 0
    for t in infos:
        if t.begin != pos:
            raise TensorError(
                f"{where}: tensor {t.name!r} starts at {t.begin}; expected {pos} (offsets are contiguous from 0, no gaps or overlaps; FORMAT.md §5.1)",
                code="st-offsets",
            )
        pos = t.end
    if pos != data_size:
        raise TensorError(
            f"{where}: tensors cover {pos} bytes; the data section holds {data_size} (FORMAT.md §5.1)", code="st-offsets"
        )
    return TensorTable(tuple(infos), offset + 8 + n, metadata)


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


def tensor_from(buf: Any, info: TensorInfo, data_start: int, where: str) -> torch.Tensor:
    """A tensor viewing ``info``'s bytes in ``buf`` (copied only when misaligned)."""
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
    if info.dtype == "BOOL":
        raw = t.view(torch.uint8)
        if bool((raw > 1).any()):
            raise TensorError(f"{where}: tensor {info.name!r} holds bool bytes other than 0 and 1 (FORMAT.md §5.3)", code="st-bool")
    return t.reshape(info.shape)


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
