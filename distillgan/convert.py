"""Bringing files across: pickle-era checkpoints and safetensors in, plain safetensors out.

:func:`read_checkpoint` reads what a user already has — a training checkpoint of the app, a
``.distillgan`` file the app saved with ``torch.save`` (the app's planned v2 storage, a pickle), a HiFi-GAN
``g_*`` checkpoint, a Lightning ``.ckpt``, a bare state dict, a ``.safetensors`` file — and
sorts its content into the places of a ``.distillgan`` model, keeping everything: what has no
place of its own goes to ``extra``. Pickles are read by :mod:`distillgan.pickled`, which never
imports or calls anything the file names (never ``torch.load``). A legacy ``.distill`` model
stays refused with the app's "retrain your model" message: conversion is no way around that rule.
:func:`convert_checkpoint` saves the result with ``save_model``.

:func:`export_safetensors` writes a model's weights as a plain safetensors file that
``safetensors.torch.load_model``/``load_file`` accept for the module: tied weights stored
once under the name safetensors itself keeps, analysis arrays left out, the manifest as JSON
in ``__metadata__``.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .content import ModelContent
from .errors import InputError, LegacyFormatError, file_error, os_errors
from .fsio import fsync_dir, open_regular
from .legacy import V1_MESSAGE, check_not_legacy, pickle_holds_v1_marker
from .manifest import LEGACY_FORMAT_MARKER, METADATA_SCHEMA, MODEL_FORMAT_MARKER
from .publish import place_file, publish_over, save_content, unlink_quietly, write_temporary
from .values import MAX_DEPTH

logger = logging.getLogger(__name__)

EXPORT_MANIFEST_KEY = "distillgan.manifest"  # __metadata__ key of an export: the manifest's JSON projection
STATE_DICT_KEYS = ("model_state_dict", "state_dict", "generator", "model")  # tried in this order
APP_CHECKPOINT_KEYS = frozenset({"model_state_dict", "optimizer_state_dict", "epoch"})
SLOT_KEYS = ("spectrogram_config", "training_config", "latent_analysis", "latent_dim", "vocoder_state")
TRAINING_STATE_KEYS = frozenset({"optimizer_state_dict", "scheduler_state_dict", "metrics_history"})  # only resuming needs them


CheckpointKind = Literal["app-training-checkpoint", "seed-distillgan", "state-dict-key", "state-dict", "safetensors"]


@dataclass
class Checkpoint:
    """A file's content sorted into the places of a ``.distillgan`` model (see :func:`read_checkpoint`).

    ``kind`` says what the file was recognised as: ``"app-training-checkpoint"``,
    ``"seed-distillgan"`` (the app's pickle ``.distillgan``), ``"state-dict-key"`` (a dict holding
    the state dict under one key: ``model_state_dict``, ``state_dict``, ``generator``, ``model``
    or the ``key`` asked for), ``"state-dict"`` (a bare state dict) or ``"safetensors"``.
    ``metadata`` holds the ``ModelMetadata`` fields the file gave; ``extra`` everything without
    a place of its own.
    """

    kind: CheckpointKind
    state_dict: dict[str, Any]
    spectrogram_config: dict[str, Any] = field(default_factory=dict)
    training_config: dict[str, Any] = field(default_factory=dict)
    analysis: Any = None
    latent_dim: int | None = None
    vocoder_state: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    extra: Any = None


class _NotRegular(Exception):
    """``_head``'s answer for a path that is not a regular file (never leaves this module)."""


def _head(path: str | os.PathLike[str], n: int) -> tuple[bytes, int] | None:
    """The first ``n`` bytes of a regular file and its size; None for anything else (a FIFO never blocks)."""
    try:
        fd, st = open_regular(path, os.O_RDONLY, _NotRegular)
    except (OSError, _NotRegular):
        return None
    try:
        return os.read(fd, n), st.st_size
    except OSError:
        return None
    finally:
        os.close(fd)


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with a little-endian u64 header length and a JSON object."""
    got = _head(path, 9)
    if got is None:
        return False
    head, size = got
    return len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] + 8 <= size


def _archive_head(head: bytes) -> bool:
    """The first bytes of a ``.distillgan`` archive: a zip whose first member is ``manifest.msgpack`` (FORMAT.md §3)."""
    return head[:4] == b"PK\x03\x04" and head[30:46] == b"manifest.msgpack"


def is_archive(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` already is a ``.distillgan`` archive (nothing to convert); reads 46 bytes of a regular file."""
    got = _head(path, 46)
    return got is not None and _archive_head(got[0])


