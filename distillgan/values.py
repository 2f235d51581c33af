"""Value trees: everything a model file stores that is not a tensor, and where its tensors go (FORMAT.md §4.4).

One codec serves the whole manifest. Writing, :class:`Splitter` walks a
Python tree — configs, analysis, training metadata, optimizer states, state
dicts — and returns plain msgpack data in which every tensor and numpy array
is replaced by a *placeholder* naming a tensor of a safetensors member; the
tensors themselves are collected as :class:`Claim` objects for that member.
Reading, :func:`decode_value` turns the msgpack data back into the same tree,
with :class:`Ref` leaves where the tensors go, and :func:`substitute` puts
the loaded tensors in their place.

What round-trips exactly (type, value, bits, map key types and order):
``None``, ``bool``, ``int`` (−2⁶³..2⁶⁴−1), ``float`` (NaN payloads, ±inf and
−0.0 included), ``str``, ``bytes``, ``list``, ``tuple``, ``dict`` with ``str``
and ``int`` keys, ``torch.Tensor``, ``torch.nn.Parameter`` and
``numpy.ndarray`` (dtype, shape and bits; tied tensors stay one object).

Documented conversions (the only lossy ones; FORMAT.md §4.4 table):

==========================================  =====================================
given                                       comes back as
==========================================  =====================================
Enum member (Enum, IntEnum, StrEnum, Flag)  its ``.value``, converted by these rules
numpy scalar (``np.float32(1.5)``, …)       the Python scalar ``.item()`` gives
``pathlib`` path                            ``str``
``bytearray``                               ``bytes``
dict subclass (OrderedDict, defaultdict)    ``dict`` (same items, same order)
list / tuple / str / int / float subclass   ``list`` / ``tuple`` / ``str`` / ``int`` / ``float``
non-contiguous tensor or array              a contiguous one with the same values
big-endian numpy array                      the same values, little-endian
==========================================  =====================================

Anything else — a custom object, a set, a function, a complex number, an
int beyond 64 bits, a lone surrogate — is refused with an
:class:`~distillgan.InputError` naming its path (``$.training_config.foo``).
Nothing is ever stored as its ``str()``.
"""

from __future__ import annotations

import enum
import math
import re
import struct
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ErrorCode, InputError, ManifestError, describe
from .tensors import MAX_NAME_BYTES, check_name, check_storable, storable, valid_name

TAG = "$"  # FORMAT.md §4.4: a map with this key is a tagged value
MAX_DEPTH = 64  # FORMAT.md §8: nesting of msgpack arrays and maps (the manifest map is depth 0)
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1  # what msgpack can carry

# tag -> (required keys besides "$", optional keys)
TAGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tuple": (("items",), ()),
    "map": (("items",), ()),
    "tensor": (("name",), ("requires_grad",)),
    "parameter": (("name", "requires_grad"), ()),
    "ndarray": (("name",), ()),
    "tensors": (("prefix", "keys"), ()),
}
KINDS = ("tensor", "parameter", "ndarray")  # what a placeholder restores
_TAG_KEYS = {tag: (frozenset({"$", *req}), frozenset({"$", *req, *opt})) for tag, (req, opt) in TAGS.items()}

# numpy dtypes a stored tensor can come back as (FORMAT.md §5.3); BF16 and float8 have no numpy dtype
NUMPY_DTYPES = frozenset({"F64", "F32", "F16", "C64", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL"})
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "C64"})

_INT_TEXT = re.compile(r"-?(0|[1-9][0-9]*)\Z")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


# --- paths ------------------------------------------------------------------------------


def render_path(path: tuple[Any, ...]) -> str:
    """``$.a.b[3]`` for a path of keys and indices (ints are indices or int keys, shown as ``[n]``)."""
    out = ["$"]
    for seg in path:
        if isinstance(seg, str):
            out.append(f".{seg}" if seg.isidentifier() else f"[{seg!r}]")
        else:
            out.append(f"[{seg}]")
    return "".join(out)


def _segment(seg: Any) -> str:
    """One path segment of :func:`tensor_name`."""
    if not isinstance(seg, str):
        return str(seg)
    s = seg.replace("~", "~0").replace("/", "~1")
    if _CONTROL.search(s):
        s = _CONTROL.sub(lambda m: f"~u{ord(m.group()):04x}", s)
    return "~2" + s if _INT_TEXT.match(seg) else s


