"""manifest.msgpack: the schema, canonical encoding and strict decoding (FORMAT.md §4).

The manifest is one msgpack map. Its schema parts — ``format``, ``version``,
``latent_dim``, ``metadata`` and ``members`` — are typed and closed; its
*value slots* (``spectrogram_config``, ``training_config``, ``analysis``,
``state_dict``, ``vocoder_state``, ``extra``) hold value trees of
:mod:`distillgan.values`, whose tensors live in the safetensors members.

Writing is canonical: ``format`` and ``version`` first, the other schema
maps' keys in UTF-8 byte order, value trees in their own insertion order
(that order is part of the value), floats as float64, integers and lengths
in their shortest form — equal inputs give equal bytes. Reading accepts any
valid msgpack but refuses duplicate keys, key types other than str and int,
ext types, excessive nesting and anything outside the v1 schema.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import msgpack

from .errors import ErrorCode, InputError, ManifestError, VersionError, describe
from .values import MAX_DEPTH, Decoder, Ref, find_unencodable, render_path

MODEL_FORMAT_MARKER = "distillgan_model"  # FORMAT.md §4.1
SAVED_MODEL_VERSION = 1  # FORMAT.md §4.1
LEGACY_FORMAT_MARKER = "distill_model"  # the pickle-based .distill format (FORMAT.md §7)

MAX_MANIFEST_BYTES = 64 << 20  # FORMAT.md §8: a 1 000 000-tensor state dict needs about 30 MB of names

# FORMAT.md §4.3: every top-level key is required; the value slots hold value trees (§4.4)
VALUE_SLOTS = ("analysis", "extra", "spectrogram_config", "state_dict", "training_config", "vocoder_state")
TOP_KEYS = ("format", "version", "latent_dim", "members", "metadata", *VALUE_SLOTS)
MEMBER_KEYS = ("aliases", "size")


@dataclass
class ModelMetadata:
    """User-facing metadata stored with a saved model (the fields of the app's ``ModelMetadata``).

    ``model_id`` and ``save_date`` are filled in by ``save_model`` when empty.
    Dates are ISO 8601 strings. Losses are floats (NaN and ±inf allowed: a
    run with no valid step, a cancelled run) or None.
    """

    model_id: str = ""
    name: str = "Untitled Model"
    description: str = ""
    dataset_name: str = ""
    dataset_file_count: int = 0
    dataset_total_duration_s: float = 0.0
    training_date: str = ""
    save_date: str = ""
    training_epochs: int = 0
    final_train_loss: float | None = 0.0
    final_val_loss: float | None = 0.0
    tags: list[str] = field(default_factory=list)
    has_analysis: bool = False
    n_active_components: int = 0


# field name -> (kind, nullable); the manifest stores exactly these keys
METADATA_SCHEMA: dict[str, tuple[str, bool]] = {
    "model_id": ("str", False),
    "name": ("str", False),
    "description": ("str", False),
    "dataset_name": ("str", False),
    "dataset_file_count": ("uint", False),
    "dataset_total_duration_s": ("float", False),
    "training_date": ("str", False),
    "save_date": ("str", False),
    "training_epochs": ("uint", False),
    "final_train_loss": ("loss", True),
    "final_val_loss": ("loss", True),
    "tags": ("strlist", False),
    "has_analysis": ("bool", False),
    "n_active_components": ("uint", False),
}
assert tuple(METADATA_SCHEMA) == tuple(f.name for f in fields(ModelMetadata))


@dataclass
class Manifest:
    """A decoded, validated manifest.

    ``raw`` is the msgpack map as decoded (plain data: what ``inspect`` shows);
    ``values`` maps each value slot to its tree with :class:`~distillgan.values.Ref`
    leaves where tensors go; ``refs`` lists every placeholder with its path.
    """

    raw: dict[str, Any]
    values: dict[str, Any]
    refs: list[tuple[Ref, tuple[Any, ...]]]

    @property
    def has_vocoder(self) -> bool:
        return self.raw["vocoder_state"] is not None


def slot_member(slot: str) -> str:
    """The tensor member that holds a value slot's tensors: the vocoder's, or the model's."""
    from .container import MODEL_NAME, VOCODER_NAME

    return VOCODER_NAME if slot == "vocoder_state" else MODEL_NAME


# --- metadata given by a caller --------------------------------------------------------------


def _scalar(value: Any) -> Any:
    """A numpy or torch scalar (0-d value with ``.item()``) as the Python number it holds."""
    if type(value) not in (int, float, bool, str) and getattr(value, "shape", None) in ((), []):
        item = getattr(value, "item", None)
        if callable(item):
            return item()
    return value


def coerce_metadata(meta: Any) -> dict[str, Any]:
    """The metadata map to store, from a ``ModelMetadata``, any dataclass with its fields, or a mapping.

    Numpy/torch scalars become Python numbers and a tuple of tags a list; a
    missing field takes ``ModelMetadata``'s default. Raises
    :class:`InputError` naming the field for anything else.
    """
    if hasattr(type(meta), "__dataclass_fields__"):
        source = {name: getattr(meta, name) for name in type(meta).__dataclass_fields__}
    elif isinstance(meta, Mapping):
        source = dict(meta)
    else:
        raise InputError(f"metadata: expected ModelMetadata, a dataclass or a mapping, got {type(meta).__name__}", code="invalid-input")
    unknown = [k for k in source if k not in METADATA_SCHEMA]
    if unknown:
        raise InputError(
            f"metadata: unknown field {unknown[0]!r}; the fields are {', '.join(METADATA_SCHEMA)}. Free-form "
            "str -> str metadata (safetensors' __metadata__) goes in user_metadata={...} of save_model/save_file",
            code="invalid-input"
        )
    defaults = ModelMetadata()
    out: dict[str, Any] = {}
    for name, (kind, _nullable) in METADATA_SCHEMA.items():
        value = _scalar(source.get(name, getattr(defaults, name)))
        if kind == "strlist" and isinstance(value, (list, tuple)):
            value = [_scalar(t) for t in value]
        elif kind in ("float", "loss") and type(value) is int:
            value = float(value)
        out[name] = value
    try:
        check_metadata(out)
    except ManifestError as e:
        raise InputError(str(e).replace(" (FORMAT.md §4.3)", ""), code=e.code) from e
    return out


# --- encoding -------------------------------------------------------------------------------


def _utf8_order(keys: Any) -> list[Any]:
    return sorted(keys, key=lambda k: k.encode("utf-8", "surrogatepass"))


def canonical_raw(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level map in canonical order: ``format``, ``version``, then the schema maps sorted.

    Value slots are taken as given (already encoded by
    :class:`~distillgan.values.Splitter`, in their own order).
    """
    out = {"format": manifest["format"], "version": manifest["version"]}
    for key in _utf8_order(k for k in manifest if k not in ("format", "version")):
        value = manifest[key]
        if key == "metadata":
            value = {k: value[k] for k in _utf8_order(value)}
        elif key == "members":
            value = {
                name: {"aliases": {a: info["aliases"][a] for a in _utf8_order(info["aliases"])}, "size": info["size"]}
                for name, info in ((n, value[n]) for n in _utf8_order(value))
            }
        out[key] = value
    return out


def encode_manifest(manifest: Mapping[str, Any]) -> bytes:
    """Canonical msgpack bytes of a manifest whose value slots are already encoded."""
    raw = canonical_raw(manifest)
    try:
        data = msgpack.packb(raw, use_bin_type=True, use_single_float=False, strict_types=True)
    except UnicodeEncodeError as e:
        found = find_unencodable(raw)
        where, what = found if found is not None else ((), str(e))
        raise InputError(f"{render_path(where)}: {what} (FORMAT.md §4.2)", code="manifest-value") from e
    except (TypeError, ValueError, OverflowError) as e:
        raise InputError(f"the manifest cannot be encoded: {e}", code="manifest-type") from e
    if len(data) > MAX_MANIFEST_BYTES:
        raise InputError(
            f"manifest would be {len(data)} bytes; the limit is {MAX_MANIFEST_BYTES} (FORMAT.md §8). "
            "Store large arrays as numpy arrays or tensors, not lists.",
            code="manifest-too-large",
        )
    return data


# --- decoding -------------------------------------------------------------------------------


# FORMAT.md §4.2: the decode-level rules are checked in byte order, and the first defect in the member
# decides. Two implementations give that verdict. The fast one lets msgpack decode the whole member in C
# with hooks that never raise (they only note what needs a look), then walks the decoded tree in
# document order — the order in which its items appear in the bytes. When msgpack itself stops (bad
# bytes, truncation, nesting beyond its own stack), ``_scan`` walks the bytes one item at a time and
# names the first defect; it is the reference and runs only on members that are already invalid.


class _Ext:
    """An ext item the fast decoder met: a defect found in its place by the walk (FORMAT.md §4.2)."""

    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code


_PLAIN_SCALARS = frozenset({type(None), bool, int, float, str, bytes})


def _defect(where: str, what: str, *, code: ErrorCode) -> ManifestError:
    return ManifestError(describe(what, where=where, section="§4.2"), code=code)


def _ext_defect(value: Any, where: str) -> ManifestError:
    code = value.code if type(value) is _Ext else -1  # msgpack decodes ext -1 (timestamp) to an object of its own
    return _defect(where, f"msgpack ext type {code} is not allowed", code="manifest-ext-type")


def _too_deep(where: str) -> ManifestError:
    return _defect(where, f"a value nested deeper than {MAX_DEPTH} levels (the manifest map is level 0; FORMAT.md §8)", code="manifest-depth")


def _key_defect(key: Any, path: tuple[Any, ...]) -> ManifestError:
    where = render_path(path) + " (a key)"
    if type(key) is _Ext or type(key) is msgpack.Timestamp:
        return _ext_defect(key, where)
    return _defect(where, f"a map key that is a {_kind(key)}; keys must be str or int", code="manifest-type")


def _walk(value: Any, depth: int, path: tuple[Any, ...], flagged: dict[int, tuple[Any, list[tuple[Any, Any]]]]) -> ManifestError | None:
    """The first defect of a decoded tree in document order: depth, ext types, key types, duplicates."""
    t = type(value)
    if t is list:
        if value and depth >= MAX_DEPTH:
            return _too_deep(render_path((*path, 0)))
        for i, x in enumerate(value):
            if type(x) not in _PLAIN_SCALARS:
                err = _walk(x, depth + 1, (*path, i), flagged)
                if err is not None:
                    return err
        return None
    if t is dict:
        entry = flagged.get(id(value))
        pairs = value.items() if entry is None or entry[0] is not value else entry[1]
        if pairs and depth >= MAX_DEPTH:
            return _too_deep(render_path(path) + " (its first key)")
        seen: set[Any] | None = None if entry is None else set()
        for k, x in pairs:
            if type(k) is not str and type(k) is not int:
                return _key_defect(k, path)
            if seen is not None:
                if k in seen:
                    return _defect(render_path(path), f"duplicate map key {k!r} (msgpack decoders keep the last)", code="manifest-duplicate-key")
                seen.add(k)
            if type(x) not in _PLAIN_SCALARS:
                err = _walk(x, depth + 1, (*path, k), flagged)
                if err is not None:
                    return err
        return None
    if t is _Ext or t is msgpack.Timestamp:
        return _ext_defect(value, render_path(path))
    return None


def unpack(data: bytes) -> Any:
    """Decode msgpack under the §4.2 rules: the first defect in byte order raises its ManifestError."""
    n = len(data)
    flagged: dict[int, tuple[Any, list[tuple[Any, Any]]]] = {}

    def pairs_hook(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
        try:
            out = dict(pairs)
        except TypeError:  # an array or map as a key
            out = {}
            flagged[id(out)] = (out, pairs)
            return out
        if len(out) != len(pairs):  # a duplicate (or 1 and true, which Python takes for one key)
            flagged[id(out)] = (out, pairs)
        return out

    trailing = 0
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,  # every key type is decoded; the walk refuses all but str and int, in order
            use_list=True,
            object_pairs_hook=pairs_hook,
            ext_hook=lambda code, _data: _Ext(code),
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n,
            max_map_len=n,
            max_ext_len=n,
        )
    except msgpack.ExtraData as e:
        obj, trailing = e.unpacked, len(e.extra)
    except Exception as e:  # msgpack stopped: bad bytes, truncation, too deep for its stack — the scan says which comes first
        err = _scan(data)
        if err is None:  # pragma: no cover - the two readings agree (tests/test_parsers.py)
            err = ManifestError(f"manifest is not valid msgpack: {e} (FORMAT.md §4.2)", code="manifest-msgpack")
        raise err from e
    err = _walk(obj, 0, (), flagged)
    if err is not None:
        raise err
    if trailing:
        raise ManifestError(f"{trailing} bytes follow the manifest's first msgpack value (FORMAT.md §4.2)", code="manifest-msgpack")
    return obj


# msgpack item heads (https://github.com/msgpack/msgpack/blob/master/spec.md): first byte ->
# (kind, bytes of the length or value field after it, fixed payload size or None)
def _head_table() -> list[tuple[str, int, int]]:
    table: list[tuple[str, int, int]] = []
    for b in range(256):
        if b <= 0x7F or b >= 0xE0:
            table.append(("int", 0, 0))
        elif b <= 0x8F:
            table.append(("map", 0, b & 0x0F))
        elif b <= 0x9F:
            table.append(("array", 0, b & 0x0F))
        elif b <= 0xBF:
            table.append(("str", 0, b & 0x1F))
        else:
            table.append({
                0xC0: ("nil", 0, 0), 0xC1: ("never", 0, 0), 0xC2: ("bool", 0, 0), 0xC3: ("bool", 0, 0),
                0xC4: ("bin", 1, -1), 0xC5: ("bin", 2, -1), 0xC6: ("bin", 4, -1),
                0xC7: ("ext", 1, -1), 0xC8: ("ext", 2, -1), 0xC9: ("ext", 4, -1),
                0xCA: ("float", 4, 0), 0xCB: ("float", 8, 0),
                0xCC: ("int", 1, 0), 0xCD: ("int", 2, 0), 0xCE: ("int", 4, 0), 0xCF: ("int", 8, 0),
                0xD0: ("int", 1, 0), 0xD1: ("int", 2, 0), 0xD2: ("int", 4, 0), 0xD3: ("int", 8, 0),
                0xD4: ("ext", 1, 1), 0xD5: ("ext", 1, 2), 0xD6: ("ext", 1, 4), 0xD7: ("ext", 1, 8), 0xD8: ("ext", 1, 16),
                0xD9: ("str", 1, -1), 0xDA: ("str", 2, -1), 0xDB: ("str", 4, -1),
                0xDC: ("array", 2, -1), 0xDD: ("array", 4, -1), 0xDE: ("map", 2, -1), 0xDF: ("map", 4, -1),
            }[b])
    return table


_HEADS = _head_table()
_SIGNED = frozenset({0xD0, 0xD1, 0xD2, 0xD3})
# a run of one-byte items with nothing inside: positive and negative fixint, nil, false, true
_ONE_BYTE_RUN = re.compile(rb"[\x00-\x7f\xc0\xc2\xc3\xe0-\xff]+")
_ONE_BYTE = frozenset([*range(0x00, 0x80), *range(0xE0, 0x100), 0xC0, 0xC2, 0xC3])


def _scan(data: bytes) -> ManifestError | None:
    """The reference reading of FORMAT.md §4.2: walk the items in byte order; the first defect, or None.

    Each item is checked where it starts, in this order: nesting deeper than MAX_DEPTH
    [manifest-depth]; the byte 0xC1 [manifest-msgpack]; an ext type [manifest-ext-type]; as a map
    key, a type other than str or int [manifest-type]; a length running past the member
    [manifest-msgpack]; a str that is not UTF-8 [manifest-msgpack]; as a map key, a key equal to an
    earlier key of the same map [manifest-duplicate-key]. After the first item: trailing bytes
    [manifest-msgpack]. Iterative, so any nesting is walked without recursion.
    """
    n = len(data)
    pos = 0
    stack: list[list[Any]] = []  # [items left, keys seen (maps) or None]; a map counts its keys and values
    heads = _HEADS
    while True:
        is_key = False
        if stack:
            top = stack[-1]
            if top[1] is None and pos < n and data[pos] in _ONE_BYTE and len(stack) <= MAX_DEPTH:
                # inside an array: skip a run of one-byte scalars (fixint, nil, bool) without the general path
                m = _ONE_BYTE_RUN.match(data, pos, min(n, pos + top[0]))
                if m is not None:
                    top[0] -= m.end() - pos
                    pos = m.end()
                    while stack and stack[-1][0] == 0:
                        stack.pop()
                    if not stack:
                        break
                    continue
            top = stack[-1]
            is_key = top[1] is not None and top[0] % 2 == 0
            top[0] -= 1
        if len(stack) > MAX_DEPTH:
            return _too_deep(f"byte {pos}")
        if pos >= n:
            return _defect(f"byte {pos}", "the manifest ends inside a msgpack value (truncated)", code="manifest-msgpack")
        b = data[pos]
        kind, field, fixed = heads[b]
        if kind == "never":
            return _defect(f"byte {pos}", "byte 0xC1, which msgpack never uses", code="manifest-msgpack")
        if kind == "ext":
            return _defect(f"byte {pos}", "a msgpack ext type", code="manifest-ext-type")
        if is_key and kind != "str" and kind != "int":
            return _defect(f"byte {pos}", f"a map key of msgpack type {kind}; keys must be str or int", code="manifest-type")
        if pos + 1 + field > n:
            return _defect(f"byte {pos}", "the manifest ends inside a msgpack value (truncated)", code="manifest-msgpack")
        value = int.from_bytes(data[pos + 1 : pos + 1 + field], "big") if field else 0
        start = pos + 1 + field
        count = 0
        if kind == "array" or kind == "map":
            count = fixed if fixed >= 0 and field == 0 else value
            size = 0
        elif kind == "str" or kind == "bin":
            size = value if fixed < 0 else fixed
        else:
            size = field if kind == "int" or kind == "float" else 0
            start = pos + 1
        if start + size > n:
            return _defect(f"byte {pos}", "a length that runs past the end of the manifest (truncated)", code="manifest-msgpack")
        key: Any = None
        if kind == "str":
            try:
                key = data[start : start + size].decode("utf-8")
            except UnicodeDecodeError:
                return _defect(f"byte {pos}", "a str that is not valid UTF-8", code="manifest-msgpack")
        elif is_key:  # an int key
            if field:
                key = int.from_bytes(data[pos + 1 : pos + 1 + field], "big", signed=b in _SIGNED)
            else:
                key = b if b <= 0x7F else b - 0x100
        if is_key:
            seen = stack[-1][1]
            if key in seen:
                return _defect(f"byte {pos}", f"duplicate map key {key!r} (msgpack decoders keep the last)", code="manifest-duplicate-key")
            seen.add(key)
        pos = start + size
        if count:
            stack.append([count * 2, set()] if kind == "map" else [count, None])
            continue
        while stack and stack[-1][0] == 0:
            stack.pop()
        if not stack:
            break
    if pos != n:
        return _defect(f"byte {pos}", f"{n - pos} bytes after the manifest's msgpack value", code="manifest-msgpack")
    return None


def decode_manifest(data: bytes) -> Manifest:
    """Decode and validate manifest bytes against the v1 schema and value rules.

    Raises :class:`ManifestError` (or :class:`VersionError` for a newer format version).
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"manifest is {len(data)} bytes; the limit is {MAX_MANIFEST_BYTES} (FORMAT.md §8)", code="manifest-too-large"
        )
    obj = unpack(data)
    if type(obj) is not dict:
        raise ManifestError(f"manifest is a {_kind(obj)}; expected a map (FORMAT.md §4.2)", code="manifest-not-map")
    return validate_manifest(obj)


def _type_error(where: str, expected: str, value: Any) -> ManifestError:
    return ManifestError(f"expected {expected}, got {_kind(value)} at {where} (FORMAT.md §4.3)", code="manifest-type")


def _kind(value: Any) -> str:
    if value is None:
        return "nil"
    return {bool: "bool", int: "int", float: "float", str: "str", bytes: "bin", list: "array", dict: "map"}.get(
        type(value), type(value).__name__
    )


def _check_keys(obj: dict[Any, Any], where: str, required: tuple[str, ...]) -> None:
    for k in obj:
        if type(k) is not str:
            raise ManifestError(f"{where}: key {k!r} is an int; keys here must be str (FORMAT.md §4.3)", code="manifest-type")
    missing = [k for k in required if k not in obj]
    if missing:
        raise ManifestError(f"{where}: missing key {missing[0]!r} (FORMAT.md §4.3)", code="manifest-missing-key")
    unknown = [k for k in obj if k not in required]
    if unknown:
        raise ManifestError(
            f"{where}: unknown key {unknown[0]!r}; a v1 reader refuses keys outside the schema (FORMAT.md §4.5)",
            code="manifest-unknown-key",
        )


def check_field(value: Any, kind: str, nullable: bool, where: str) -> None:
    """Check one typed field (``kind`` from METADATA_SCHEMA) or raise ManifestError."""
    if value is None and nullable:
        return
    t = type(value)
    if kind == "str":
        ok = t is str
    elif kind == "uint":
        ok = t is int and value >= 0
    elif kind == "float":
        ok = t is int or (t is float and math.isfinite(value))
        if t is float and not ok:
            raise ManifestError(f"{where}: {value!r} is not a finite number (FORMAT.md §4.3)", code="manifest-value")
    elif kind == "loss":
        ok = t is int or t is float
    elif kind == "bool":
        ok = t is bool
    elif kind == "strlist":
        ok = t is list and all(type(v) is str for v in value)
    elif kind == "map":
        ok = t is dict
    else:  # pragma: no cover - the schema names only the kinds above
        raise AssertionError(kind)
    if not ok:
        label = {"uint": "non-negative int", "strlist": "array of str", "float": "finite number", "loss": "number"}.get(kind, kind)
        raise _type_error(where, label + (" or nil" if nullable else ""), value)


def check_metadata(meta: dict[str, Any]) -> None:
    """Check a metadata map against METADATA_SCHEMA (exact keys, typed values)."""
    _check_keys(meta, "$.metadata", tuple(METADATA_SCHEMA))
    for name, (kind, nullable) in METADATA_SCHEMA.items():
        check_field(meta[name], kind, nullable, f"$.metadata.{name}")


def validate_manifest(m: dict[Any, Any]) -> Manifest:
    """Check a decoded manifest against the v1 schema and decode its value slots (FORMAT.md §4.3, §4.4)."""
    keys = list(m)
    if "format" not in m:
        raise ManifestError("manifest has no 'format' key (FORMAT.md §4.1)", code="manifest-format")
    fmt = m["format"]
    if fmt != MODEL_FORMAT_MARKER or type(fmt) is not str:
        raise ManifestError(f"format is {fmt!r}; expected {MODEL_FORMAT_MARKER!r} (FORMAT.md §4.1)", code="manifest-format")
    version = m.get("version")
    if type(version) is not int:  # True == 1 and 1.0 == 1 in Python: check the type
        raise ManifestError(f"expected int, got {_kind(version)} at $.version (FORMAT.md §4.1)", code="manifest-version")
    if version > SAVED_MODEL_VERSION:
        raise VersionError(
            f"Model version {version} is newer than supported version {SAVED_MODEL_VERSION}. Update the software.",
            code="version-newer",
        )
    if version < 1:
        raise ManifestError(f"version {version} is not a valid format version (FORMAT.md §4.1)", code="manifest-version")
    if keys[:2] != ["format", "version"]:
        raise ManifestError(
            f"manifest keys start {keys[:2]}; 'format' and 'version' must be the first two (FORMAT.md §4.1)",
            code="manifest-format",
        )
    _check_keys(m, "$", TOP_KEYS)
    check_field(m["latent_dim"], "uint", True, "$.latent_dim")
    meta = m["metadata"]
    check_field(meta, "map", False, "$.metadata")
    check_metadata(meta)
    members = m["members"]
    check_field(members, "map", False, "$.members")
    for name, info in members.items():
        if type(name) is not str:  # member names are str keys, like those of every schema map (FORMAT.md §4.3)
            raise ManifestError(f"$.members: key {name!r} is an int; keys here must be str (FORMAT.md §4.3)", code="manifest-type")
        where = f"$.members.{name}"
        check_field(info, "map", False, where)
        _check_keys(info, where, MEMBER_KEYS)
        check_field(info["size"], "uint", False, f"{where}.size")
        check_field(info["aliases"], "map", False, f"{where}.aliases")
        for alias, target in info["aliases"].items():
            if type(alias) is not str:
                raise _type_error(f"{where}.aliases", "str keys", alias)
            if type(target) is not str:
                raise _type_error(f"{where}.aliases.{alias}", "str", target)
    decoder = Decoder()
    values = {slot: decoder.decode(m[slot], (slot,), slot_member(slot)) for slot in VALUE_SLOTS}
    for slot in ("spectrogram_config", "training_config", "state_dict"):
        if type(values[slot]) is not dict:
            raise _type_error(f"$.{slot}", "map", m[slot])
    for slot in ("analysis", "vocoder_state"):
        if values[slot] is not None and type(values[slot]) is not dict:
            raise _type_error(f"$.{slot}", "map or nil", m[slot])
    from .container import MODEL_NAME, VOCODER_NAME

    expected = (MODEL_NAME, VOCODER_NAME) if m["vocoder_state"] is not None else (MODEL_NAME,)
    if sorted(members) != sorted(expected):
        raise ManifestError(
            f"$.members lists {sorted(members)}; expected {list(expected)} "
            "(the vocoder member is present exactly when vocoder_state is not nil) (FORMAT.md §4.3)",
            code="manifest-mismatch",
        )
    return Manifest(m, values, decoder.refs)


def coerce_user_metadata(value: Any) -> dict[str, str]:
    """User metadata as stored (FORMAT.md §5.2): a map of str to str, UTF-8 encodable, sorted by key (UTF-8 byte order).

    None gives ``{}``. Anything else is InputError ``invalid-input`` naming the first bad key or value.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"user_metadata: expected a map of str to str, got {type(value).__name__}", code="invalid-input")
    for k, v in value.items():
        for what, text in (("key", k), ("value", v)):
            if type(text) is not str:
                raise InputError(f"user_metadata: {what} {text!r} is a {type(text).__name__}; keys and values are str "
                                 "(as safetensors' __metadata__)", code="invalid-input")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InputError(f"user_metadata: {what} {text!r} cannot be encoded as UTF-8 (a lone surrogate)",
                                 code="invalid-input") from e
    return {k: value[k] for k in sorted(value, key=lambda k: k.encode("utf-8"))}
