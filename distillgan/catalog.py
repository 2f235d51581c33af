"""The model library folder: the ``.distillgan`` files and the index that lists them.

The files are the truth; the index ``model_library.json`` (its format: ``index.py``) is a hint
that lets a listing skip opening every file, kept in the layout the app reads. The rules:

* **Reconciled on read.** Every read compares the index with the folder: entries whose file is
  gone are dropped, published files the index lacks (a save killed between its file and its
  entry) are indexed from their own manifests, invalid entries are dropped and their files
  indexed again. When something changed and the folder's lock is free, the fix is written under
  the lock; otherwise (read-only folder, lock busy or planted) it lives in memory only. A read
  never waits for the lock, never creates it in a folder it cannot write, never rewrites an
  index that is already right.
* **Model ids.** The file that the index lists under an id keeps it; another file claiming the
  same id (a copy, a file dropped into the folder) is reported invalid with
  ``duplicate-model-id``. When no listed file claims it (no usable index), the file that has been
  in place longest keeps it (earliest ``st_ctime``, then name). Several entries naming one file are
  settled by that file's manifest. ``delete_model`` deletes a file only after its manifest
  confirms the id (LibraryError ``index-mismatch`` otherwise).
* **Writes** happen under the cross-process folder lock (``locks.py``: never a link, re-entrant
  in a process) and replace the index atomically (temporary file, rename). A save's index write
  is not fsynced: its entry can always be derived again from the model file, which is (the app
  never fsyncs its index either); deletes, repairs, vocoder updates and ``add_entry``/``remove``
  are. A save adds its entry by appending one line to the index's text (``prepare_add``: no
  entry validated or re-encoded); the process remembers the bytes it last read or wrote, so an
  unchanged index is not parsed again. What still grows with the folder is copying the file
  once per save (about 530 bytes per model), which keeping ``model_library.json`` whole and
  atomically replaced for the app requires.
* **Files replaced in place** (``update_vocoder``, the in-place conversion of an app pickle) change
  under an entry that still names them.
  The writer leaves a marker ``.<file>.replacing`` in the folder before it renames the new file
  over the old one and removes it once the index holds the new entry; a reader that finds a
  marker (the writer was killed between the two) indexes that file from its manifest again and,
  under the lock, writes the fix and removes the marker.
* **Pickle-era files** (the app's own v1.1 models) cannot be read without unpickling: their
  entries are kept as listed while their file exists (``RepairReport.legacy``), never deleted
  by ``delete_model``, and never win an id from a file we can read.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DistillganError, InputError, LegacyFormatError, LibraryError, from_os_error
from .fsio import fsync_dir
from .index import (
    INDEX_NAME,
    INDEX_VERSION,
    LEGACY_FILE_EXTENSION,
    MAX_INDEX_BYTES,
    MODEL_FILE_EXTENSION,
    IndexDoc,
    IndexUnusable,
    InvalidEntry,
    ModelEntry,
    VocoderInfo,
    append_entry,
    appendable_ids,
    copy_entry,
    encode_index,
    entry_line,
    is_model_file_name,
    is_text,
    normalized,
    parse_index,
    read_index_bytes,
)
from .locks import (
    LOCK_NAME,
    LOCK_TIMEOUT_S,
    abandoned_size,
    create_temporary,
    discard_temporary,
    folder_locked,
    open_library_file,
    release_temporary,
    remove_abandoned,
)
from .values import INT_MAX, INT_MIN

__all__ = [  # what other modules and the tests use; the public API is re-exported by __init__
    "INDEX_NAME",
    "INDEX_VERSION",
    "LEGACY_FILE_EXTENSION",
    "LOCK_NAME",
    "LOCK_TIMEOUT_S",
    "MAX_INDEX_BYTES",
    "MODEL_FILE_EXTENSION",
    "ModelEntry",
    "ModelLibrary",
    "RepairReport",
    "VocoderInfo",
    "atomic_write",
    "entry_from_manifest",
    "vocoder_info",
]

logger = logging.getLogger(__name__)

_CACHED_FOLDERS = 16
_CACHED_PROBES = 4096


@dataclass
class RepairReport:
    """What a repair (or a read that reconciled the index) found.

    Unpacks like the app's ``repair_index()`` result: ``removed, added = library.repair_index()``
    gives the two counts.
    """

    added: list[str] = field(default_factory=list)  # model ids indexed from their files
    removed: list[str] = field(default_factory=list)  # model ids dropped (file gone, or the entry did not match its file)
    invalid: dict[str, str] = field(default_factory=dict)  # file name -> error code (duplicate-model-id included)
    ignored: list[str] = field(default_factory=list)  # other files (repair only)
    cleaned: list[str] = field(default_factory=list)  # abandoned temporary files removed (repair only)
    legacy: list[str] = field(default_factory=list)  # pickle-era files kept as the index lists them (repair only)
    abandoned: dict[str, int] = field(default_factory=dict)  # abandoned temporary files left in place (reads): name -> bytes
    refreshed: list[str] = field(default_factory=list)  # model ids indexed again from a file replaced in place (a marker)
    reason: str = ""  # why the index was rebuilt, when it was
    events: list[str] = field(default_factory=list, repr=False, compare=False)  # what changed and why, in words (logged)

    def __iter__(self) -> Iterator[int]:
        return iter((len(self.removed), len(self.added)))

    def has_news(self) -> bool:
        return bool(self.added or self.removed or self.invalid or self.abandoned or self.refreshed or self.reason)


def vocoder_info(vocoder_state: Any) -> VocoderInfo | None:
    """VocoderInfo from a manifest's raw ``vocoder_state``, with the app's defaults for what is absent or mistyped."""
    if vocoder_state is None:
        return None
    vs = vocoder_state if isinstance(vocoder_state, dict) else {}
    tm = vs.get("training_metadata")
    tm = tm if isinstance(tm, dict) else {}
    kind = vs.get("type", "hifigan_v2")
    epochs = tm.get("epochs", tm.get("epoch"))
    loss = tm.get("final_loss", tm.get("loss"))
    date = tm.get("training_date")
    return VocoderInfo(
        type=kind if is_text(kind) else "hifigan_v2",
        epochs=epochs if type(epochs) is int and INT_MIN <= epochs <= INT_MAX else 0,
        final_loss=float(loss) if type(loss) is float or (type(loss) is int and INT_MIN <= loss <= INT_MAX) else 0.0,
        training_date=date if is_text(date) else "",
    )


def entry_from_manifest(manifest: dict[str, Any], file_name: str, size: int) -> ModelEntry:
    """The index entry of a model file, from its (validated) manifest; null losses become the app's 0.0."""
    m = manifest["metadata"]
    return ModelEntry(
        model_id=m["model_id"],
        name=m["name"],
        description=m["description"],
        file_path=file_name,
        file_size_bytes=size,
        dataset_name=m["dataset_name"],
        dataset_file_count=m["dataset_file_count"],
        dataset_total_duration_s=float(m["dataset_total_duration_s"]),
        training_date=m["training_date"],
        save_date=m["save_date"],
        training_epochs=m["training_epochs"],
        final_train_loss=0.0 if m["final_train_loss"] is None else float(m["final_train_loss"]),
        final_val_loss=0.0 if m["final_val_loss"] is None else float(m["final_val_loss"]),
        has_analysis=m["has_analysis"],
        n_active_components=m["n_active_components"],
        tags=list(m["tags"]),
        vocoder=vocoder_info(manifest["vocoder_state"]),
    )


