"""manifest.msgpack: the typed schema, canonical encoding and strict decoding (FORMAT.md §4).

The manifest is a msgpack map holding everything a model file stores that is
not a tensor. Writing is canonical (``format`` then ``version`` first, every
other map's keys in UTF-8 byte order, floats as float64, integers in their
shortest form), so equal inputs give equal bytes. Reading accepts any valid
msgpack but refuses duplicate keys, ext types, binary strings, non-finite
floats, excessive nesting and anything outside the v1 schema.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import msgpack

from .errors import InputError, ManifestError, VersionError

MODEL_FORMAT_MARKER = "distillgan_model"  # FORMAT.md §4.1
SAVED_MODEL_VERSION = 1  # FORMAT.md §4.1
LEGACY_FORMAT_MARKER = "distill_model"  # the pickle-based .distill format (FORMAT.md §7)

MAX_MANIFEST_BYTES = 1 << 20  # FORMAT.md §8
MAX_DEPTH = 32  # FORMAT.md §8: nesting of arrays and maps
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1  # what msgpack can carry

NDARRAY_KEY = "$ndarray"  # FORMAT.md §4.4: placeholder for a numpy array in the analysis
TENSOR_KEY = "$tensor"  # FORMAT.md §4.4: placeholder for a torch tensor in the analysis
PLACEHOLDER_KEYS = (NDARRAY_KEY, TENSOR_KEY)

TOP_KEYS_REQUIRED = (
    "format",
    "version",
    "analysis",
    "latent_dim",
    "members",
    "metadata",
    "spectrogram_config",
    "training_config",
)
TOP_KEYS_OPTIONAL = ("vocoder",)
VOCODER_KEYS = ("config", "training_metadata", "type")
MEMBER_KEYS = ("aliases", "size")


@dataclass
class ModelMetadata:
    """User-facing metadata stored with a saved model (the seed project's fields).

    ``model_id`` and ``save_date`` are filled in by ``save_model`` when empty.
    Dates are ISO 8601 strings. Losses are finite floats or None.
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
    "final_train_loss": ("float", True),
    "final_val_loss": ("float", True),
    "tags": ("strlist", False),
    "has_analysis": ("bool", False),
    "n_active_components": ("uint", False),
}
assert tuple(METADATA_SCHEMA) == tuple(f.name for f in fields(ModelMetadata))


# --- encoding -------------------------------------------------------------------


