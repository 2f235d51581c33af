"""The model library folder and its index, ``model_library.json``.

The ``.distillgan`` files are the truth; the index is a cache of their
metadata that ``repair_index`` can always rebuild from the manifests. Every
change to the index happens under a cross-process file lock and is written
atomically (temporary file, fsync, rename), so concurrent processes lose
nothing and a crash leaves the old index or the new one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import filelock

from .errors import DistillganError, LibraryError
from .manifest import METADATA_SCHEMA, check_field

MODEL_FILE_EXTENSION = ".distillgan"
LEGACY_FILE_EXTENSION = ".distill"
INDEX_NAME = "model_library.json"
LOCK_NAME = ".model_library.lock"
INDEX_VERSION = 2  # 1: the seed app's index (entries without "vocoder")
LOCK_TIMEOUT_S = 120.0
STALE_TEMP_S = 3600.0  # a save writes its temporary file continuously; an hour of silence means it died


@dataclass
class VocoderInfo:
    """Summary of a bundled vocoder, from its training metadata."""

    type: str
    epochs: int | None = None
    final_loss: float | None = None
    training_date: str = ""


@dataclass
class ModelEntry:
    """One model in the index: its metadata plus where the file is."""

    model_id: str
    name: str
    file_path: str  # a bare file name inside the models folder
    file_size_bytes: int = 0
    description: str = ""
    dataset_name: str = ""
    dataset_file_count: int = 0
    dataset_total_duration_s: float = 0.0
    training_date: str = ""
    save_date: str = ""
    training_epochs: int = 0
    final_train_loss: float | None = 0.0
    final_val_loss: float | None = 0.0
    has_analysis: bool = False
    n_active_components: int = 0
    tags: list[str] = field(default_factory=list)
    vocoder: VocoderInfo | None = None


@dataclass
class RepairReport:
    """What ``repair_index`` found: ids added and removed, files skipped and why."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    invalid: dict[str, str] = field(default_factory=dict)  # file name -> error code
    ignored: list[str] = field(default_factory=list)  # legacy and other non-archive files
    cleaned: list[str] = field(default_factory=list)  # temporary files left by interrupted saves
    reason: str = ""  # why the repair ran, when it ran by itself


def vocoder_info(vocoder_state: Any) -> VocoderInfo | None:
    """VocoderInfo from a manifest's raw ``vocoder_state`` (absent or mistyped stats become None)."""
    if vocoder_state is None:
        return None
    if not isinstance(vocoder_state, dict):
        return VocoderInfo(type="")
    tm = vocoder_state.get("training_metadata")
    tm = tm if isinstance(tm, dict) else {}
    epochs = tm.get("epochs", tm.get("epoch"))
    loss = tm.get("final_loss", tm.get("loss"))
    date = tm.get("training_date")
    kind = vocoder_state.get("type")
    return VocoderInfo(
        type=kind if isinstance(kind, str) else "",
        epochs=epochs if type(epochs) is int else None,
        final_loss=float(loss) if isinstance(loss, (int, float)) and not isinstance(loss, bool) and math.isfinite(loss) else None,
        training_date=date if isinstance(date, str) else "",
    )


def entry_from_manifest(manifest: dict[str, Any], file_name: str, size: int) -> ModelEntry:
    meta: dict[str, Any] = {k: (list(v) if isinstance(v, list) else v) for k, v in manifest["metadata"].items()}
    return ModelEntry(file_path=file_name, file_size_bytes=size, vocoder=vocoder_info(manifest["vocoder_state"]), **meta)


def _entry_from_json(raw: Any) -> ModelEntry:
    """Validate one index entry (the index may be hand-edited: trust nothing)."""
    if not isinstance(raw, dict):
        raise ValueError("entry is not an object")
    known = {f.name for f in fields(ModelEntry)}
    data = {k: v for k, v in raw.items() if k in known}
    for name in ("model_id", "file_path"):
        if not isinstance(data.get(name), str) or not data[name]:
            raise ValueError(f"entry field {name!r} missing or not a non-empty string")
    if not isinstance(data.get("name"), str):
        raise ValueError("entry field 'name' missing or not a string")
    fp = data["file_path"]
    if fp != os.path.basename(fp) or "/" in fp or "\\" in fp or fp in (".", "..") or not fp.endswith(MODEL_FILE_EXTENSION):
        raise ValueError(f"entry file_path {fp!r} is not a .distillgan file name inside the folder")
    for name, (kind, nullable) in METADATA_SCHEMA.items():
        if name in data:
            check_field(data[name], kind, nullable, f"entry.{name}")
    if not isinstance(data.get("file_size_bytes", 0), int):
        raise ValueError("file_size_bytes is not an int")
    voc = data.get("vocoder")
    if voc is not None:
        if not isinstance(voc, dict) or not isinstance(voc.get("type"), str):
            raise ValueError("vocoder is not an object with a type")
        data["vocoder"] = VocoderInfo(**{k: voc[k] for k in ("type", "epochs", "final_loss", "training_date") if k in voc})
    return ModelEntry(**data)