def _refuse_v1(tree: Any) -> None:
    if isinstance(tree, Mapping) and tree.get("format") == LEGACY_FORMAT_MARKER:
        raise LegacyFormatError(V1_MESSAGE, code="legacy-distill-v1")


def _read_pickle_era(path: Path) -> Any:
    """The plain value tree of a pickle-era file, refusing a legacy v1 model first (before torch is imported)."""
    from .source import MappedFile

    with MappedFile(path) as src:  # a regular file of bounded size, opened once without blocking
        try:
            check_not_legacy(src)
        except LegacyFormatError as e:
            if e.code == "legacy-distill-v1":
                raise
        if _archive_head(src.read(0, min(src.size, 46))):
            raise InputError(f"{str(path)!r} is already a .distillgan archive; there is nothing to convert", code="invalid-input")
    from .pickled import read_plain_tree  # torch: the pickle's tensors become torch tensors

    tree = read_plain_tree(path)  # one budget, sized by the file, for reading and converting
    _refuse_v1(tree)  # the marker may sit beyond the byte scan's limits
    return tree


def _read_safetensors(path: Path) -> Checkpoint:
    from .source import MappedFile
    from .tensors import parse_header, tensor_from

    with MappedFile(path) as src:
        table = parse_header(src, 0, src.size, str(path))
        state = {}
        for info in table.tensors:  # copies: nothing keeps the input mapped
            start = table.data_start + info.begin
            state[info.name] = tensor_from(bytearray(src.read(start, info.nbytes)), info, -info.begin, str(path))
    meta = dict(table.metadata or {})
    out = Checkpoint("safetensors", state)
    manifest_text = meta.pop(EXPORT_MANIFEST_KEY, None)
    if manifest_text is not None:  # an export of ours: its metadata and configs come back too
        try:
            manifest = json.loads(manifest_text)
        except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than the interpreter's stack allows
            raise InputError(
                f"{str(path)!r}: {EXPORT_MANIFEST_KEY} in __metadata__ is not JSON, or nested too deep", code="convert-unreadable"
            ) from e
        if isinstance(manifest, dict) and isinstance(manifest.get("metadata"), dict):
            out.metadata = {k: v for k, v in manifest["metadata"].items() if k in METADATA_SCHEMA and not isinstance(v, dict)}
            for slot in ("spectrogram_config", "training_config"):
                value = manifest.get(slot)
                if isinstance(value, dict) and _plain_json(value):  # plain JSON only: no tags to undo
                    setattr(out, slot, value)
                elif value:  # tagged or too deep to store: kept as the text it came as, never dropped
                    meta[EXPORT_MANIFEST_KEY] = manifest_text
            if type(manifest.get("latent_dim")) is int:
                out.latent_dim = manifest["latent_dim"]
    if meta:
        out.extra = {"safetensors_metadata": meta}
    # safetensors names are state-dict keys as they are; order is the file's layout order
    return out


def _plain_json(value: Any) -> bool:
    """True when a decoded JSON value holds no tagged value (FORMAT.md §4.6) and nests at most MAX_DEPTH levels."""
    stack = [(value, 0)]
    while stack:  # iterative: a value nested as deep as json.loads allows must not exhaust the stack here
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        if isinstance(v, dict):
            if "$" in v:
                return False
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)
    return True