def to_plain(value: Any, where: str, depth: int = 0) -> Any:
    """Return ``value`` as plain msgpack data with canonically ordered maps.

    Accepts None, bool, int, finite float, str, lists/tuples and mappings with
    str keys (dataclass instances are not converted here). Raises
    :class:`InputError` naming the path of the first value that cannot be stored.
    """
    if depth > MAX_DEPTH:
        raise InputError(f"{where}: nested deeper than {MAX_DEPTH} levels (FORMAT.md §8)", code="manifest-depth")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError(f"{where}: string {value!r} is not valid Unicode (lone surrogate)", code="manifest-value") from e
        return str(value)
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise InputError(f"{where}: integer {value} does not fit in 64 bits", code="manifest-value")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"{where}: {value!r} is not finite; the manifest stores finite floats only", code="manifest-value")
        return float(value)
    if isinstance(value, (list, tuple)):
        return [to_plain(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k in sorted(value, key=_key_order(where)):
            out[k] = to_plain(value[k], f"{where}.{k}", depth + 1)
        return out
    # numpy scalars and 0-d values with .item() are plain numbers in disguise
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return to_plain(item(), where, depth)
    raise InputError(
        f"{where}: cannot store a value of type {type(value).__name__} in the manifest "
        "(allowed: None, bool, int, float, str, list, dict with str keys)",
        code="manifest-type",
    )


def _key_order(where: str):
    def key(k: object) -> bytes:
        if not isinstance(k, str):
            raise InputError(f"{where}: map key {k!r} is a {type(k).__name__}; keys must be str", code="manifest-type")
        try:
            return k.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError(f"{where}: map key {k!r} is not valid Unicode (lone surrogate)", code="manifest-value") from e

    return key


def encode_manifest(manifest: Mapping[str, Any]) -> bytes:
    """Canonical msgpack bytes of ``manifest`` (``format`` and ``version`` first)."""
    plain = to_plain(manifest, "$")
    ordered = {"format": plain.pop("format"), "version": plain.pop("version")}
    ordered.update(plain)
    data = msgpack.packb(ordered, use_bin_type=True, use_single_float=False)
    if len(data) > MAX_MANIFEST_BYTES:
        raise InputError(
            f"manifest would be {len(data)} bytes; the limit is {MAX_MANIFEST_BYTES} (FORMAT.md §8). "
            "Store large arrays in the analysis as numpy arrays or tensors, not lists.",
            code="manifest-too-large",
        )
    return data


# --- decoding -------------------------------------------------------------------


def _pairs_hook(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if not isinstance(k, str):
            raise ManifestError(f"map key {k!r} is {type(k).__name__}; keys must be str (FORMAT.md §4.2)", code="manifest-type")
        if k in out:
            raise ManifestError(f"duplicate map key {k!r} (FORMAT.md §4.2)", code="manifest-duplicate-key")
        out[k] = v
    return out


def _ext_hook(code: int, data: bytes) -> Any:
    raise ManifestError(f"msgpack ext type {code} is not allowed (FORMAT.md §4.2)", code="manifest-ext-type")


def _check_plain(value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ManifestError(f"{where}: nested deeper than {MAX_DEPTH} levels (FORMAT.md §8)", code="manifest-depth")
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ManifestError(f"{where}: {value!r} is not a finite number (FORMAT.md §4.2)", code="manifest-value")
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(v, f"{where}.{k}", depth + 1)
        return
    if isinstance(value, bytes):
        raise ManifestError(f"{where}: binary strings are not allowed (FORMAT.md §4.2)", code="manifest-type")
    raise ManifestError(f"{where}: {type(value).__name__} is not a plain msgpack value (FORMAT.md §4.2)", code="manifest-ext-type")


def decode_manifest(data: bytes) -> dict[str, Any]:
    """Decode and validate manifest bytes against the v1 schema.

    Returns the manifest as plain Python data. Raises :class:`ManifestError`
    (or :class:`VersionError` for a newer format version).
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"manifest is {len(data)} bytes; the limit is {MAX_MANIFEST_BYTES} (FORMAT.md §8)", code="manifest-too-large"
        )
    n = len(data)
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,  # _pairs_hook refuses every non-str key with one code
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
    if not isinstance(obj, dict):
        raise ManifestError(f"manifest is a {type(obj).__name__}; expected a map (FORMAT.md §4.2)", code="manifest-not-map")
    _check_plain(obj, "$", 0)
    validate_manifest(obj)
    return obj


def _type_error(where: str, expected: str, value: Any) -> ManifestError:
    return ManifestError(f"expected {expected}, got {_kind(value)} at {where} (FORMAT.md §4.3)", code="manifest-type")


def _kind(value: Any) -> str:
    if value is None:
        return "nil"
    return {bool: "bool", int: "int", float: "float", str: "str", list: "array", dict: "map"}.get(type(value), type(value).__name__)


def _check_keys(obj: dict[str, Any], where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    missing = [k for k in required if k not in obj]
    if missing:
        raise ManifestError(f"{where}: missing key {missing[0]!r} (FORMAT.md §4.3)", code="manifest-missing-key")
    unknown = [k for k in obj if k not in required and k not in optional]
    if unknown:
        raise ManifestError(
            f"{where}: unknown key {unknown[0]!r}; a v1 reader refuses keys outside the schema (FORMAT.md §4.5)",
            code="manifest-unknown-key",
        )


def check_field(value: Any, kind: str, nullable: bool, where: str) -> None:
    """Check one typed field (``kind`` from METADATA_SCHEMA) or raise ManifestError."""
    if value is None and nullable:
        return
    ok = {
        "str": isinstance(value, str),
        "uint": type(value) is int and value >= 0,
        "float": type(value) in (int, float),
        "bool": type(value) is bool,
        "strlist": isinstance(value, list) and all(isinstance(t, str) for t in value),
        "map": isinstance(value, dict),
    }[kind]
    if not ok:
        label = {"uint": "non-negative int", "strlist": "array of str", "float": "float"}.get(kind, kind)
        raise _type_error(where, label + (" or nil" if nullable else ""), value)


def check_metadata(meta: dict[str, Any], error: type[ManifestError] | type[InputError] = ManifestError) -> None:
    """Check a metadata map against METADATA_SCHEMA (exact keys, typed values)."""
    try:
        _check_keys(meta, "$.metadata", tuple(METADATA_SCHEMA))
        for name, (kind, nullable) in METADATA_SCHEMA.items():
            check_field(meta[name], kind, nullable, f"$.metadata.{name}")
    except ManifestError as e:
        if error is ManifestError:
            raise
        raise error(str(e).replace(" (FORMAT.md §4.3)", ""), code=e.code) from e


def validate_manifest(m: dict[str, Any]) -> None:
    """Check a decoded manifest against the v1 schema (FORMAT.md §4.3)."""
    keys = list(m)
    if "format" not in m:
        raise ManifestError("manifest has no 'format' key (FORMAT.md §4.1)", code="manifest-format")
    fmt = m["format"]
    if fmt != MODEL_FORMAT_MARKER:
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
    _check_keys(m, "$", TOP_KEYS_REQUIRED, TOP_KEYS_OPTIONAL)
    if m["latent_dim"] is not None:
        check_field(m["latent_dim"], "uint", True, "$.latent_dim")
    for key in ("spectrogram_config", "training_config"):
        check_field(m[key], "map", False, f"$.{key}")
    if m["analysis"] is not None:
        check_field(m["analysis"], "map", False, "$.analysis")
    meta = m["metadata"]
    check_field(meta, "map", False, "$.metadata")
    check_metadata(meta)
    members = m["members"]
    check_field(members, "map", False, "$.members")
    from .container import MODEL_NAME, VOCODER_NAME

    expected = (MODEL_NAME, VOCODER_NAME) if "vocoder" in m else (MODEL_NAME,)
    if sorted(members) != sorted(expected):
        raise ManifestError(
            f"$.members lists {sorted(members)}; expected {list(expected)} "
            "(the vocoder member is present exactly when 'vocoder' is) (FORMAT.md §4.3)",
            code="manifest-mismatch",
        )
    for name, info in members.items():
        where = f"$.members.{name}"
        check_field(info, "map", False, where)
        _check_keys(info, where, MEMBER_KEYS)
        check_field(info["size"], "uint", False, f"{where}.size")
        check_field(info["aliases"], "map", False, f"{where}.aliases")
        for alias, target in info["aliases"].items():
            if not isinstance(target, str):
                raise _type_error(f"{where}.aliases.{alias}", "str", target)
    if "vocoder" in m:
        voc = m["vocoder"]
        check_field(voc, "map", False, "$.vocoder")
        _check_keys(voc, "$.vocoder", VOCODER_KEYS)
        check_field(voc["type"], "str", False, "$.vocoder.type")
        if not voc["type"]:
            raise ManifestError("$.vocoder.type is empty; expected the vocoder's type, e.g. 'hifigan' (FORMAT.md §4.3)", code="manifest-value")
        check_field(voc["config"], "map", False, "$.vocoder.config")
        check_field(voc["training_metadata"], "map", False, "$.vocoder.training_metadata")
