"""The on-disk index of a models folder, ``model_library.json``, in the app's own layout.

The index is the app's (``taylorbrook/Distill_SmallCorpusGenerativeAIAudio`` v1.1,
``library/catalog.py``), so that the app and distillgan can share one folder::

    {
      "version": 2,
      "models": {
        "<model_id>": {"model_id": "<model_id>", "name": ..., "description": ..., "file_path": "x.distillgan",
                       "file_size_bytes": 123, "dataset_name": ..., "dataset_file_count": 0,
                       "dataset_total_duration_s": 0.0, "training_date": ..., "save_date": ...,
                       "training_epochs": 0, "final_train_loss": 0.0, "final_val_loss": NaN,
                       "has_analysis": false, "n_active_components": 0, "tags": [...],
                       "vocoder": null | {"type": "hifigan_v2", "epochs": 0, "final_loss": 0.0, "training_date": ""}},
        ...
      }
    }

Every entry has exactly the app's fields (the app builds ``ModelEntry(**entry)``, so one key
more or less makes it skip the entry), floats are never ``null`` (the app formats
``f"{entry.final_val_loss:.4f}"``), and non-finite floats are written as the ``NaN``/``Infinity``
literals that the app's ``json.dump`` writes and its ``json.loads`` reads. We write one entry per
line, ASCII only, in the order the entries were added (the app's dict order).

Reading trusts nothing: the file must be a regular file (never a link, FIFO or device) of at most
``MAX_INDEX_BYTES``; a broken top level makes the whole index unusable (:class:`IndexUnusable`),
an invalid entry is dropped with its reason (its model file is then indexed again from its own
manifest, which is the truth). Besides the app's layout this reads the layout distillgan wrote
before it (``"models": [entry, ...]``, ``null`` losses and vocoder statistics) and the app's
version-1 index (no ``vocoder`` key); both are written back in the app's layout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeGuard

from .fsio import open_regular
from .values import INT_MAX, INT_MIN

INDEX_NAME = "model_library.json"
INDEX_VERSION = 2  # the app's; 1 is the app's earlier one (entries without "vocoder"), read and rewritten as 2
MAX_INDEX_BYTES = 64 << 20  # FORMAT.md §8: a larger index is unusable and rebuilt from the model files
MODEL_FILE_EXTENSION = ".distillgan"
LEGACY_FILE_EXTENSION = ".distill"



@dataclass
class VocoderInfo:
    """Summary of a bundled vocoder, as the app's index holds it (the app's defaults for what is unknown)."""

    type: str
    epochs: int = 0
    final_loss: float = 0.0
    training_date: str = ""


EntryProblem = Literal["", "needs-conversion", "missing-file", "unreadable"]
ENTRY_PROBLEMS: tuple[EntryProblem, ...] = ("needs-conversion", "missing-file", "unreadable")


@dataclass
class ModelEntry:
    """One model in the index: its metadata plus where the file is (the app's fields, in its order).

    ``problem`` (never written to the index) says why distillgan cannot confirm the file the
    entry names, when it cannot: ``"needs-conversion"`` (a pickle-era ``.distillgan``: see
    ``distillgan.convert_folder``), ``"missing-file"`` (no such file in the folder, or a
    ``file_path`` that is no bare file name, e.g. one written with ``\\``) or ``"unreadable"``
    (a damaged file, a legacy ``.distill``); ``problem_detail`` says it in words. Such entries
    are listed and kept in the index; ``repair_index`` is the one clean-up that drops them.
    """

    model_id: str
    name: str
    description: str = ""
    file_path: str = ""  # a bare file name inside the models folder
    file_size_bytes: int = 0
    dataset_name: str = ""
    dataset_file_count: int = 0
    dataset_total_duration_s: float = 0.0
    training_date: str = ""
    save_date: str = ""
    training_epochs: int = 0
    final_train_loss: float = 0.0
    final_val_loss: float = 0.0
    has_analysis: bool = False
    n_active_components: int = 0
    tags: list[str] = field(default_factory=list)
    vocoder: VocoderInfo | None = None
    problem: EntryProblem = field(default="", compare=False)
    problem_detail: str = field(default="", compare=False)


ENTRY_FIELDS = tuple(f.name for f in fields(ModelEntry) if f.name not in ("problem", "problem_detail"))  # the app's
VOCODER_FIELDS = tuple(f.name for f in fields(VocoderInfo))
_DEFAULTS = ModelEntry(model_id="", name="")
_KINDS = {
    "model_id": "str", "name": "str", "description": "str", "file_path": "str", "file_size_bytes": "uint",
    "dataset_name": "str", "dataset_file_count": "uint", "dataset_total_duration_s": "float", "training_date": "str",
    "save_date": "str", "training_epochs": "uint", "final_train_loss": "float", "final_val_loss": "float",
    "has_analysis": "bool", "n_active_components": "uint", "tags": "strlist",
}  # fmt: skip
_REQUIRED = ("model_id", "name", "file_path")


class IndexUnusable(Exception):
    """The index as a whole cannot be used (internal: the caller rebuilds it from the model files)."""


class InvalidEntry(ValueError):
    """One index entry (or an entry given to ``ModelLibrary.add_entry``) is not valid; the message says why."""


# --- values --------------------------------------------------------------------------------------


def is_text(v: Any) -> TypeGuard[str]:
    """A str that UTF-8 can encode (no lone surrogate, which ``json.loads`` accepts from ``\\udXXX``)."""
    if type(v) is not str:
        return False
    if v.isascii():
        return True
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _number(v: Any, where: str) -> float:
    """An index float: int or float, never bool; ints must fit a float (a 400-digit int does not)."""
    if type(v) is float:
        return v
    if type(v) is int and INT_MIN <= v <= INT_MAX:
        return float(v)
    raise InvalidEntry(f"{where}: expected a number, got {_show(v)}")


def _show(v: Any) -> str:
    """A short, escaped description of a hostile value for a message."""
    if type(v) is int and not INT_MIN <= v <= INT_MAX:
        return "an int outside [-2**63, 2**64-1]"
    text = ascii(v)
    return f"{type(v).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def is_model_file_name(name: Any) -> bool:
    """True for a name an index entry may give: a bare, visible ``*.distillgan`` (or legacy ``*.distill``) name.

    Not a path (no ``/``, ``\\`` or ``:``, which Windows reads as a drive or a stream), not hidden,
    printable (no newline, no control character). The folder indexes only files so named (FORMAT.md §15.2).
    """
    return (
        is_text(name)
        and bool(name)
        and os.path.basename(name) == name
        and not any(c in name for c in "/\\:\0")
        and not name.startswith(".")
        and name.isprintable()
        and name.endswith((MODEL_FILE_EXTENSION, LEGACY_FILE_EXTENSION))
    )


def check_file_name(name: Any, where: str) -> str:
    """``name`` when :func:`is_model_file_name` accepts it; InvalidEntry otherwise."""
    if not is_text(name) or not name:
        raise InvalidEntry(f"{where}: expected a file name, got {_show(name)}")
    if not is_model_file_name(name):
        raise InvalidEntry(f"{where}: {_show(name)} is not a visible .distillgan file name inside the folder")
    return name


def _value(raw: dict[str, Any], name: str, where: str) -> Any:
    v = raw.get(name)
    kind = _KINDS[name]
    if v is None:
        if name in _REQUIRED:
            raise InvalidEntry(f"{where}: field {name!r} is missing")
        return list(_DEFAULTS.tags) if kind == "strlist" else getattr(_DEFAULTS, name)  # our old layout wrote null losses
    if kind == "str":
        if not is_text(v):
            raise InvalidEntry(f"{where}.{name}: expected a string, got {_show(v)}")
        return v
    if kind == "uint":
        if type(v) is not int or not 0 <= v <= INT_MAX:
            raise InvalidEntry(f"{where}.{name}: expected an int from 0 to 2**64-1, got {_show(v)}")
        return v
    if kind == "float":
        return _number(v, f"{where}.{name}")
    if kind == "bool":
        if type(v) is not bool:
            raise InvalidEntry(f"{where}.{name}: expected true or false, got {_show(v)}")
        return v
    if type(v) is not list or not all(is_text(t) for t in v):  # strlist
        raise InvalidEntry(f"{where}.{name}: expected a list of strings, got {_show(v)}")
    return list(v)


def _vocoder(v: Any, where: str) -> VocoderInfo | None:
    if v is None:
        return None
    if type(v) is not dict:
        raise InvalidEntry(f"{where}: expected null or an object, got {_show(v)}")
    kind, epochs, loss, date = (v.get(k) for k in VOCODER_FIELDS)
    if not is_text(kind):
        raise InvalidEntry(f"{where}.type: expected a string, got {_show(kind)}")
    if epochs is not None and (type(epochs) is not int or not INT_MIN <= epochs <= INT_MAX):
        raise InvalidEntry(f"{where}.epochs: expected an int, got {_show(epochs)}")
    if date is not None and not is_text(date):
        raise InvalidEntry(f"{where}.training_date: expected a string, got {_show(date)}")
    return VocoderInfo(
        type=kind,
        epochs=0 if epochs is None else epochs,
        final_loss=0.0 if loss is None else _number(loss, f"{where}.final_loss"),
        training_date=date or "",
    )


def entry_from_json(raw: Any, where: str = "entry", *, any_path: bool = False) -> ModelEntry:
    """Validate one entry as read from JSON (or as given to ``add_entry``) and fill the app's defaults.

    Unknown keys are dropped (the app would refuse the entry); ``null`` losses and vocoder
    statistics (distillgan's earlier layout) become the app's defaults. Raises InvalidEntry.
    With ``any_path`` (reading the index), a ``file_path`` that is a string but no bare file name
    of the folder gives the entry flagged ``missing-file``, kept as written, never used as a path.
    """
    if type(raw) is not dict:
        raise InvalidEntry(f"{where}: expected an object, got {_show(raw)}")
    values = {name: _value(raw, name, where) for name in _KINDS}
    if not values["model_id"]:
        raise InvalidEntry(f"{where}.model_id: empty")
    entry = ModelEntry(**values, vocoder=_vocoder(raw.get("vocoder"), f"{where}.vocoder"))
    try:
        check_file_name(values["file_path"], f"{where}.file_path")
    except InvalidEntry as e:
        if not any_path or not values["file_path"]:
            raise
        return replace(entry, problem="missing-file", problem_detail=str(e))
    return entry


def entry_to_json(entry: ModelEntry) -> dict[str, Any]:
    """The entry as the app's ``asdict(entry)`` gives it (plain data, the app's key order)."""
    d = {name: getattr(entry, name) for name in ENTRY_FIELDS}
    d["tags"] = list(entry.tags)
    voc = entry.vocoder
    d["vocoder"] = None if voc is None else {name: getattr(voc, name) for name in VOCODER_FIELDS}
    return d


def normalized(entry: ModelEntry, where: str = "entry") -> ModelEntry:
    """``entry`` checked as the index would read it back (so what we write, we and the app can read)."""
    if not isinstance(entry, ModelEntry):
        raise InvalidEntry(f"{where}: expected a ModelEntry, got {type(entry).__name__}")
    if entry.vocoder is not None and not isinstance(entry.vocoder, VocoderInfo):
        raise InvalidEntry(f"{where}.vocoder: expected a VocoderInfo or None, got {type(entry.vocoder).__name__}")
    raw = entry_to_json(entry)
    nulls = [k for k, v in raw.items() if v is None and k != "vocoder"] + [f"vocoder.{k}" for k, v in (raw["vocoder"] or {}).items() if v is None]
    if nulls:  # null is only read from distillgan's earlier index (as the app's default); never written
        raise InvalidEntry(f"{where}.{nulls[0]}: expected a value, got None")
    return entry_from_json(raw, where)


def copy_entry(e: ModelEntry) -> ModelEntry:
    """A copy a caller may change without changing what the library holds."""
    out = object.__new__(ModelEntry)  # the fields as they are (validated when the entry was made), without __init__'s cost
    out.__dict__.update(e.__dict__)
    out.tags = list(e.tags)
    if e.vocoder is not None:
        voc = object.__new__(VocoderInfo)
        voc.__dict__.update(e.vocoder.__dict__)
        out.vocoder = voc
    return out


# --- the document ----------------------------------------------------------------------------------


IndexLayout = Literal["app", "list", "v1"]  # the app's; distillgan's earlier layout; the app's earlier index (no vocoder key)


@dataclass
class IndexDoc:
    """A parsed index: valid entries in file order, the entries dropped and why, and the layout read."""

    entries: dict[str, ModelEntry]
    dropped: dict[str, str] = field(default_factory=dict)  # model id (or position) -> reason
    layout: IndexLayout = "app"


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise IndexUnusable(f"key {ascii(dup)[:80]} appears twice in one object")
    return out


def parse_index(data: bytes) -> IndexDoc:
    """Parse the bytes of ``model_library.json``; IndexUnusable when its top level cannot be used."""
    if len(data) > MAX_INDEX_BYTES:
        raise IndexUnusable(f"{len(data)} bytes; the limit is {MAX_INDEX_BYTES} (FORMAT.md §8)")
    try:
        doc = json.loads(data.decode("utf-8"), object_pairs_hook=_pairs)
    except (ValueError, RecursionError) as e:  # not UTF-8, not JSON, a number of over 4300 digits, nesting too deep
        raise IndexUnusable(f"not valid JSON: {str(e)[:200]}") from e
    if type(doc) is not dict:
        raise IndexUnusable(f"expected an object at the top, got {type(doc).__name__}")
    version = doc.get("version")
    if type(version) is not int or version not in (1, INDEX_VERSION):
        raise IndexUnusable(f"'version' is {_show(version)}; this reader knows 1 and {INDEX_VERSION}")
    models = doc.get("models")
    out = IndexDoc(entries={}, layout="app" if version == INDEX_VERSION else "v1")
    if type(models) is dict:
        items = list(models.items())
    elif type(models) is list and version == INDEX_VERSION:
        out.layout = "list"
        items = [(raw.get("model_id") if type(raw) is dict else None, raw) for raw in models]
    else:
        raise IndexUnusable(f"'models' is {_show(models)}; expected an object mapping model ids to entries")
    seen: set[Any] = set()
    for position, (key, raw) in enumerate(items):
        label = key if is_text(key) else f"#{position}"
        try:
            entry = entry_from_json(raw, f"entry {ascii(label)[:80]}", any_path=True)
            if entry.model_id != key:
                raise InvalidEntry(f"entry {ascii(label)[:80]}: its model_id is {ascii(entry.model_id)[:80]}")
        except InvalidEntry as e:
            out.dropped[label] = str(e)
            continue
        if key in seen:  # the list layout can repeat an id: neither copy is trusted
            out.dropped[label] = f"model id {ascii(key)[:80]} appears twice"
            out.entries.pop(key, None)
            continue
        seen.add(key)
        out.entries[key] = entry
    return out


def entry_line(entry: ModelEntry) -> str:
    """One entry as it stands in the file: ``"<id>": {...}`` on one line (ASCII, NaN/Infinity literals)."""
    return json.dumps(entry.model_id) + ": " + json.dumps(entry_to_json(entry), allow_nan=True)


def encode_index(lines: list[str]) -> bytes:
    """The whole file from its entry lines (see ``entry_line``), in the app's layout."""
    if not lines:
        return b'{\n  "version": 2,\n  "models": {}\n}\n'
    return ('{\n  "version": 2,\n  "models": {\n    ' + ",\n    ".join(lines) + "\n  }\n}\n").encode("ascii")


def _skip_blanks_back(data: bytes, i: int) -> int:
    """The index of the last non-blank byte at or before ``i`` (-1 if none): JSON's four blanks, no copy."""
    while i >= 0 and data[i] in b" \t\r\n":
        i -= 1
    return i


def _models_end(data: bytes) -> int | None:
    """Where the ``models`` object's closing brace is, if the text ends with it and the top level's (else None)."""
    i = _skip_blanks_back(data, len(data) - 1)
    if i < 0 or data[i] != ord("}"):
        return None
    i = _skip_blanks_back(data, i - 1)
    return i if i >= 0 and data[i] == ord("}") else None


def appendable_ids(data: bytes) -> set[str] | None:
    """The model ids of an index a save can extend by appending its line (``append_entry``), else None.

    The JSON is parsed (at C speed) but the entries are not validated: a save adds its own entry
    and leaves the others as they are (readers reconcile a damaged index). Appendable means: the
    top level is exactly ``{"version": 2, "models": {...}}`` in that order, ``models`` a non-empty
    object, and nothing but blanks after the two closing braces — whoever wrote it (the app's
    ``indent=2`` or our one line per entry).
    """
    if len(data) > MAX_INDEX_BYTES:
        return None
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if type(doc) is not dict or list(doc) != ["version", "models"] or type(doc["version"]) is not int or doc["version"] != 2:
        return None
    models = doc["models"]
    if type(models) is not dict or not models or _models_end(data) is None:
        return None
    return set(models)


def append_entry(data: bytes, line: str) -> bytes:
    """``data`` (appendable: see ``appendable_ids``) with the entry ``line`` added last to ``models``.

    The top level's last member is ``models``, an object, so the last brace but one closes it:
    the new member goes after its last value. On a file we wrote, this gives exactly
    ``encode_index`` of the lines plus ``line``.
    """
    end = _models_end(data)
    assert end is not None, "append_entry needs an appendable index"
    last = _skip_blanks_back(data, end - 1) + 1
    return b"".join((memoryview(data)[:last], b",\n    ", line.encode("ascii"), b"\n  ", memoryview(data)[end:]))


# --- the file ---------------------------------------------------------------------------------------


def _unusable(what: str) -> IndexUnusable:
    return IndexUnusable(f"it is {what}; links are never followed" if "link" in what else "it is not a regular file")


def read_index_bytes(path: str | os.PathLike[str]) -> bytes | None:
    """The index's bytes, None when there is none; IndexUnusable when it is not a regular file within the limit.

    Opened without following a link and without blocking (a FIFO), the size checked on the
    descriptor before reading, and never more than ``MAX_INDEX_BYTES + 1`` bytes read.
    """
    try:
        fd, st = open_regular(path, os.O_RDONLY, _unusable, follow_links=False)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise IndexUnusable(e.strerror or str(e)) from e
    try:
        if st.st_size > MAX_INDEX_BYTES:
            raise IndexUnusable(f"{st.st_size} bytes; the limit is {MAX_INDEX_BYTES} (FORMAT.md §8)")
        chunks = [os.read(fd, st.st_size + 1)]  # one call for the whole file, as a rule
        total = len(chunks[0])
        while chunks[-1] and total <= MAX_INDEX_BYTES:  # it grew or the read was short: bounded all the same
            chunks.append(os.read(fd, min(1 << 20, MAX_INDEX_BYTES + 1 - total)))
            total += len(chunks[-1])
    except OSError as e:
        raise IndexUnusable(e.strerror or str(e)) from e
    finally:
        os.close(fd)
    if total > MAX_INDEX_BYTES:
        raise IndexUnusable(f"over {MAX_INDEX_BYTES} bytes; the limit (FORMAT.md §8)")
    return chunks[0] if len(chunks) == 2 else b"".join(chunks)  # 2: the whole file, then end of file