def tensor_name(path: tuple[Any, ...]) -> str:
    """The tensor name a writer gives the value at ``path`` (FORMAT.md §4.4, naming rule).

    Segments are joined with ``/``; in a str segment ``~`` becomes ``~0`` and
    ``/`` becomes ``~1`` (as in JSON Pointer), a control character (U+0000–
    U+001F, U+007F–U+009F, which tensor names cannot hold) becomes ``~u``
    and four hex digits, and a str that reads as a decimal integer gets the
    prefix ``~2`` so it cannot meet the int key or index of the same number.
    Ints (map keys, list and tuple indices) are written in decimal. The rule
    is injective, so names never collide.
    """
    return "/".join(map(_segment, path))


# --- what the codec hands to the layers around it ----------------------------------------


@dataclass(slots=True, unsafe_hash=True)  # not frozen: a frozen __init__ costs 4x, and a file can hold 2**20 of these
class Ref:
    """A placeholder, decoded: restore the tensor ``name`` of ``member`` as a ``kind`` object (never modified)."""

    kind: str  # "tensor", "parameter" or "ndarray"
    member: str
    name: str
    requires_grad: bool = False


@dataclass(slots=True)
class Claim:
    """A tensor found while writing: its name in ``member``, the tensor, and how it comes back."""

    member: str
    name: str
    tensor: Any  # torch.Tensor (numpy arrays already wrapped)
    kind: str
    requires_grad: bool
    path: tuple[Any, ...]


# --- writing -----------------------------------------------------------------------------


def _is_dataclass_instance(value: Any) -> bool:
    return hasattr(type(value), "__dataclass_fields__")


def dataclass_to_dict(value: Any) -> Any:
    """Like ``dataclasses.asdict`` but without deep-copying the leaves (tensors stay the same objects)."""
    if _is_dataclass_instance(value):
        return {name: dataclass_to_dict(getattr(value, name)) for name in type(value).__dataclass_fields__}
    if type(value) in (list, tuple):
        return type(value)(dataclass_to_dict(v) for v in value)
    if type(value) is dict:
        return {k: dataclass_to_dict(v) for k, v in value.items()}
    return value