@dataclass
class _Seen:
    """What this process last read from, or wrote to, one index file; valid while the file holds ``data``."""

    data: bytes
    doc: IndexDoc | None = None  # its validated entries, once something needed them
    ids: set[str] | None = None  # its model ids, when a save may append to it (index.appendable_ids)
    checked: bool = False  # whether ``ids`` was worked out
    lines: dict[str, tuple[ModelEntry, str]] = field(default_factory=dict)  # encoded lines of doc's entries, by id

    def appendable(self) -> set[str] | None:
        if not self.checked:
            self.ids, self.checked = appendable_ids(self.data), True
        return self.ids


# In-process caches: what each index file last held, and what each model file's manifest says
# (keyed by its identity, so a changed file is read again).
_index_cache: dict[str, _Seen] = {}
_Probe = tuple[ModelEntry | None, str, bool, tuple[int, str]]  # entry, error code, legacy?, (ctime, name) order
_probe_cache: dict[tuple[str, int, int, int, int, int], _Probe] = {}
_caches_mutex = threading.Lock()  # threads of a process share the caches


REPLACING_SUFFIX = ".replacing"


def replacing_marker(file_name: str) -> str:
    """The marker a writer leaves while it replaces ``file_name`` in place (see the module docstring)."""
    return f".{file_name}{REPLACING_SUFFIX}"


