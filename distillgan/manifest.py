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
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import msgpack

from .errors import InputError, ManifestError, VersionError
from .values import MAX_DEPTH, Decoder, Ref, find_unencodable, render_path

MODEL_FORMAT_MARKER = "distillgan_model"  # FORMAT.md §4.1
SAVED_MODEL_VERSION = 1  # FORMAT.md §4.1
LEGACY_FORMAT_MARKER = "distill_model"  # the pickle-based .distill format (FORMAT.md §7)

MAX_MANIFEST_BYTES = 8 << 20  # FORMAT.md §8

# FORMAT.md §4.3: every top-level key is required; the value slots hold value trees (§4.4)
VALUE_SLOTS = ("analysis", "extra", "spectrogram_config", "state_dict", "training_config", "vocoder_state")
TOP_KEYS = ("format", "version", "latent_dim", "members", "metadata", *VALUE_SLOTS)
MEMBER_KEYS = ("aliases", "size")


@dataclass
class ModelMetadata:
    """User-facing metadata stored with a saved model (the seed project's fields).

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
            f"metadata: unknown field {unknown[0]!r}; the fields are {', '.join(METADATA_SCHEMA)}", code="invalid-input"
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


def _not_ext(value: Any, where: str) -> None:
    """msgpack turns the timestamp ext type (-1) into an object, bypassing ext_hook: refuse it as the ext type it is."""
    if type(value) is msgpack.Timestamp:
        raise ManifestError(f"{where}: msgpack ext type -1 (timestamp) is not allowed (FORMAT.md §4.2)", code="manifest-ext-type")


def _pairs_hook(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    for k, _ in pairs:
        t = type(k)
        if t is not str and t is not int:
            _not_ext(k, "a map key")
            raise ManifestError(f"map key {k!r} is a {_kind(k)}; keys must be str or int (FORMAT.md §4.2)", code="manifest-type")
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[Any] = set()
        for k, _ in pairs:
            if k in seen:
                raise ManifestError(f"duplicate map key {k!r} (FORMAT.md §4.2)", code="manifest-duplicate-key")
            seen.add(k)
    return out


def _ext_hook(code: int, data: bytes) -> Any:
    raise ManifestError(f"msgpack ext type {code} is not allowed (FORMAT.md §4.2)", code="manifest-ext-type")


def unpack(data: bytes) -> Any:
    """Decode msgpack under the §4.2 rules (one object, str/int keys, no duplicates, no ext types)."""
    n = len(data)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,  # _pairs_hook refuses every key that is not str or int, with one code
            use_list=True,
            object_pairs_hook=_pairs_hook,
            ext_hook=_ext_hook,
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n,
            max_map_len=n,
            max_ext_len=n,
        )
    except ManifestError:
        raise
    except (msgpack.StackError, RecursionError) as e:
        raise ManifestError(f"manifest nests deeper than the decoder allows (limit {MAX_DEPTH}, FORMAT.md §8)", code="manifest-depth") from e
    except msgpack.ExtraData as e:
        raise ManifestError(f"{len(e.extra)} bytes follow the manifest's first msgpack value (FORMAT.md §4.2)", code="manifest-msgpack") from e
    except Exception as e:  # msgpack signals malformed input with several types
        raise ManifestError(f"manifest is not valid msgpack: {e} (FORMAT.md §4.2)", code="manifest-msgpack") from e


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
    _not_ext(value, where)
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
    _not_ext(fmt, "$.format")
    if fmt != MODEL_FORMAT_MARKER or type(fmt) is not str:
        raise ManifestError(f"format is {fmt!r}; expected {MODEL_FORMAT_MARKER!r} (FORMAT.md §4.1)", code="manifest-format")
    version = m.get("version")
    _not_ext(version, "$.version")
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