class Splitter:
    """Encode value trees for the manifest, collecting their tensors per member.

    ``encode(value, path, member)`` returns msgpack-ready data (dicts keep
    their insertion order and int keys; tuples become tagged maps; tensors
    and arrays become placeholders) and appends a :class:`Claim` per tensor
    to ``claims``. Raises :class:`InputError` naming the path of the first
    value that cannot be stored exactly.
    """

    def __init__(self) -> None:
        self.claims: list[Claim] = []
        self._names: dict[tuple[Any, ...], str] = {}  # tensor_name of each path seen, built from its parent's
        torch = sys.modules.get("torch")  # no tensor can exist unless torch was imported
        self._tensor_type = torch.Tensor if torch is not None else None
        self._parameter_type = torch.nn.Parameter if torch is not None else None

    def encode(self, value: Any, path: tuple[Any, ...], member: str) -> Any:
        try:
            return self._enc(value, path, len(path), member)
        except RecursionError as e:  # a cycle (a list that contains itself) or absurd nesting
            raise InputError(f"{render_path(path)}: nested deeper than {MAX_DEPTH} levels (FORMAT.md §8)", code="manifest-depth") from e

    def _name(self, path: tuple[Any, ...]) -> str:
        name = self._names.get(path)
        if name is None:
            name = _segment(path[0]) if len(path) == 1 else f"{self._name(path[:-1])}/{_segment(path[-1])}"
            self._names[path] = name
        return name

    def _depth(self, path: tuple[Any, ...], depth: int) -> None:
        if depth > MAX_DEPTH:
            raise InputError(
                f"{render_path(path)}: nested deeper than {MAX_DEPTH} levels, or a container that contains itself (FORMAT.md §8)",
                code="manifest-depth",
            )

    def _enc(self, v: Any, path: tuple[Any, ...], depth: int, member: str) -> Any:
        if depth > MAX_DEPTH:
            self._depth(path, depth)
        t = type(v)
        if t is str or t is float or t is bool or v is None or t is bytes:
            return v
        if t is int:
            if not INT_MIN <= v <= INT_MAX:
                raise InputError(f"{render_path(path)}: integer {v} does not fit in 64 bits (FORMAT.md §4.2)", code="manifest-value")
            return v
        if t is dict:
            return self._enc_dict(v, path, depth, member)
        if t is list:
            return [self._enc(x, (*path, i), depth + 1, member) for i, x in enumerate(v)]
        if t is tuple:
            self._depth(path, depth + 1)  # the tagged map's "items" array
            return {TAG: "tuple", "items": [self._enc(x, (*path, i), depth + 2, member) for i, x in enumerate(v)]}
        if self._tensor_type is not None and isinstance(v, self._tensor_type):
            self._depth(path, depth + 1)  # the placeholder's fields
            return self._enc_tensor(v, path, member)
        if t.__module__ == "numpy" and t.__name__ == "ndarray":
            self._depth(path, depth + 1)
            return self._enc_ndarray(v, path, member)
        return self._enc(self._convert(v, path), path, depth, member)

    def _convert(self, v: Any, path: tuple[Any, ...]) -> Any:
        """The documented conversions (module docstring); InputError for anything else."""
        if isinstance(v, enum.Enum):
            return v.value
        t = type(v)
        if t.__module__ == "numpy" and hasattr(v, "item") and getattr(v, "shape", None) == ():
            item = v.item()  # numpy scalars; datetime64/void/complex give objects refused below
            if type(item) in (bool, int, float, str, bytes):
                return item
        elif "pathlib" in sys.modules and isinstance(v, sys.modules["pathlib"].PurePath):  # none exists unless imported
            return str(v)
        elif isinstance(v, bytearray):
            return bytes(v)
        elif isinstance(v, bool):
            return bool(v)
        elif isinstance(v, int):
            return int(v)
        elif isinstance(v, float):
            return float(v)
        elif isinstance(v, str):
            return str.__str__(v)
        elif isinstance(v, Mapping) and isinstance(v, dict):
            return dict(v)
        elif isinstance(v, list):
            return list(v)
        elif isinstance(v, tuple):
            return tuple(v)
        raise InputError(
            f"{render_path(path)}: cannot store a value of type {t.__module__}.{t.__qualname__} "
            "(storable: None, bool, int, float, str, bytes, list, tuple, dict with str/int keys, tensors, "
            "numpy arrays; Enum members, numpy scalars and paths are converted; FORMAT.md §4.4)",
            code="manifest-type",
        )

    def _key(self, k: Any, path: tuple[Any, ...]) -> str | int:
        t = type(k)
        if t is str:
            return k
        if t is int:
            if not INT_MIN <= k <= INT_MAX:
                raise InputError(f"{render_path(path)}: map key {k} does not fit in 64 bits", code="manifest-value")
            return k
        if t is not bool:
            try:
                converted = self._convert(k, path)
            except InputError:
                converted = None
            if type(converted) in (str, int) and converted is not k:
                return self._key(converted, path)
        raise InputError(
            f"{render_path(path)}: map key {k!r} is a {t.__qualname__}; keys must be str or int (FORMAT.md §4.4)",
            code="manifest-type",
        )

    def _enc_dict(self, v: dict[Any, Any], path: tuple[Any, ...], depth: int, member: str) -> Any:
        keys = list(v)
        all_str = all(type(k) is str for k in keys)
        if not all_str:
            keys = [self._key(k, path) for k in keys]
            all_str = all(type(k) is str for k in keys)
            if len(set(keys)) != len(keys):  # conversion can make two keys one (an Enum and its value)
                seen: set[Any] = set()
                dup = next(k for k in keys if k in seen or seen.add(k))  # type: ignore[func-returns-value]
                raise InputError(f"{render_path(path)}: two keys become {dup!r} after conversion (FORMAT.md §4.4)", code="manifest-type")
        values = list(v.values())
        tensor_type = self._tensor_type
        if values and all_str and tensor_type is not None and all(type(x) is tensor_type and not x.requires_grad for x in values):
            self._depth(path, depth + 2)  # the keys inside the "keys" array
            flat = self._enc_flat(keys, values, path, member)
            if flat is not None:
                return flat
        if TAG in keys:
            self._depth(path, depth + 3)  # keys and values inside [key, value] pairs inside "items"
            return {
                TAG: "map",
                "items": [[k, self._enc(x, (*path, k), depth + 3, member)] for k, x in zip(keys, values, strict=True)],
            }
        return {k: self._enc(x, (*path, k), depth + 1, member) for k, x in zip(keys, values, strict=True)}

    def _enc_flat(self, keys: list[str], values: list[Any], path: tuple[Any, ...], member: str) -> dict[str, Any] | None:
        """A dict of plain tensors (a state dict): one placeholder for all, names ``prefix + key``.

        None when a key would make an invalid tensor name (a control character,
        over 1024 bytes): the caller then writes one placeholder per tensor,
        whose names escape what a key cannot hold.
        """
        prefix = self._name(path) + "/"
        names = [prefix + k for k in keys]
        # one check of all names at once (control characters, lone surrogates, length), then each only if needed
        joined = "".join(names)
        try:
            joined.encode("utf-8")
            clean = not _CONTROL.search(joined) and len(prefix) + 4 * max(map(len, keys)) <= MAX_NAME_BYTES
        except UnicodeEncodeError:
            clean = False
        if not clean and not all(valid_name(n) for n in names):
            return None
        for k, t in zip(keys, values, strict=True):
            if not storable(t):
                check_storable(t, render_path((*path, k)))
        self.claims.extend(Claim(member, name, t, "tensor", False, (*path, k)) for k, t, name in zip(keys, values, names, strict=True))
        return {TAG: "tensors", "prefix": prefix, "keys": keys}

    def _enc_tensor(self, v: Any, path: tuple[Any, ...], member: str) -> dict[str, Any]:
        t = type(v)
        if t is not self._tensor_type and t is not self._parameter_type:
            raise InputError(
                f"{render_path(path)}: tensor subclass {t.__module__}.{t.__qualname__} cannot be stored; pass a plain tensor (FORMAT.md §4.4)",
                code="manifest-type",
            )
        if not storable(v):
            check_storable(v, render_path(path))
        name = self._name(path)
        if not valid_name(name):
            check_name(name, render_path(path), InputError)
        grad = bool(v.requires_grad)
        if t is self._parameter_type:
            self.claims.append(Claim(member, name, v, "parameter", grad, path))
            return {TAG: "parameter", "name": name, "requires_grad": grad}
        self.claims.append(Claim(member, name, v, "tensor", grad, path))
        if grad:
            return {TAG: "tensor", "name": name, "requires_grad": True}
        return {TAG: "tensor", "name": name}

    def _enc_ndarray(self, v: Any, path: tuple[Any, ...], member: str) -> dict[str, Any]:
        from .tensors import from_numpy

        where = render_path(path)
        if v.dtype.byteorder == ">":
            v = v.astype(v.dtype.newbyteorder("<"))  # documented: values kept, byte order not
        tensor = from_numpy(v, where)
        check_storable(tensor, where)
        name = self._name(path)
        check_name(name, where, InputError)
        self.claims.append(Claim(member, name, tensor, "ndarray", False, path))
        return {TAG: "ndarray", "name": name}