def _replaced_files(folder: Path, names: list[str]) -> list[str]:
    """The model files that ``names`` holds a replacement marker for: a regular file (as the writer makes
    it) named ``.<file>.replacing``; anything else of such a name is not a marker and is ignored."""
    out = []
    for n in names:
        target = n[1 : -len(REPLACING_SUFFIX)]
        if n.startswith(".") and n.endswith(MODEL_FILE_EXTENSION + REPLACING_SUFFIX) and is_model_file_name(target):
            try:
                if stat.S_ISREG(os.lstat(folder / n).st_mode):
                    out.append(target)
            except OSError:
                pass
    return out


def _model_names(names: list[str]) -> list[str]:
    """The published model files among ``names``: those an index entry may name (:func:`is_model_file_name`).

    Hidden files (temporary files included) are never models; a visible ``*.distillgan`` file whose
    name the index rules refuse (``take 12:30.distillgan``, a newline in it) is reported by
    :func:`_unnamable_names`, never indexed.
    """
    return [n for n in names if n.endswith(MODEL_FILE_EXTENSION) and is_model_file_name(n)]


def _unnamable_names(names: list[str]) -> list[str]:
    """Visible ``*.distillgan`` files whose names an index entry may not give (FORMAT.md §15.2)."""
    return [n for n in names if n.endswith(MODEL_FILE_EXTENSION) and not n.startswith(".") and not is_model_file_name(n)]