class ModelLibrary:
    """The models folder: ``*.distillgan`` files and the index that lists them.

    Reads never block; every change takes the folder's file lock. If the
    index is missing entries, unreadable or hand-edited into something
    invalid, it is rebuilt from the files and ``last_repair`` says what was
    found.
    """

    def __init__(self, models_dir: str | os.PathLike[str]) -> None:
        self.models_dir = Path(models_dir)
        self.index_path = self.models_dir / INDEX_NAME
        self.last_repair: RepairReport | None = None
        # one lock object per library: re-entrant, so nested changes do not deadlock
        self._lock = filelock.FileLock(str(self.models_dir / LOCK_NAME), timeout=LOCK_TIMEOUT_S)

    # -- locking and raw index I/O --

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's cross-process lock (re-entrant within a process)."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        try:
            with self._lock:
                yield
        except filelock.Timeout as e:
            raise LibraryError(
                f"another process has held {self.models_dir / LOCK_NAME} for {LOCK_TIMEOUT_S:.0f} s", code="lock-timeout"
            ) from e

    def _read_raw(self) -> dict[str, ModelEntry]:
        """Parse the index; ValueError when it is corrupt, {} when absent."""
        try:
            text = self.index_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") not in (1, INDEX_VERSION):
            raise ValueError("index is not an object with version 1 or 2")
        models = data.get("models")
        if isinstance(models, dict):
            models = list(models.values())
        if not isinstance(models, list):
            raise ValueError("index has no list of models")
        out: dict[str, ModelEntry] = {}
        for raw in models:
            entry = _entry_from_json(raw)
            if entry.model_id in out:
                raise ValueError(f"model id {entry.model_id!r} appears twice")
            out[entry.model_id] = entry
        return out

    def _write_raw(self, entries: dict[str, ModelEntry]) -> None:
        doc = {
            "version": INDEX_VERSION,
            "models": [asdict(e) for e in sorted(entries.values(), key=lambda e: (e.save_date, e.model_id))],
        }
        data = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=True).encode("utf-8")
        atomic_write(self.index_path, data)

    def _model_files(self) -> set[str]:
        """Names of the published model files (hidden temporary files excluded)."""
        try:
            names = os.listdir(self.models_dir)
        except FileNotFoundError:
            return set()
        return {n for n in names if n.endswith(MODEL_FILE_EXTENSION) and not n.startswith(".")}

    def _entries(self) -> dict[str, ModelEntry]:
        """The index, reconciled with the folder.

        A published file is the commit point of a save, and removing the
        entry is the commit point of a delete, so after a crash the index
        can only lack entries for files that exist (never list a missing
        file). Such files are indexed here, under the lock, from their
        manifests; entries whose file vanished by hand are dropped.
        """
        try:
            entries = self._read_raw()
        except (ValueError, OSError, TypeError):
            entries = None
        if entries is not None and {e.file_path for e in entries.values()} == self._model_files():
            return entries
        with self.locked():
            try:
                entries = self._read_raw()
            except (ValueError, OSError, TypeError) as e:
                report = self.repair_index()
                report.reason = f"index unreadable ({e}); rebuilt from the model files"
                self.last_repair = report
                return self._read_raw()
            files = self._model_files()
            changed = False
            for model_id, entry in list(entries.items()):
                if entry.file_path not in files:
                    del entries[model_id]
                    changed = True
            known = {e.file_path for e in entries.values()}
            for name in sorted(files - known):
                found = self._entry_for_file(name)
                if found is not None and found.model_id not in entries:
                    entries[found.model_id] = found
                    changed = True
            if changed:
                self._write_raw(entries)
            return entries

    def _entry_for_file(self, name: str) -> ModelEntry | None:
        from .archive import open_archive

        try:
            with open_archive(self.models_dir / name) as archive:
                return entry_from_manifest(archive.manifest, name, archive.size)
        except DistillganError:
            return None

    # -- public API --

    def add_entry(self, entry: ModelEntry) -> None:
        """Add or replace the entry with ``entry.model_id``."""
        with self.locked():
            entries = self._entries()
            entries[entry.model_id] = entry
            self._write_raw(entries)

    def add_new_entry(self, entry: ModelEntry) -> None:
        """Add ``entry`` unless its id already names another existing file (LibraryError duplicate-model-id)."""
        with self.locked():
            try:
                entries = self._read_raw()
            except (ValueError, OSError, TypeError):
                entries = self._entries()  # unreadable: rebuilt from the files (this one included)
            self._check_id_free(entries, entry.model_id, entry.file_path)
            entries[entry.model_id] = entry
            self._write_raw(entries)

    def check_id_free(self, model_id: str) -> None:
        """LibraryError duplicate-model-id if ``model_id`` already names an existing file here."""
        self._check_id_free(self._entries(), model_id, None)

    def _check_id_free(self, entries: dict[str, ModelEntry], model_id: str, own_file: str | None) -> None:
        old = entries.get(model_id)
        if old is not None and old.file_path != own_file and (self.models_dir / old.file_path).exists():
            raise LibraryError(
                f"model id {model_id!r} already names {old.file_path!r} in {str(self.models_dir)!r}; "
                "save with a fresh ModelMetadata (or model_id='') or delete the old model first",
                code="duplicate-model-id",
            )

    def get(self, model_id: str) -> ModelEntry | None:
        return self._entries().get(model_id)

    def remove(self, model_id: str) -> bool:
        """Remove an entry (not its file); False when there was none."""
        with self.locked():
            entries = self._entries()
            if entries.pop(model_id, None) is None:
                return False
            self._write_raw(entries)
            return True

    def list_all(self) -> list[ModelEntry]:
        """All entries, newest save first."""
        return sorted(self._entries().values(), key=lambda e: (e.save_date, e.model_id), reverse=True)

    def search(self, query: str = "", tags: list[str] | None = None) -> list[ModelEntry]:
        """Entries whose name, description or dataset contain ``query`` (any case) and that carry every tag."""
        q = query.casefold()
        want = {t.casefold() for t in tags or []}
        return [
            e
            for e in self.list_all()
            if (not q or q in e.name.casefold() or q in e.description.casefold() or q in e.dataset_name.casefold())
            and want <= {t.casefold() for t in e.tags}
        ]

    def repair_index(self) -> RepairReport:
        """Rebuild the index from the ``*.distillgan`` files' manifests (no tensor data is read)."""
        from .archive import open_archive

        report = RepairReport()
        with self.locked():
            try:
                old = self._read_raw()
            except (ValueError, OSError, TypeError):
                old = {}
            fresh: dict[str, ModelEntry] = {}
            for path in sorted(self.models_dir.iterdir()):
                name = path.name
                if name.startswith(".") and name.endswith(".tmp") and _is_stale(path):
                    try:
                        path.unlink()
                        report.cleaned.append(name)
                    except OSError:
                        pass
                    continue
                if name.startswith(".") or name in (INDEX_NAME,):
                    continue  # temporary files of saves in progress, the lock, the index
                if not name.endswith(MODEL_FILE_EXTENSION):
                    if path.is_file():
                        report.ignored.append(name)
                    continue
                try:
                    with open_archive(path) as archive:
                        entry = entry_from_manifest(archive.manifest, name, archive.size)
                except DistillganError as e:
                    report.invalid[name] = e.code
                    continue
                if entry.model_id in fresh:
                    report.invalid[name] = "duplicate-model-id"
                    continue
                fresh[entry.model_id] = entry
            report.added = sorted(set(fresh) - set(old))
            report.removed = sorted(set(old) - set(fresh))
            self._write_raw(fresh)
        return report


def _is_stale(path: Path) -> bool:
    """A temporary file nobody has written to for STALE_TEMP_S: its save was interrupted."""
    try:
        return time.time() - path.stat().st_mtime > STALE_TEMP_S
    except OSError:
        return False


def fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX); Windows has no directory handles to sync."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temporary file in the same folder, fsync, rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        for attempt in range(50):
            try:
                os.replace(tmp, path)
                break
            except PermissionError:  # Windows: a reader has the file open for a moment
                if attempt == 49:
                    raise
                time.sleep(0.02)
        fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