def find_unencodable(value: Any, path: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], str] | None:
    """The path and description of the first str (value or key) that is not valid Unicode, if any."""
    if type(value) is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path, f"string {value!r} is not valid Unicode (lone surrogate)"
        return None
    if type(value) is dict:
        for k, v in value.items():
            found = find_unencodable(k, path) if type(k) is str else None
            if found is not None:
                return path, f"map key {k!r} is not valid Unicode (lone surrogate)"
            found = find_unencodable(v, (*path, k))
            if found is not None:
                return found
    elif type(value) is list:
        for i, v in enumerate(value):
            found = find_unencodable(v, (*path, i))
            if found is not None:
                return found
    return None


# --- reading -----------------------------------------------------------------------------


def _bad(path: tuple[Any, ...], what: str, *, code: ErrorCode) -> ManifestError:
    return ManifestError(describe(what, where=render_path(path), section="§4.4"), code=code)


_SCALARS = frozenset({type(None), bool, int, float, str, bytes})


class Decoder:
    """Turn decoded msgpack data of a value slot back into the Python tree, with :class:`Ref` leaves.

    The data has passed :func:`distillgan.manifest.unpack` (depth, key types, duplicate map keys and
    ext types are settled there, FORMAT.md §4.2); this checks the tagged maps (§4.4).
    ``refs`` collects ``(ref, path)`` for every placeholder, in document order. Scalars are
    taken as they are and paths are extended only for containers, so decoding is linear in the
    size of the data.
    """

    def __init__(self) -> None:
        self.refs: list[tuple[Ref, tuple[Any, ...]]] = []

    def decode(self, raw: Any, path: tuple[Any, ...], member: str) -> Any:
        return raw if type(raw) in _SCALARS else self._dec(raw, path, member)

    def _dec(self, raw: Any, path: tuple[Any, ...], member: str) -> Any:
        if type(raw) is list:
            return [x if type(x) in _SCALARS else self._dec(x, (*path, i), member) for i, x in enumerate(raw)]
        if TAG in raw:
            return self._tagged(raw, path, member)
        return {k: x if type(x) in _SCALARS else self._dec(x, (*path, k), member) for k, x in raw.items()}

    def _tagged(self, raw: dict[Any, Any], path: tuple[Any, ...], member: str) -> Any:
        tag = raw[TAG]
        if type(tag) is not str or tag not in TAGS:
            raise _bad(path, f"tag {tag!r} is not one of {', '.join(TAGS)}", code="manifest-tag")
        need, allowed = _TAG_KEYS[tag]
        if not (need <= raw.keys() <= allowed):
            required, optional = TAGS[tag]
            raise _bad(path, f"a {tag!r} tagged map has keys {sorted(map(str, raw))}; expected '$', {', '.join(required + optional)}", code="manifest-tag")
        if tag in ("tuple", "map"):
            items = raw["items"]
            if type(items) is not list:
                raise _bad(path, f"'items' of a {tag!r} tagged map must be an array", code="manifest-tag")
            if tag == "tuple":
                return tuple(x if type(x) in _SCALARS else self._dec(x, (*path, i), member) for i, x in enumerate(items))
            out: dict[Any, Any] = {}
            for pair in items:
                if type(pair) is not list or len(pair) != 2 or type(pair[0]) not in (str, int):
                    raise _bad(path, "each item of a 'map' tagged map must be a [key, value] array with a str or int key", code="manifest-tag")
                k, x = pair
                if k in out:
                    raise _bad(path, f"duplicate key {k!r} in a 'map' tagged map", code="manifest-duplicate-key")
                out[k] = x if type(x) in _SCALARS else self._dec(x, (*path, k), member)
            return out
        if tag == "tensors":
            prefix, keys_ = raw["prefix"], raw["keys"]
            if type(prefix) is not str or type(keys_) is not list or not all(type(k) is str for k in keys_):
                raise _bad(path, "a 'tensors' tagged map needs a str 'prefix' and an array of str 'keys'", code="manifest-tag")
            flat: dict[str, Ref] = {}
            refs = self.refs
            for k in keys_:
                if k in flat:
                    raise _bad(path, f"duplicate key {k!r} in a 'tensors' tagged map", code="manifest-duplicate-key")
                ref = Ref("tensor", member, prefix + k)
                flat[k] = ref
                refs.append((ref, (*path, k)))
            return flat
        name = raw["name"]
        if type(name) is not str:
            raise _bad(path, f"'name' of a {tag!r} placeholder must be a str", code="manifest-tag")
        grad = raw.get("requires_grad", False)
        if type(grad) is not bool:
            raise _bad(path, f"'requires_grad' of a {tag!r} placeholder must be a bool", code="manifest-tag")
        ref = Ref(tag, member, name, grad)
        self.refs.append((ref, path))
        return ref