def _state_dict(value: Any, where: str, strip_prefix: str | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(f"{where} is a {type(value).__name__}, not a state dict (a map of names to tensors)", code="bad-checkpoint")
    if strip_prefix:
        value = {(k[len(strip_prefix) :] if isinstance(k, str) and k.startswith(strip_prefix) else k): v for k, v in value.items()}
    return value


def _is_state_dict(value: Any) -> bool:
    import torch

    return isinstance(value, dict) and bool(value) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def read_checkpoint(path: str | os.PathLike[str], *, key: str | None = None, strip_prefix: str | None = None) -> Checkpoint:
    """Read a checkpoint or model file without running anything in it, and sort its content.

    Recognised (in this order):

    - a ``.safetensors`` file: its tensors are the state dict, its ``__metadata__`` goes to
      ``extra`` (an export of ours also gives back its metadata and configs);
    - the app's pickle ``.distillgan`` (``format`` is ``"distillgan_model"``): every key in its
      place — ``model_state_dict``, ``latent_dim``, ``spectrogram_config``, ``training_config``,
      ``latent_analysis``, ``metadata`` (with its ``model_id``), ``vocoder_state`` —, the rest in ``extra``;
    - the app's training checkpoint (``model_state_dict`` with ``optimizer_state_dict`` or
      ``epoch``): weights, configs, analysis, ``latent_dim`` (from ``training_config`` when absent
      at the top), ``epoch``/``train_loss``/``val_loss`` also into the metadata (inf and NaN kept),
      and every key without a place — optimizer, scheduler, metrics history, KL weight — in ``extra``;
    - ``key`` given: the state dict is ``file[key]``;
    - otherwise the first of ``model_state_dict``, ``state_dict`` (Lightning), ``generator``
      (HiFi-GAN ``g_*``), ``model`` holding a map, the rest in ``extra``;
    - a bare map of names to tensors.

    ``strip_prefix`` removes a prefix from state-dict keys that have it (``"model."`` for
    Lightning, ``"module."`` for DataParallel). A legacy ``.distill`` model raises
    :class:`~distillgan.LegacyFormatError` with the app's "retrain your model" message; unsafe, damaged or
    oversized pickles raise :class:`~distillgan.InputError` (``convert-*`` codes).
    """
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.exists():
        raise file_error(f"no such file: {str(p)!r}", code="not-found", errno=errno.ENOENT, path=p)
    if _is_safetensors(p):
        ck = _read_safetensors(p)
        ck.state_dict = _state_dict(ck.state_dict, "the safetensors file", strip_prefix)
        return ck
    tree = _read_pickle_era(p)
    if not isinstance(tree, dict):
        raise InputError(f"{str(p)!r} holds a {type(tree).__name__}, not a dict of weights and settings", code="bad-checkpoint")
    rest = dict(tree)

    def take(k: str, default: Any = None) -> Any:
        return rest.pop(k, default)

    if key is not None:
        if key not in tree:
            raise InputError(f"{str(p)!r} has no key {key!r}; its keys are {sorted(map(str, tree))[:20]}", code="bad-checkpoint")
        ck = Checkpoint("state-dict-key", _state_dict(take(key), f"[{key!r}]", strip_prefix))
    elif tree.get("format") == MODEL_FORMAT_MARKER and "model_state_dict" in tree:
        ck = Checkpoint("seed-distillgan", _state_dict(take("model_state_dict"), "model_state_dict", strip_prefix))
        take("format")
        take("version")
        meta = take("metadata") or {}
        if isinstance(meta, dict):
            ck.metadata = {k: v for k, v in meta.items() if k in METADATA_SCHEMA}
            unknown = {k: v for k, v in meta.items() if k not in METADATA_SCHEMA}
            if unknown:
                rest["metadata_unknown_fields"] = unknown
    elif "model_state_dict" in tree and APP_CHECKPOINT_KEYS & (set(tree) - {"model_state_dict"}):
        ck = Checkpoint("app-training-checkpoint", _state_dict(take("model_state_dict"), "model_state_dict", strip_prefix))
        epoch, train, val = tree.get("epoch"), tree.get("train_loss"), tree.get("val_loss")
        if type(epoch) is int and epoch >= 0:
            ck.metadata["training_epochs"] = epoch
        for k, name in ((train, "final_train_loss"), (val, "final_val_loss")):
            if isinstance(k, (int, float)) and not isinstance(k, bool):
                ck.metadata[name] = float(k)
    else:
        found = next((k for k in STATE_DICT_KEYS if isinstance(tree.get(k), dict)), None)
        if found is not None:
            ck = Checkpoint("state-dict-key", _state_dict(take(found), found, strip_prefix))
        elif _is_state_dict(tree):
            return Checkpoint("state-dict", _state_dict(tree, "the file", strip_prefix))
        else:
            raise InputError(
                f"{str(p)!r}: no state dict found (looked for {', '.join(STATE_DICT_KEYS)} and a bare map of tensors); "
                f"its keys are {sorted(map(str, tree))[:20]} — name the one holding the weights with --key",
                code="bad-checkpoint",
            )
    for slot in SLOT_KEYS:
        if slot in rest:
            value = take(slot)
            if slot == "latent_analysis":
                ck.analysis = value
            elif slot == "latent_dim":
                ck.latent_dim = value if type(value) is int and value >= 0 else None
                if ck.latent_dim is None and value is not None:
                    rest["latent_dim"] = value  # kept as found
            elif slot in ("spectrogram_config", "training_config") and not isinstance(value, dict):
                rest[slot] = value
            else:
                setattr(ck, slot, value if value is not None or slot == "vocoder_state" else {})
    if ck.latent_dim is None and isinstance(ck.training_config, dict) and type(ck.training_config.get("latent_dim")) is int:
        ck.latent_dim = ck.training_config["latent_dim"]
    ck.extra = rest or None
    return ck


BACKUP_SUFFIX = ".pickle-backup"  # an app file converted in place keeps its original pickle as <file>.pickle-backup


@dataclass
class Converted:
    """What :func:`convert_file` did: the new model's path, id and name, and where the original is kept.

    ``backup`` is None unless the file was converted in place (the pickle ``.distillgan`` the
    folder's index listed under the same model id): then the original pickle is kept there.
    """

    path: Path
    model_id: str
    name: str
    backup: Path | None = None


def _crash_point(step: str) -> None:
    """The named steps of an in-place conversion (``backup``, ``publish``, ``index``); the crash tests stop here."""


def convert_checkpoint(
    path: str | os.PathLike[str],
    models_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    metadata: Any = None,
    key: str | None = None,
    strip_prefix: str | None = None,
    progress: Any = None,
    keep_training_state: bool = True,
) -> Path:
    """Convert a checkpoint or model file (see :func:`read_checkpoint`) into a ``.distillgan`` model in ``models_dir``.

    ``keep_training_state=False`` leaves out what only resuming training needs — the
    ``optimizer_state_dict``, ``scheduler_state_dict`` and ``metrics_history`` of the app's
    training checkpoint (:data:`TRAINING_STATE_KEYS`) — which would otherwise go to ``extra``.

    The model's metadata comes from the file when it has some (the app's pickle
    ``.distillgan`` keeps its ``model_id`` and name), then from ``metadata`` (a
    ``ModelMetadata`` or mapping: its non-default fields win), then ``name``; without any, the
    name is the file's stem. Returns the new file's path.

    **In place.** When ``path`` is an app pickle ``.distillgan`` inside ``models_dir`` that the
    folder's index lists under the model id the file carries, the converted archive takes its
    place: same file name, same model id, the index entry updated, and the original pickle kept
    beside it as ``<file>.pickle-backup`` (``-1``, ``-2``... if that name is taken; never
    deleted). The steps are crash-safe: the backup is a hard link (a copy where the file system
    has none) made durable before the new file replaces the old one atomically, so at every
    point the index lists the old pickle or the new archive under that name, and the backup
    is never lost. :func:`convert_file` also says where the backup is.
    """
    return _convert(path, models_dir, name, metadata, key, strip_prefix, progress, keep_training_state).path


@dataclass
class FolderConversion:
    """What :func:`convert_folder` did, file by file (file names inside the folder)."""

    converted: list[Converted] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already .distillgan archives: nothing to do
    failed: dict[str, Exception] = field(default_factory=dict)  # file name -> the DistillganError that stopped it

    @property
    def ok(self) -> bool:
        return not self.failed


def convert_folder(path: str | os.PathLike[str], progress: Any = None) -> FolderConversion:
    """Convert every pickle-era ``*.distillgan`` of a models folder in place, as ``distillgan convert --dir D D`` does.

    For an app that migrates its folder at start-up. Each pickle file that the folder's index
    lists under the model id it carries is replaced by its archive under the same file name and
    id, its entry updated and the original kept as ``<file>.pickle-backup``
    (:func:`convert_file`); other pickle files are saved as new models in the folder. Files that
    already are archives are skipped; a file that fails is recorded in ``failed`` and the others
    go on (nothing is raised for one file). Crash-safe and idempotent: run it again to finish.
    ``progress(done, total)`` is called after each file with the number of files handled so far.
    Raises :class:`~distillgan.LibraryError` ``not-found`` when ``path`` is not a folder.
    """
    from .errors import DistillganError, LibraryError

    folder = Path(os.path.expanduser(os.fspath(path)))
    if not folder.is_dir():
        raise LibraryError(f"models folder {str(folder)!r} does not exist or is not a folder", code="not-found")
    names = sorted(n for n in os.listdir(folder) if n.endswith(".distillgan") and not n.startswith("."))
    report = FolderConversion()
    for done, name in enumerate(names, 1):
        file = folder / name
        if is_archive(file):
            report.skipped.append(name)
        else:
            try:
                report.converted.append(convert_file(file, folder))
            except DistillganError as e:
                logger.warning("cannot convert %s: %s", file, e)
                report.failed[name] = e
        if progress is not None:
            progress(done, len(names))
    return report


def merged_metadata(src: Path, ck: Checkpoint, metadata: Any, name: str | None) -> dict[str, Any]:
    """The metadata of a converted model: the file's stem as name, then the file's own, then ``metadata``'s
    non-default fields, then ``name``."""
    from .manifest import ModelMetadata, coerce_metadata

    meta: dict[str, Any] = {"name": src.stem}
    meta.update(ck.metadata)
    if metadata is not None:
        given = coerce_metadata(metadata)
        defaults = ModelMetadata().__dict__
        meta.update({k: v for k, v in given.items() if v != defaults[k] and not (isinstance(v, float) and math.isnan(v))})
    if name is not None:
        meta["name"] = name
    return meta


def convert_file(path: str | os.PathLike[str], models_dir: str | os.PathLike[str], **options: Any) -> Converted:
    """:func:`convert_checkpoint` (same options), saying what was done (:class:`Converted`: path, id, name, backup)."""
    return _convert(path, models_dir, **options)


def _convert(path: Any, models_dir: Any, name: Any = None, metadata: Any = None, key: Any = None, strip_prefix: Any = None,
             progress: Any = None, keep_training_state: bool = True) -> Converted:
    from .manifest import coerce_metadata

    src = Path(os.path.expanduser(os.fspath(path)))
    try:
        before = os.stat(src)
    except OSError:
        before = None  # read_checkpoint says why
    ck = read_checkpoint(src, key=key, strip_prefix=strip_prefix)
    if not keep_training_state and isinstance(ck.extra, dict):
        ck.extra = {k: v for k, v in ck.extra.items() if k not in TRAINING_STATE_KEYS} or None
    final = coerce_metadata(merged_metadata(src, ck, metadata, name))  # save fills model_id, save_date, has_analysis in place
    target = _listed_pickle(src, models_dir, final["model_id"]) if ck.kind == "seed-distillgan" else None
    backup = None
    if target is None or before is None:
        result = save_content(ModelContent.of_checkpoint(ck, final), models_dir, final, progress)
    else:
        result, backup = _convert_in_place(ck, final, target, before, progress)
    if metadata is not None:  # the app's save_model_from_checkpoint fills the caller's object in place
        for k, v in final.items():
            if isinstance(metadata, dict):
                metadata[k] = v
            elif hasattr(type(metadata), "__dataclass_fields__") and k in type(metadata).__dataclass_fields__:
                setattr(metadata, k, v)
    return Converted(result, final["model_id"], final["name"], backup)


def _listed_pickle(src: Path, models_dir: str | os.PathLike[str], model_id: str) -> Path | None:
    """``src`` when it is the pickle-era file that ``models_dir``'s index lists under ``model_id``, else None."""
    from .catalog import ModelLibrary

    folder = Path(os.path.expanduser(os.fspath(models_dir)))
    try:
        if not model_id or not folder.is_dir() or not os.path.samefile(src.parent, folder):
            return None
    except OSError:
        return None
    library = ModelLibrary(folder)
    entry = library.reconciled().get(model_id)
    if entry is None or entry.file_path != src.name or not library.is_pickle_era(src.name):
        return None
    return folder / src.name


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns)