class ModelLibrary:
    """The models folder: ``*.distillgan`` files and the index that lists them (the app's API).

    ``list_all``, ``search``, ``count``, ``get`` and ``repair_index`` behave as the app's
    ``ModelLibrary`` does, on an index reconciled with the folder (see the module docstring);
    they work in a read-only folder. After a read, ``last_repair`` says what reconciliation
    found (None when nothing): files indexed or dropped, invalid files, abandoned temporary
    files, and why the index was rebuilt.
    """

    def __init__(self, models_dir: str | os.PathLike[str]) -> None:
        self.models_dir = Path(models_dir)
        self.index_path = self.models_dir / INDEX_NAME
        self.last_repair: RepairReport | None = None

    # -- the lock and the raw index ------------------------------------------------------------------

    @contextmanager
    def locked(self, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the folder's cross-process lock (re-entrant within a process); see ``locks.folder_locked``."""
        with folder_locked(self.models_dir, timeout):
            yield

    def _cache_key(self) -> str:
        return os.path.abspath(self.index_path)

    def _seen(self, data: bytes) -> _Seen:
        """The cache entry for the index holding ``data`` (a new one if the file changed)."""
        key = self._cache_key()
        seen = _index_cache.get(key)
        if seen is None or seen.data != data:
            seen = _Seen(data)
            _remember(key, seen)
        return seen

    def _read(self) -> IndexDoc | None:
        """The index as parsed (None when there is none); IndexUnusable when it cannot be used. Never mutate it."""
        data = read_index_bytes(self.index_path)
        if data is None:
            return None
        seen = self._seen(data)
        if seen.doc is None:
            seen.doc = parse_index(data)
        return seen.doc

    def _write(self, entries: dict[str, ModelEntry], *, durable: bool) -> None:
        """Replace the index with ``entries`` (the caller holds the lock); OSError or LibraryError on failure."""
        old = _index_cache.get(self._cache_key())
        old_lines = old.lines if old is not None else {}
        lines: dict[str, tuple[ModelEntry, str]] = {}
        for mid, entry in entries.items():
            hit = old_lines.get(mid)
            lines[mid] = hit if hit is not None and hit[0] is entry else (entry, entry_line(entry))
        data = encode_index([line for _, line in lines.values()])
        atomic_write(self.index_path, data, durable=durable)
        _remember(self._cache_key(), _Seen(data, IndexDoc(dict(entries)), set(entries) if entries else None, True, lines))

    def _write_or_raise(self, entries: dict[str, ModelEntry]) -> None:
        try:
            self._write(entries, durable=True)
        except OSError as e:
            error = from_os_error(e, "write the index", self.index_path)  # permission-denied, read-only, no-space: as everywhere
            if error.code in ("io-error", "not-found", "not-a-directory"):  # e.g. the index is a folder: it cannot be replaced
                error = LibraryError(f"cannot write {str(self.index_path)!r}: {e.strerror or e}", code="folder-unwritable")
            raise error from e

    def _listdir(self) -> list[str]:
        try:
            return sorted(os.listdir(self.models_dir))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _probe(self, name: str) -> _Probe:
        """What the file ``name`` says of itself: its entry, or the error code and whether it is pickle-era."""
        from .archive import open_archive

        path = os.path.join(self.models_dir, name)
        try:
            st = os.stat(path)
        except OSError:
            return None, "not-found", False, (0, name)
        key = (os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        hit = _probe_cache.get(key)
        if hit is not None:
            return hit
        order = (st.st_ctime_ns, name)
        result: _Probe
        try:
            with open_archive(path) as archive:
                result = (entry_from_manifest(archive.manifest, name, archive.size), "", False, order)
        except LegacyFormatError as e:
            result = (None, e.code, True, order)
        except DistillganError as e:
            result = (None, e.code, False, order)
        with _caches_mutex:
            if len(_probe_cache) >= _CACHED_PROBES:
                _probe_cache.clear()
            _probe_cache[key] = result
        return result

    def is_pickle_era(self, name: str) -> bool:
        """True when the file ``name`` in the folder is a pickle-era model (the app's own ``.distillgan``)."""
        return self._probe(name)[2]

    # -- reconciliation ---------------------------------------------------------------------------------

    def _scan(self, names: list[str], priors: dict[str, ModelEntry], report: RepairReport) -> dict[str, ModelEntry]:
        """Entries for the files in ``names`` from their manifests; ``priors`` (a usable index) settles ids.

        A pickle-era file that ``priors`` lists (alone) keeps its entry, unverified. Files that
        are invalid, or that claim an id another file keeps, go to ``report.invalid``.
        """
        present = set(names)
        listed: dict[str, list[ModelEntry]] = {}
        for e in priors.values():
            listed.setdefault(e.file_path, []).append(e)
        legacy_listed = [f for f in listed if f.endswith(LEGACY_FILE_EXTENSION) and f in present]
        claims: dict[str, list[tuple[tuple[int, str], str, ModelEntry]]] = {}
        kept: list[ModelEntry] = []
        for name in _model_names(names) + legacy_listed:
            entry, code, legacy, order = self._probe(name)
            if entry is not None:
                claims.setdefault(entry.model_id, []).append((order, name, entry))
            elif legacy and len(listed.get(name, ())) == 1:
                kept.append(listed[name][0])
            else:
                report.invalid[name] = code
        fresh: dict[str, ModelEntry] = {}
        for mid, contenders in sorted(claims.items(), key=lambda kv: min(kv[1])[0]):
            prior = priors.get(mid)
            contenders.sort()
            winner = next((c for c in contenders if prior is not None and c[1] == prior.file_path), contenders[0])
            for c in contenders:
                if c is not winner:
                    report.invalid[c[1]] = "duplicate-model-id"
            fresh[mid] = winner[2]
        for e in kept:
            if e.model_id in fresh:  # a file we can read beats one we cannot
                report.invalid[e.file_path] = "duplicate-model-id"
            else:
                fresh[e.model_id] = e
                report.legacy.append(e.file_path)
        ordered = {mid: fresh[mid] for mid in priors if mid in fresh}  # keep the index's order, new ones after
        ordered.update(fresh)
        return ordered

    def _reconcile(self, names: list[str]) -> tuple[dict[str, ModelEntry], RepairReport, bool]:
        """(entries, what was found, whether the index file needs rewriting) for the folder listing ``names``."""
        report = RepairReport()
        report.abandoned = {n: s for n in names if (s := abandoned_size(self.models_dir, n)) is not None}
        report.invalid.update((n, "invalid-file-name") for n in _unnamable_names(names))  # never indexed: rename to list it
        try:
            doc = self._read()
        except IndexUnusable as e:
            report.reason = f"index unusable ({e}); rebuilt from the model files"
            entries = self._scan(names, {}, report)
            report.added = sorted(entries)
            report.events.append(f"rebuilt the index from {len(entries)} model file(s): {report.reason}")
            return entries, report, True
        if doc is None:
            doc = IndexDoc(entries={})
        present = set(names)
        entries = {mid: entry for mid, entry in doc.entries.items() if entry.file_path in present}
        report.removed = [mid for mid in doc.entries if mid not in entries]
        report.events += [f"dropped {mid!r}: its file {doc.entries[mid].file_path!r} is gone" for mid in report.removed]
        by_file: dict[str, list[str]] = {}
        for mid, entry in entries.items():
            by_file.setdefault(entry.file_path, []).append(mid)
        for name, ids in by_file.items():
            if len(ids) > 1:  # several entries name one file: only the one its manifest confirms stays
                truth = self._probe(name)[0]
                for mid in ids:
                    if truth is None or truth.model_id != mid:
                        del entries[mid]
                        report.removed.append(mid)
                        holds = "cannot say which model it holds" if truth is None else f"holds {truth.model_id!r}"
                        report.events.append(f"dropped {mid!r}: several entries name {name!r}, which {holds}")
        markers = _replaced_files(self.models_dir, names)
        replaced = [n for n in markers if n in present]
        for name in replaced:  # a writer was killed (or is busy) between replacing the file and indexing it
            truth = self._probe(name)[0]
            holder = None if truth is None else entries.get(truth.model_id)
            if truth is None or (holder is not None and holder.file_path != name):
                continue  # unreadable, or its id belongs to another file: the rules below settle it
            for mid in [mid for mid, e in entries.items() if e.file_path == name and mid != truth.model_id]:
                del entries[mid]
                report.removed.append(mid)
                report.events.append(f"dropped {mid!r}: {name!r}, replaced in place, holds {truth.model_id!r}")
            if holder != truth:
                entries[truth.model_id] = truth
                report.refreshed.append(truth.model_id)
                report.events.append(f"indexed {truth.model_id!r} again from {name!r}, which was replaced in place")
        indexed = {entry.file_path for entry in entries.values()}
        orphans = [n for n in _model_names(names) if n not in indexed]
        if orphans:
            for mid, entry in self._scan(orphans, {}, report).items():
                if mid in entries:
                    report.invalid[entry.file_path] = "duplicate-model-id"
                    report.events.append(f"not indexed {entry.file_path!r}: model id {mid!r} is {entries[mid].file_path!r}'s")
                else:
                    entries[mid] = entry
                    report.added.append(mid)
                    report.events.append(f"indexed {mid!r} from {entry.file_path!r}, a model file the index did not list")
        if doc.dropped:
            first = next(iter(doc.dropped.values()))
            report.reason = f"{len(doc.dropped)} invalid index entr{'y' if len(doc.dropped) == 1 else 'ies'} dropped ({first}); rebuilt from the model files"
            report.events.append(f"rebuilt the index: {report.reason}")
        dirty = bool(report.added or report.removed or doc.dropped or (doc.layout != "app" and entries) or markers)
        return entries, report, dirty

    def reconciled(self) -> dict[str, ModelEntry]:
        """The reconciled entries; the fix is written when the lock is free and the folder writable."""
        entries, report, dirty = self._reconcile(self._listdir())
        if dirty:
            written = False
            try:
                with folder_locked(self.models_dir, timeout=0):
                    names = self._listdir()
                    entries, report, dirty = self._reconcile(names)
                    if dirty:
                        self._write(entries, durable=True)
                        self._remove_markers(names)
                        written = True
            except (DistillganError, OSError) as e:  # read-only or unwritable folder, busy lock: keep the fix in memory
                level = logging.WARNING if getattr(e, "code", "") == "not-regular-file" else logging.DEBUG
                logger.log(level, "index of %r reconciled in memory only: %s", str(self.models_dir), e)
            # a fix written once is news (INFO); one kept in memory (read-only folder, busy lock) recurs on every read (DEBUG)
            if written:
                self._log_events(report, logging.INFO, "reconciled")
            else:
                self._log_events(report, logging.DEBUG, "reconciled in memory")
        self.last_repair = report if report.has_news() else None
        return entries

    # -- used by persistence (the caller holds the lock) --------------------------------------------------

    def indexed(self) -> dict[str, ModelEntry]:
        """The index as it stands: reconciled with the folder only when it is damaged (else that is for reads)."""
        try:
            doc = self._read()
        except IndexUnusable:
            doc = None
        else:
            if doc is None or not doc.dropped:
                return {} if doc is None else dict(doc.entries)
        entries, report, _dirty = self._reconcile(self._listdir())
        self._log_events(report, logging.INFO, "reconciled before a save")
        self.last_repair = report
        return entries

    def _log_events(self, report: RepairReport, level: int, what: str) -> None:
        for event in report.events:
            logger.log(level, "index of %r %s: %s", str(self.models_dir), what, event)

    def check_id_free(self, model_id: str, entries: dict[str, ModelEntry] | None = None) -> None:
        """LibraryError ``duplicate-model-id`` if ``model_id`` already names an existing file here.

        The index is a hint: an entry whose file holds another model (its manifest says) does not
        take the id; a file that cannot say (pickle-era, damaged) does.

        Without ``entries``, an early check on the index as this process last saw it (read if it
        saw none); ``save_model`` checks again under the lock (``prepare_add``).
        """
        if entries is None:
            seen = _index_cache.get(self._cache_key())
            try:
                if seen is None:
                    data = read_index_bytes(self.index_path)
                    seen = None if data is None else self._seen(data)
                ids = None if seen is None else seen.appendable()
                if seen is None or (ids is not None and model_id not in ids):
                    return
                doc = self._read()
            except IndexUnusable:
                return  # checked again under the lock, on the rebuilt index
            entries = {} if doc is None else doc.entries
        old = entries.get(model_id)
        if old is None or not os.path.lexists(self.models_dir / old.file_path):
            return
        truth = self._probe(old.file_path)[0]
        if truth is not None and truth.model_id != model_id:
            return  # a stale or decoy entry: that file holds another model, and this save's entry replaces the wrong one
        # the file holds this id, or cannot say (a pickle-era or damaged file): the id is taken
        raise LibraryError(
            f"model id {model_id!r} already names {old.file_path!r} in {str(self.models_dir)!r}; "
            "save with a fresh ModelMetadata (or model_id='') or delete the old model first",
            code="duplicate-model-id",
        )

    def prepare_add(self, model_id: str) -> _Seen | dict[str, ModelEntry]:
        """Before publishing a new file (the caller holds the lock): check its id is free, get ready to index it.

        The usual case, a fresh id and an index whose top level a line can be appended to, gives
        the cache entry of the index (no entry validated or encoded: a save's cost stays flat as
        the folder grows, also in a fresh process; an entry damaged by hand stays as it is until
        the next read reconciles it); otherwise the entries as ``indexed()`` gives them, which
        repairs what damage it finds. Raises LibraryError ``duplicate-model-id``.
        """
        try:
            data = read_index_bytes(self.index_path)
        except IndexUnusable:
            data = None
        if data is not None:
            seen = self._seen(data)
            ids = seen.appendable()
            if ids is not None and model_id not in ids and not (seen.doc is not None and seen.doc.dropped):
                return seen  # entries this process has not validated are left for the next reader to reconcile
        entries = self.indexed()
        self.check_id_free(model_id, entries)
        return entries

    def record(self, base: _Seen | dict[str, ModelEntry], entry: ModelEntry, *, durable: bool) -> bool:
        """Index a published file's entry on ``base`` (``prepare_add``, ``indexed``); never raises (the file is the truth).

        False and a warning on failure.
        """
        try:
            if isinstance(base, _Seen):
                assert base.ids is not None, "prepare_add gives only appendable indexes"
                line = entry_line(entry)
                data = append_entry(base.data, line)
                atomic_write(self.index_path, data, durable=durable)
                doc, lines = base.doc, base.lines
                if doc is not None:  # keep what is known of it, so that a reader in this process need not parse again
                    complete = len(lines) == len(doc.entries)
                    doc = IndexDoc({**doc.entries, entry.model_id: entry}, dict(doc.dropped), doc.layout)
                    lines = {**lines, entry.model_id: (entry, line)} if complete else {}
                _remember(self._cache_key(), _Seen(data, doc, {*base.ids, entry.model_id}, True, lines))
            else:
                self._write({**base, entry.model_id: entry}, durable=durable)
        except Exception as e:  # the model is published: any failure here is only the cache's
            logger.warning(
                "%s is saved, but the index %s could not be updated (%s); the next listing of the folder will index it",
                entry.file_path, str(self.index_path), e, exc_info=not isinstance(e, (OSError, DistillganError)),
            )
            return False
        return True

    def confirm(self, entry: ModelEntry) -> None:
        """LibraryError ``index-mismatch`` unless the file ``entry`` names holds that model id (its manifest says)."""
        truth, code, _legacy, _order = self._probe(entry.file_path)
        if truth is None:
            raise LibraryError(
                f"the index lists {entry.model_id!r} as {entry.file_path!r}, but that file cannot confirm it "
                f"(it is not a readable .distillgan file: [{code}]); nothing deleted — remove the file by hand if you mean to",
                code="index-mismatch",
            )
        if truth.model_id != entry.model_id:
            raise LibraryError(
                f"the index lists {entry.model_id!r} as {entry.file_path!r}, but that file holds model {truth.model_id!r}; "
                "nothing deleted — run `distillgan repair` to rebuild the index from the files",
                code="index-mismatch",
            )

    def drop(self, entries: dict[str, ModelEntry], model_id: str) -> None:
        """Write the index without ``model_id``, durably; the DistillganError of ``_write_or_raise`` on failure."""
        self._write_or_raise({k: v for k, v in entries.items() if k != model_id})

    # -- public API (the app's, and ours) ----------------------------------------------------------------

    def get(self, model_id: str) -> ModelEntry | None:
        """The entry with ``model_id``, or None."""
        e = self.reconciled().get(model_id)
        return None if e is None else copy_entry(e)

    def signature(self, entry: ModelEntry, *, public_key: Any = None, certificate_chain: Any = None) -> str:
        """Whether ``entry``'s file has a signature sidecar (FORMAT.md §16.1): ``unsigned``, ``signed`` (not checked),
        or, given keys or a chain, ``valid`` or the code that checking it gave (``signature-mismatch``…)."""
        from .signing import status

        return status(self.models_dir / entry.file_path, public_key=public_key, certificate_chain=certificate_chain)

    def list_all(self, sort_by: str = "save_date", reverse: bool = True) -> list[ModelEntry]:
        """All entries, sorted by the field ``sort_by`` (newest save first by default), as the app sorts."""
        return _sorted([copy_entry(e) for e in self.reconciled().values()], sort_by, reverse)

    def search(
        self, query: str = "", tags: list[str] | None = None, sort_by: str = "save_date", reverse: bool = True
    ) -> list[ModelEntry]:
        """Entries whose name or description contains ``query`` (any case) and that carry any of ``tags`` (any case)."""
        results = list(self.reconciled().values())
        if query:
            q = query.lower()
            results = [e for e in results if q in e.name.lower() or q in e.description.lower()]
        if tags:
            wanted = {t.lower() for t in tags}
            results = [e for e in results if wanted & {t.lower() for t in e.tags}]
        return _sorted([copy_entry(e) for e in results], sort_by, reverse)

    def count(self) -> int:
        """The number of models."""
        return len(self.reconciled())

    def add_entry(self, entry: ModelEntry) -> None:
        """Add or replace the entry with ``entry.model_id`` (InputError ``invalid-input`` if it cannot be indexed)."""
        try:
            entry = normalized(entry)
        except InvalidEntry as e:
            raise InputError(str(e), code="invalid-input") from e
        self.models_dir.mkdir(parents=True, exist_ok=True)  # as the app's add_entry does
        with self.locked():
            entries = self.reconciled()
            entries[entry.model_id] = entry
            self._write_or_raise(entries)

    def remove(self, model_id: str) -> bool:
        """Remove an entry (not its file); False when there was none."""
        if not self.models_dir.is_dir():
            return False
        with self.locked():
            entries = self.reconciled()
            if model_id not in entries:
                return False
            self.drop(entries, model_id)
            return True

    def repair_index(self) -> RepairReport:
        """Rebuild the index from the files' manifests (no tensor data is read) and remove abandoned temporary files.

        Ids are settled as the module docstring says; pickle-era files the index lists keep
        their entries. Returns a RepairReport (``removed, added = report`` gives the app's counts).
        Raises FileAccessError ``permission-denied``/``read-only`` when this user cannot change the folder,
        LibraryError ``folder-unwritable`` when the index cannot be written for another reason.
        """
        report = RepairReport()
        if not self.models_dir.is_dir():
            return report  # nothing to repair, and nothing is created
        with self.locked():
            names = self._listdir()
            try:
                doc = self._read()
                priors = {} if doc is None else doc.entries
            except IndexUnusable as e:
                priors = {}
                report.reason = f"index unusable ({e}); rebuilt from the model files"
            entries = self._scan(names, priors, report)
            report.invalid.update((n, "invalid-file-name") for n in _unnamable_names(names))
            report.added = sorted(set(entries) - set(priors))
            report.removed = sorted(set(priors) - set(entries))
            report.ignored = [n for n in names if _is_other_file(self.models_dir, n, set(report.legacy) | set(report.invalid))]
            report.cleaned = sorted(remove_abandoned(self.models_dir, names))
            self._write_or_raise(entries)
            self._remove_markers(names)  # the entries above come from every file's own manifest
        self._log_repair(report, len(entries))
        return report

    def _log_repair(self, report: RepairReport, count: int) -> None:
        folder = str(self.models_dir)
        logger.info("repaired the index of %r: rebuilt from the model files, %d model(s)%s", folder, count,
                    f"; {report.reason}" if report.reason else "")
        each = logging.DEBUG if report.reason else logging.INFO  # from an unusable index every model is "added": say so once
        for mid in report.added:
            logger.log(each, "repair of %r: indexed %r, a model file the index did not list", folder, mid)
        for mid in report.removed:
            logger.info("repair of %r: dropped %r (its file is gone, or does not hold that id)", folder, mid)
        for name, code in report.invalid.items():
            logger.warning("repair of %r: %r is not a usable model file [%s]; left in place", folder, name, code)
        for name in report.cleaned:
            logger.info("repair of %r: removed %r, the temporary file of an interrupted save", folder, name)

    # -- replacement markers (update_vocoder; the caller holds the lock) ----------------------------------

    def mark_replacing(self, file_name: str) -> str:
        """Leave the marker for ``file_name``, durably, before it is replaced in place; its path."""
        path = os.path.join(self.models_dir, replacing_marker(file_name))
        fd = open_library_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.close(fd)
        fsync_dir(self.models_dir)
        return path

    def _remove_markers(self, names: list[str]) -> None:
        """Remove the replacement markers among ``names`` once the index written holds what their files say.

        Only markers (regular files, :func:`_replaced_files`) are removed; a failure is logged, never raised.
        """
        for file_name in _replaced_files(self.models_dir, names):
            path = os.path.join(self.models_dir, replacing_marker(file_name))
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                logger.warning("cannot remove the replacement marker %r: %s", path, e)


def _remember(key: str, value: _Seen) -> None:
    with _caches_mutex:
        _index_cache.pop(key, None)
        if len(_index_cache) >= _CACHED_FOLDERS:
            _index_cache.pop(next(iter(_index_cache)))
        _index_cache[key] = value


def _is_other_file(folder: Path, name: str, accounted: set[str]) -> bool:
    """A visible regular file that is neither a model, the index (or the app's backup of it) nor accounted for."""
    if name.startswith(".") or name.endswith(MODEL_FILE_EXTENSION) or name in (INDEX_NAME, INDEX_NAME + ".bak") or name in accounted:
        return False
    if name.endswith((MODEL_FILE_EXTENSION + ".sig", MODEL_FILE_EXTENSION + ".sig.stale")):  # a model's signature (FORMAT.md §16.1)
        return False
    try:
        return stat.S_ISREG(os.lstat(folder / name).st_mode)
    except OSError:
        return False


def _sorted(entries: list[ModelEntry], sort_by: str, reverse: bool) -> list[ModelEntry]:
    """The app's sort (``getattr(entry, sort_by, "")``), made total for the one unorderable field, ``vocoder``."""
    if not isinstance(sort_by, str):
        raise InputError(f"sort_by: expected a field name, got {type(sort_by).__name__}", code="invalid-input")

    def key(e: ModelEntry) -> Any:
        if sort_by == "vocoder":
            v = e.vocoder
            return () if v is None else (v.type, v.epochs, v.final_loss, v.training_date)
        return getattr(e, sort_by, "")

    entries.sort(key=key, reverse=reverse)
    return entries


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: a new temporary file beside it (locks.py), written, renamed over it.

    The caller holds the folder lock (a repair may otherwise remove the temporary file). ``durable`` fsyncs the file before and the folder after the rename. A link at ``path`` is
    replaced, never followed. OSError or LibraryError on failure; the temporary file is removed.
    """
    fd, tmp = create_temporary(path.parent, path.name)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
        release_temporary(tmp)
        for attempt in range(50):
            try:
                os.replace(tmp, path)
                break
            except PermissionError:  # Windows: a reader has the file open for a moment
                if attempt == 49 or os.name != "nt":
                    raise
                time.sleep(0.02)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        discard_temporary(tmp)
        raise