def substitute(value: Any, resolve: Callable[[Ref], Any]) -> Any:
    """A copy of a decoded tree with every :class:`Ref` replaced by ``resolve(ref)``."""
    t = type(value)
    if t is Ref:
        return resolve(value)
    if t is dict:
        return {k: substitute(v, resolve) for k, v in value.items()}
    if t is list:
        return [substitute(v, resolve) for v in value]
    if t is tuple:
        return tuple(substitute(v, resolve) for v in value)
    return value


def iter_refs(value: Any) -> Iterator[Ref]:
    """Every :class:`Ref` of a decoded tree, depth first."""
    t = type(value)
    if t is Ref:
        yield value
    elif t is dict:
        for v in value.values():
            yield from iter_refs(v)
    elif t in (list, tuple):
        for v in value:
            yield from iter_refs(v)


# --- JSON projection ---------------------------------------------------------------------------


def json_view(raw: Any) -> Any:
    """The loss-free JSON form of decoded msgpack data (FORMAT.md §4.6).

    JSON has no NaN/±inf, no bytes and only str keys, so three JSON-only tags
    stand in for them: ``{"$": "float", "value": "nan", "bits": "7ff8000000000000"}``
    (the IEEE 754 binary64 bits, big-endian hex, keep NaN payloads),
    ``{"$": "bytes", "base64": "..."}`` and ``{"$": "map", "items": [[key, value], ...]}``
    for a map with a non-str key (the same form as the manifest's own ``map`` tag).
    Everything else, the manifest's tagged maps included, maps to itself.
    """
    t = type(raw)
    if t is float:
        if math.isfinite(raw):
            return raw
        text = "nan" if math.isnan(raw) else ("inf" if raw > 0 else "-inf")
        return {TAG: "float", "value": text, "bits": struct.pack(">d", raw).hex()}
    if t is bytes:
        import base64

        return {TAG: "bytes", "base64": base64.b64encode(raw).decode("ascii")}
    if t is list:
        return [json_view(v) for v in raw]
    if t is dict:
        if all(type(k) is str for k in raw):
            return {k: json_view(v) for k, v in raw.items()}
        return {TAG: "map", "items": [[k, json_view(v)] for k, v in raw.items()]}
    return raw