def _keep_backup(target: Path) -> Path:
    """A second name for ``target``'s file, ``<name>.pickle-backup[-N]``, never replacing another file.

    A hard link where the file system has them (an earlier attempt's link to the same file is
    reused); else a copy, fsynced, published under a free name. The caller fsyncs the folder.
    """
    import itertools
    import shutil

    names = (target.with_name(f"{target.name}{BACKUP_SUFFIX}{'' if n == 0 else f'-{n}'}") for n in itertools.count())
    copy = None
    try:
        for backup in names:
            if copy is None:
                try:
                    os.link(target, backup)  # atomic and no-clobber
                    return backup
                except FileExistsError:
                    try:  # a crash after the link, last time: the same regular file (never a link to it)
                        st = os.lstat(backup)
                        if stat.S_ISREG(st.st_mode) and os.path.samestat(st, os.stat(target)):
                            return backup
                    except OSError:
                        pass
                    continue
                except (OSError, NotImplementedError, AttributeError):  # no hard links here (FAT, some shares)
                    copy = str(target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.backup-tmp"))
                    with open(target, "rb") as fin, open(copy, "xb") as fout:
                        shutil.copyfileobj(fin, fout, 8 << 20)
                        fout.flush()
                        os.fsync(fout.fileno())
            if os.name == "nt":
                try:
                    os.rename(copy, backup)  # never replaces on Windows
                    copy = None
                    return backup
                except FileExistsError:
                    continue
            try:  # reserve the name, then move the copy onto it
                os.close(os.open(backup, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            os.replace(copy, backup)
            copy = None
            return backup
    finally:
        if copy is not None:
            unlink_quietly(copy)
    raise AssertionError("unreachable")


def _convert_in_place(
    ck: Checkpoint, meta: dict[str, Any], target: Path, before: os.stat_result, progress: Any
) -> tuple[Path, Path]:
    """Replace the pickle ``target`` by the archive of ``ck`` under the same name and id; keep the pickle as a backup."""
    from .archive import plan_archive
    from .catalog import ModelLibrary, entry_from_manifest
    from .errors import FileAccessError
    from .locks import discard_temporary

    content = ModelContent.of_checkpoint(ck, meta)
    content.stamp(meta)  # as save_model fills them: save_date, has_analysis, n_active_components
    folder, library = target.parent, ModelLibrary(target.parent)
    # refuses unstorable values before any file is created
    plan = plan_archive(content.manifest(), user_metadata=content.user_metadata)
    with os_errors("convert a model in place", target):
        tmp, size = write_temporary(plan, folder, target.stem, progress)
        try:
            with library.locked():
                entry = library.indexed().get(content.metadata["model_id"])
                if entry is None or entry.file_path != target.name or not _same_file(os.stat(target), before):
                    raise FileAccessError(
                        f"{str(target)!r} or its index entry changed while it was being converted; "
                        "nothing was changed — run the conversion again",
                        code="file-changed",
                    )
                _crash_point("backup")
                backup = _keep_backup(target)
                fsync_dir(folder)  # the backup is durable before the original's name is taken over
                _crash_point("publish")
                # atomic: the name holds the old pickle or the new archive; then the index, healed by a marker after a crash
                publish_over(library, tmp, target, entry_from_manifest(plan.raw, target.name, size),
                              before_index=lambda: _crash_point("index"))
        except BaseException:
            discard_temporary(tmp)  # nothing if it was published
            raise
    logger.info("converted %s in place; the original pickle is kept as %s", target, backup)
    return target, backup


def _flat_refs(value: Any, what: str) -> dict[str, Any]:
    """``value`` (a decoded slot: placeholders where tensors are) as a flat map of names to tensor placeholders."""
    from .values import Ref

    flat = isinstance(value, dict) and all(isinstance(k, str) and type(v) is Ref and v.kind != "ndarray"
                                           for k, v in value.items())
    if not flat:
        raise InputError(f"{what} is not a flat map of names to tensors; only such a map can be exported as safetensors", code="invalid-input")
    if "__metadata__" in value:  # safetensors reserves that key of the header for the string map
        raise InputError(f"{what} has a tensor named '__metadata__', which a safetensors file cannot hold (its header reserves "
                         "that key); rename it before exporting", code="invalid-input")
    return value


def export_safetensors(
    model_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    vocoder: bool = False,
    overwrite: bool = False,
    progress: Any = None,
) -> Path:
    """Write a model's weights (or, with ``vocoder``, its vocoder's) as a plain ``.safetensors`` file.

    The file holds the state dict under its own keys, with tensors tied in the model stored once
    under the first name in sorted order — the name ``safetensors.torch.save_model`` keeps, so
    ``safetensors.torch.load_model(module, out)`` restores the ties — and, in ``__metadata__``,
    ``format: pt`` and the manifest's JSON projection (FORMAT.md §4.6) under
    ``distillgan.manifest``. Analysis arrays and other tensors outside the state dict are left
    out. The vocoder's weights are ``vocoder_state["generator_state_dict"]`` (the app's key) or
    ``vocoder_state["state_dict"]``.

    The file is written by distillgan itself (safetensors' layout, FORMAT.md §5.2) to a
    temporary file beside ``out_path``, fsynced, then published under its name: a failure never
    leaves a partial file there. An existing file is replaced only with ``overwrite``
    (``file-exists`` otherwise, also when another process creates it meanwhile). Every failure is
    a DistillganError naming the path (``not-found`` for a missing folder, ``permission-denied``,
    ``read-only``, ``no-space``...). ``progress(done, total)`` gets the bytes written; the last
    call is ``(total, total)``, ``total`` being the file's size. The tensors' bytes are copied
    from the archive as stored: torch is not imported.
    """
    from .archive import open_archive

    out = Path(os.path.expanduser(os.fspath(out_path)))
    _check_destination(out, overwrite)
    with open_archive(model_path) as archive:
        values = archive.decoded.values
        manifest_json = json.dumps(inspect_manifest(archive), ensure_ascii=False, allow_nan=False)
        if vocoder:
            state = values["vocoder_state"]
            if not isinstance(state, dict):
                raise InputError(f"{os.fspath(model_path)!r} bundles no vocoder", code="invalid-input")
            key = next((k for k in ("generator_state_dict", "state_dict") if k in state), None)
            if key is None:
                raise InputError("the vocoder state has neither generator_state_dict nor state_dict", code="invalid-input")
            refs = _flat_refs(state[key], f"vocoder_state[{key!r}]")
        else:
            refs = _flat_refs(values["state_dict"], "the state dict")
        stored: dict[str, Any] = {}  # export name -> (member, stored tensor)
        seen: set[tuple[str, str]] = set()
        for name in sorted(refs):  # tied tensors are one stored tensor: keep the first name, as safetensors does
            ref = refs[name]
            target = (ref.member, archive.manifest["members"][ref.member]["aliases"].get(ref.name, ref.name))
            if target in seen:
                continue
            seen.add(target)
            stored[name] = (target[0], archive.tensor_info(*target))
        _write_safetensors({name: (info.dtype, info.shape) for name, (_m, info) in stored.items()},
                           lambda name: archive.tensor_chunks(*stored[name]),
                           {"format": "pt", EXPORT_MANIFEST_KEY: manifest_json}, out, overwrite, progress)
    return out


def inspect_manifest(archive: Any) -> Any:
    """The manifest's JSON projection (FORMAT.md §4.6), as ``inspect`` shows it."""
    from .values import json_view

    return json_view(archive.manifest)


def _exists_error(out: Path) -> InputError:
    return InputError(f"{str(out)!r} exists; pass overwrite=True (CLI: --force) to replace it", code="file-exists")


def _check_destination(out: Path, overwrite: bool) -> None:
    """Refuse early what cannot work: a folder as OUT, a missing folder, an existing file without ``overwrite``."""
    from .errors import FileAccessError

    if out.is_dir():
        raise InputError(f"{str(out)!r} is a folder; give the path of the .safetensors file to write", code="invalid-input")
    folder = out.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise FileAccessError(
            f"cannot write {str(out)!r}: the folder {str(folder)!r} {what}; create it first or choose another path",
            code="not-found" if not folder.exists() else "not-a-directory",
        )
    if os.path.lexists(out) and not overwrite:
        raise _exists_error(out)


def _write_safetensors(tensors: dict[str, tuple[str, tuple[int, ...]]], data: Any, metadata: dict[str, str], out: Path,
                       overwrite: bool, progress: Any) -> None:
    """Write a safetensors file at ``out``: a temporary file beside it, fsynced, then published.

    ``tensors`` maps each name to (dtype code, shape); ``data(name)`` yields that tensor's bytes.
    The layout is FORMAT.md §5.2's (element size, then name; data aligned to 64), with
    ``__metadata__`` first in the header; safetensors' own readers accept it.
    """
    import struct as _struct
    import tempfile

    from .errors import from_os_error
    from .tensors import ALIGNMENT, MAX_HEADER_BYTES, build_header

    _, layout = build_header([(name, dtype, tuple(shape)) for name, (dtype, shape) in tensors.items()])
    header: dict[str, Any] = {"__metadata__": metadata}
    header.update({i.name: {"dtype": i.dtype, "shape": list(i.shape), "data_offsets": [i.begin, i.end]} for i in layout})
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * ((-(8 + len(raw))) % ALIGNMENT)
    if len(raw) > MAX_HEADER_BYTES:  # safetensors (and distillgan) refuse such a file: never write one
        raise InputError(
            f"cannot export to {str(out)!r}: its safetensors header would be {len(raw)} bytes (the manifest as JSON is "
            f"{len(metadata.get(EXPORT_MANIFEST_KEY, ''))} characters); safetensors reads at most {MAX_HEADER_BYTES} "
            "(FORMAT.md §8). Nothing was written",
            code="st-header-size",
        )
    head = _struct.pack("<Q", len(raw)) + raw
    total = len(head) + (layout[-1].end if layout else 0)

    def chunks() -> Any:
        yield memoryview(head)
        for i in layout:
            yield from data(i.name)

    tmp = ""
    try:
        # a short prefix: OUT's own name may already be near the file system's limit on name length
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name[:40]}.", suffix=".tmp")
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o644)  # mkstemp makes 0600; an export is an ordinary readable file
        with os.fdopen(fd, "wb", buffering=0) as f:
            done = 0
            for piece in chunks():
                chunk = memoryview(piece)
                while chunk:
                    n = f.write(chunk[: 8 << 20])
                    chunk = chunk[n:]
                    done += n
                    if progress is not None:
                        progress(done, total)
            os.fsync(f.fileno())
        _check_export(tmp, out, layout, metadata)
        place_file(tmp, out, overwrite=overwrite, exists=lambda: _exists_error(out))
        fsync_dir(out.parent)
    except OSError as e:  # the error names the target, not the temporary file
        raise from_os_error(OSError(e.errno, e.strerror), "write a safetensors file", out) from e
    finally:
        if tmp:
            unlink_quietly(tmp)


def _check_export(tmp: str, out: Path, layout: list[Any], metadata: dict[str, str]) -> None:
    """Read the written file back with safetensors itself before it is published (no tensor data is read).

    Its tensors (names, dtypes, shapes) and ``__metadata__`` must be exactly what was meant: an
    export that safetensors refuses or reads otherwise is an error, and nothing is published.
    """
    import importlib.util

    import safetensors

    framework = "numpy" if importlib.util.find_spec("numpy") is not None else "pt"  # the lighter import
    try:
        with safetensors.safe_open(tmp, framework=framework) as f:
            got_meta = f.metadata()
            got = {name: (f.get_slice(name).get_dtype(), list(f.get_slice(name).get_shape())) for name in f.keys()}
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError) types
        raise InputError(
            f"cannot export to {str(out)!r}: safetensors cannot read the file written: {e}", code="export-unreadable"
        ) from e
    meant = {i.name: (i.dtype, list(i.shape)) for i in layout}
    if got != meant or got_meta != metadata:
        raise InputError(
            f"cannot export to {str(out)!r}: safetensors reads the file written otherwise than meant "
            f"({len(got)} tensors for {len(meant)})",
            code="export-unreadable",
        )
