"""The model API of the seed plan: save, load, delete and convert ``.distillgan`` models.

Storage is the archive of FORMAT.md (zip + msgpack manifest + safetensors),
never a pickle. Saving is atomic and durable: the file is written under a
temporary name in the target folder, fsynced, and published under a name no
other save can take; then the folder's index is updated.
"""

from __future__ import annotations

import itertools
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import container as zc
from .archive import ArchivePlan, Progress, encode_checked, open_archive, plan_archive, plan_member, write_archive
from .catalog import MODEL_FILE_EXTENSION, ModelLibrary, entry_from_manifest, fsync_dir
from .errors import InputError, LibraryError
from .locks import create_temporary, discard_temporary, release_temporary
from .manifest import ModelMetadata, coerce_metadata
from .source import is_url
from .values import Splitter, dataclass_to_dict

MAX_STEM_CHARS = 100
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


@dataclass
class LoadedModel:
    """Everything a ``.distillgan`` file stores, ready to use.

    Every value comes back as it was saved (FORMAT.md §4.4): the same
    structure, container and key types, tensors and numpy arrays at the same
    places. Tensors are on ``device``; on the CPU they are copy-on-write views
    of the mapped file unless ``load_model(copy=True)``. ``model`` is the
    module built by ``load_model``'s ``model_builder``, else None.
    """

    state_dict: dict[str, Any]
    metadata: ModelMetadata
    spectrogram_config: dict[str, Any]
    training_config: dict[str, Any]
    latent_dim: int | None
    analysis: dict[str, Any] | None
    device: Any
    vocoder_state: dict[str, Any] | None = None
    model: Any = None
    extra: Any = None


# --- helpers ---------------------------------------------------------------------------


def _sanitize_filename(name: str) -> str:
    """A safe file stem from a model name: [a-z0-9_-], at most 100 chars, never empty or reserved."""
    stem = re.sub(r"[^a-zA-Z0-9_\-]", "_", name)
    stem = re.sub(r"_+", "_", stem).strip("_").lower()[:MAX_STEM_CHARS].strip("_")
    if not stem:
        stem = "untitled"
    if stem in _WINDOWS_RESERVED:
        stem += "_model"
    return stem


def _as_tree(value: Any, where: str, *, allow_none: bool = False) -> Any:
    """A config, analysis or vocoder state given as a mapping, a dataclass or an object with ``to_dict()``."""
    if value is None and allow_none:
        return None
    if hasattr(type(value), "__dataclass_fields__") and not isinstance(value, type):
        return dataclass_to_dict(value)
    if isinstance(value, Mapping):
        return value
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return _as_tree(to_dict(), where, allow_none=allow_none)
    raise InputError(
        f"{where}: expected a dict, a dataclass instance or an object with to_dict(), got {type(value).__name__}", code="invalid-input"
    )


def _state_dict_of(model: Any, where: str) -> tuple[Mapping[str, Any], Any]:
    """(state dict, latent_dim attribute or None) of an nn.Module or a mapping of names to tensors."""
    import torch

    if isinstance(model, torch.nn.Module):
        return model.state_dict(), getattr(model, "latent_dim", None)
    if isinstance(model, Mapping):
        return model, None
    raise InputError(f"{where}: expected an nn.Module or a mapping of names to tensors, got {type(model).__name__}", code="invalid-input")


def _latent_dim(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int and getattr(value, "shape", None) == () and callable(getattr(value, "item", None)):
        value = value.item()  # a numpy or torch integer scalar
    if type(value) is not int or value < 0:
        raise InputError(f"latent_dim: expected a non-negative int or None, got {value!r}", code="invalid-input")
    return value


def _fill_in_place(metadata: Any, name: str, value: Any) -> None:
    """Write a filled-in field back to the caller's object, as the seed app's save_model does."""
    if isinstance(metadata, MutableMapping):
        metadata[name] = value
    elif hasattr(type(metadata), "__dataclass_fields__"):
        setattr(metadata, name, value)


def _numbered(models_dir: Path, stem: str, counter: int) -> Path:
    suffix = "" if counter == 0 else f"_{counter}"
    return models_dir / f"{stem[: MAX_STEM_CHARS - len(suffix)]}{suffix}{MODEL_FILE_EXTENSION}"


def _free_counter(models_dir: Path, stem: str) -> int:
    """Where to start looking for a free ``<stem>[_N]`` name: the first free one if names are taken from 0 up.

    Doubling then bisection: ~2 log2(n) ``lstat`` calls for n models of one name, where trying
    each name in turn cost n (issue 14.5). With holes (deleted models) it may skip a free lower
    number; the no-clobber link that follows is what decides.
    """
    if not os.path.lexists(_numbered(models_dir, stem, 0)):
        return 0
    taken, free = 0, 1
    while os.path.lexists(_numbered(models_dir, stem, free)):
        taken, free = free, free * 2
    while free - taken > 1:
        mid = (taken + free) // 2
        if os.path.lexists(_numbered(models_dir, stem, mid)):
            taken = mid
        else:
            free = mid
    return free


def _publish(tmp: str, models_dir: Path, stem: str) -> Path:
    """Give the finished temporary file its final name without ever replacing another file.

    The caller holds the folder lock: the temporary file is released (closed, unlocked: Windows
    cannot rename or unlink an open file) and no repair can take it for abandoned meanwhile.
    """
    release_temporary(tmp)
    for counter in itertools.count(_free_counter(models_dir, stem)):
        final = _numbered(models_dir, stem, counter)
        try:
            os.link(tmp, final)  # atomic and no-clobber: fails if the name is taken
        except FileExistsError:
            continue
        except (OSError, NotImplementedError, AttributeError):
            if os.name == "nt":  # no hard links here; rename never replaces on Windows
                try:
                    os.rename(tmp, final)
                    return final
                except FileExistsError:
                    continue
            try:  # no hard links on this file system: reserve the name, then replace
                os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            os.replace(tmp, final)
            return final
        os.unlink(tmp)
        return final
    raise AssertionError("unreachable")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _write_temporary(plan: ArchivePlan, folder: Path, stem: str, progress: Progress | None) -> tuple[str, int]:
    """Write ``plan`` to a fresh hidden temporary file in ``folder``, fsynced; return its path and size.

    The file (``.<stem>.<pid>.<random>.distillgan-tmp``, mode 0644) stays open and locked until
    ``_publish`` or ``discard_temporary``, so that a repair knows its writer is alive (locks.py).
    """
    fd, tmp = create_temporary(folder, stem)
    try:
        with os.fdopen(fd, "wb", buffering=0, closefd=False) as f:
            size = write_archive(f, plan, progress=progress)
            os.fsync(f.fileno())
    except BaseException:
        discard_temporary(tmp)
        raise
    return tmp, size


def _save(
    state_dict: Mapping[str, Any],
    latent_dim: Any,
    spectrogram_config: Any,
    training_config: Any,
    metadata: Any,
    models_dir: str | os.PathLike[str],
    analysis: Any,
    vocoder_state: Any,
    extra: Any = None,
    progress: Progress | None = None,
) -> Path:
    if is_url(os.fspath(models_dir)):
        raise InputError(f"models_dir {os.fspath(models_dir)!r} is a URL; save_model writes to a local folder", code="invalid-input")
    meta = coerce_metadata(metadata)
    analysis = _as_tree(analysis, "analysis", allow_none=True)
    if not meta["model_id"]:
        meta["model_id"] = str(uuid.uuid4())
        _fill_in_place(metadata, "model_id", meta["model_id"])
    if not meta["save_date"]:
        meta["save_date"] = datetime.now(timezone.utc).isoformat()
        _fill_in_place(metadata, "save_date", meta["save_date"])
    if analysis is not None:
        meta["has_analysis"] = True
        _fill_in_place(metadata, "has_analysis", True)
        n_active = analysis.get("n_active_components") if isinstance(analysis, Mapping) else None
        if type(n_active) is int and n_active >= 0:
            meta["n_active_components"] = n_active
            _fill_in_place(metadata, "n_active_components", n_active)
    manifest: dict[str, Any] = {
        "latent_dim": _latent_dim(latent_dim),
        "metadata": meta,
        "spectrogram_config": _as_tree(spectrogram_config, "spectrogram_config"),
        "training_config": _as_tree(training_config, "training_config"),
        "analysis": analysis,
        "state_dict": state_dict,
        "vocoder_state": _as_tree(vocoder_state, "vocoder_state", allow_none=True),
        "extra": extra,
    }
    models_dir = Path(os.path.expanduser(os.fspath(models_dir)))
    models_dir.mkdir(parents=True, exist_ok=True)
    library = ModelLibrary(models_dir)
    library.check_id_free(meta["model_id"])  # fail before writing; checked again under the lock
    stem = _sanitize_filename(meta["name"])
    plan = plan_archive(manifest)  # refuses unstorable values before any file is created
    tmp, size = _write_temporary(plan, models_dir, stem, progress)
    try:
        with library.locked():
            base = library.prepare_add(meta["model_id"])
            final = _publish(tmp, models_dir, stem)
            fsync_dir(models_dir)
            # Published: from here on nothing raises. The entry comes from the manifest, which was
            # round-tripped through the reader before writing; the index write is not fsynced
            # (the file is, and the entry can be derived from it again: catalog.py).
            library.record(base, entry_from_manifest(plan.raw, final.name, size), durable=False)
    except BaseException:
        discard_temporary(tmp)  # nothing if it was published
        raise
    return final


# --- public API -------------------------------------------------------------------------


def save_model(
    model: Any,
    spectrogram_config: Any,
    training_config: Any,
    metadata: Any,
    models_dir: str | os.PathLike[str],
    analysis: Any = None,
    vocoder_state: Mapping[str, Any] | None = None,
    *,
    latent_dim: int | None = None,
    extra: Any = None,
    progress: Progress | None = None,
) -> Path:
    """Save a trained model as a ``.distillgan`` file in ``models_dir`` and index it.

    Every value is stored exactly (FORMAT.md §4.4): dicts with str or int
    keys (order kept), lists, tuples, None, bool, 64-bit ints, floats
    (NaN and ±inf included), str, bytes, and tensors, ``nn.Parameter`` and
    numpy arrays anywhere; Enum members, numpy scalars and paths are
    converted by the documented rules. Anything else is refused with an
    :class:`~distillgan.InputError` naming its path, before any file is
    created.

    Parameters:
        model: an ``nn.Module`` (its ``state_dict()`` is stored) or a
            mapping (a state dict, or any tree holding tensors).
        spectrogram_config, training_config: dicts or dataclass instances.
        metadata: ``ModelMetadata``, any dataclass with its fields (the app's
            own class), or a mapping; ``model_id`` and ``save_date`` are
            filled in when empty, ``has_analysis``/``n_active_components``
            from the analysis, and written back to the object in place.
        models_dir: the folder (``~`` is expanded); created if missing.
        analysis: the latent analysis: a dict, dataclass, or object with ``to_dict()``.
        vocoder_state: the bundled vocoder, stored as given (any mapping:
            for the app, ``{"type", "generator_state_dict", "config",
            "training_metadata"[, "checkpoint"]}``); its tensors go to
            ``vocoder.safetensors``. None stores no vocoder.
        latent_dim: the generator's latent size; by default the module's
            ``latent_dim`` attribute (None for a mapping).
        extra: any further value tree to keep with the model (optimizer
            state, metrics history…); comes back as ``LoadedModel.extra``.
        progress: called as ``progress(bytes_written, bytes_total)`` while
            tensor data is written (possibly from a worker thread).

    Returns the path of the new file, named after ``metadata.name`` (with
    ``_1``, ``_2``… when taken).
    """
    state_dict, attr_latent = _state_dict_of(model, "model")
    return _save(
        state_dict,
        latent_dim if latent_dim is not None else attr_latent,
        spectrogram_config,
        training_config,
        metadata,
        models_dir,
        analysis,
        vocoder_state,
        extra,
        progress,
    )


def load_model(
    model_path: str | os.PathLike[str],
    device: Any = "cpu",
    *,
    model_builder: Callable[[LoadedModel], Any] | None = None,
    verify: bool = False,
    copy: bool = False,
) -> LoadedModel:
    """Load a ``.distillgan`` file: tensors, configs, analysis, metadata, vocoder and extra.

    Nothing is unpickled. Every value comes back as it was saved: the same
    structure, container and key types, and tensors, parameters and numpy
    arrays at the same places with the same dtypes and bits; tied tensors
    are one object. On the CPU, tensors are copy-on-write views of the
    mapped file (modifying them never changes the file) unless ``copy=True``,
    which gives tensors that own their memory so that nothing keeps the file
    mapped (on Windows a mapped file cannot be deleted or replaced). On
    another device each tensor is copied there once.
    ``model_builder(loaded)`` may build the module: its ``load_state_dict``
    is then called strictly and the module is moved to ``device`` and put in
    eval mode. ``verify=True`` also checks the CRC-32 of the tensor data
    (``verify()`` does that for a whole file).

    Raises :class:`~distillgan.LegacyFormatError` for legacy ``.distill`` and
    pickle files, :class:`~distillgan.VersionError` for newer format
    versions, and other :class:`~distillgan.DistillganError` subclasses for
    anything invalid.
    """
    import torch

    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"device {device!r} is not a torch device: {e}", code="invalid-input") from e
    archive = open_archive(model_path)
    try:
        if verify:
            archive.check_crcs()
        raw = archive.manifest
        values = archive.values(device=torch_device, copy=copy)
    finally:
        archive.close()  # with views, the mapping lives on inside the tensors that view it
    loaded = LoadedModel(
        state_dict=values["state_dict"],
        metadata=ModelMetadata(**{k: (list(v) if k == "tags" else v) for k, v in raw["metadata"].items()}),
        spectrogram_config=values["spectrogram_config"],
        training_config=values["training_config"],
        latent_dim=raw["latent_dim"],
        analysis=values["analysis"],
        device=torch_device,
        vocoder_state=values["vocoder_state"],
        extra=values["extra"],
    )
    if model_builder is not None:
        module = model_builder(loaded)
        try:
            module.load_state_dict(loaded.state_dict)
        except RuntimeError as e:  # torch reports missing/unexpected keys and shape mismatches so
            raise InputError(f"the stored weights do not fit the module model_builder built: {e}", code="invalid-input") from e
        loaded.model = module.to(torch_device).eval()
    return loaded


def update_vocoder(
    model_path: str | os.PathLike[str], vocoder_state: Mapping[str, Any] | None, *, progress: Progress | None = None
) -> Path:
    """Replace the bundled vocoder of a saved model (None removes it), atomically.

    The model keeps its path, ``model_id``, metadata and every other value;
    its weights are copied byte for byte (after checking their CRC-32), so
    the file is exactly what ``save_model`` would write with the new
    vocoder. The new file is written beside the old one, fsynced and
    renamed over it under the folder's lock, then the index entry is
    updated: a crash leaves the old file or the new one, never a mixture.
    On Windows a model that is loaded as views of its file (``load_model``
    without ``copy=True``) cannot be replaced: :class:`~distillgan.LibraryError`
    ``file-in-use``.
    """
    path = Path(os.path.expanduser(os.fspath(model_path)))
    if is_url(os.fspath(model_path)):
        raise InputError(f"{os.fspath(model_path)!r} is a URL; update_vocoder rewrites a local file", code="invalid-input")
    library = ModelLibrary(path.parent)
    with library.locked():
        archive = open_archive(path)
        try:
            model = next(m for m in archive.members if m.name == zc.MODEL_NAME)
            archive.check_crcs(members=[zc.MODEL_NAME])  # never give damaged weights a fresh, valid CRC
            raw = {k: v for k, v in archive.manifest.items() if k not in ("format", "version")}
            splitter = Splitter()
            raw["vocoder_state"] = splitter.encode(_as_tree(vocoder_state, "vocoder_state", allow_none=True), ("vocoder_state",), zc.VOCODER_NAME)
            raw["members"] = {zc.MODEL_NAME: raw["members"][zc.MODEL_NAME]}
            buf = archive.source.buffer

            def model_chunks() -> Iterator[memoryview]:
                view = memoryview(buf)
                for start in range(model.data_offset, model.data_offset + model.size, zc._CHUNK):
                    yield view[start : min(start + zc._CHUNK, model.data_offset + model.size)]

            members: list[Any] = [(zc.MODEL_NAME, model.size, model_chunks)]
            if vocoder_state is not None:
                size, chunks, aliases = plan_member(zc.VOCODER_NAME, splitter.claims)
                members.append((zc.VOCODER_NAME, size, chunks))
                raw["members"][zc.VOCODER_NAME] = {"size": size, "aliases": aliases}
            raw = {"format": archive.manifest["format"], "version": archive.manifest["version"], **raw}
            plan = ArchivePlan(raw, encode_checked(raw), members)
            tmp, size = _write_temporary(plan, path.parent, _sanitize_filename(raw["metadata"]["name"]), progress)
        finally:
            archive.close()
        try:
            release_temporary(tmp)  # we hold the folder lock; Windows cannot rename an open file
            _replace(tmp, path)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        fsync_dir(path.parent)
        # Published: the index update only warns if it fails (the next reader reconciles).
        library.record(library.indexed(), entry_from_manifest(plan.raw, path.name, size), durable=True)
    return path


def _replace(tmp: str, path: Path) -> None:
    """Rename ``tmp`` over ``path``; on Windows, retry briefly while another handle has it open."""
    for attempt in range(50):
        try:
            os.replace(tmp, path)
            return
        except PermissionError as e:
            if os.name != "nt" or attempt == 49:
                raise LibraryError(
                    f"cannot replace {str(path)!r}: {e.strerror} (is it loaded? load_model(copy=True) keeps no handle on the file)",
                    code="file-in-use",
                ) from e
            time.sleep(0.02)


def delete_model(model_id: str, models_dir: str | os.PathLike[str]) -> bool:
    """Delete a model's ``.distillgan`` file and its index entry; False if the id is unknown.

    The index is only a hint: the file is deleted only if its own manifest holds ``model_id``
    (:class:`~distillgan.LibraryError` ``index-mismatch`` otherwise, and nothing is deleted).
    The entry goes first, then the file, both under the folder's lock, so the index never
    lists a missing file. If the file cannot be removed (on Windows, while it is loaded), the
    entry is restored and :class:`~distillgan.LibraryError` ``file-in-use`` is raised. A
    folder that does not exist holds no model: False, and nothing is created.
    """
    library = ModelLibrary(models_dir)
    if not library.models_dir.is_dir():
        return False
    with library.locked():
        entries = library.reconciled()
        entry = entries.get(model_id)
        if entry is None:
            return False
        library.confirm(entry)
        library.drop(entries, model_id)
        try:
            os.unlink(library.models_dir / entry.file_path)
        except FileNotFoundError:
            pass
        except OSError as e:
            library.record(entries, entry, durable=True)
            raise LibraryError(f"cannot delete {entry.file_path!r}: {e.strerror} (is it loaded?)", code="file-in-use") from e
    fsync_dir(library.models_dir)
    return True


def save_model_from_checkpoint(
    checkpoint_path: str | os.PathLike[str],
    metadata: ModelMetadata,
    models_dir: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
) -> Path:
    """Convert a training ``.pt`` checkpoint into a ``.distillgan`` model.

    The checkpoint is read with ``torch.load(weights_only=True)`` (never
    ``weights_only=False``), so it cannot run code. It must be a dict with
    ``model_state_dict``; ``spectrogram_config``, ``training_config``,
    ``latent_dim``, ``latent_analysis`` and ``vocoder_state`` are used when
    present, ``epoch``/``train_loss``/``val_loss`` fill the metadata, and
    optimizer and scheduler state are dropped.
    """
    import torch

    try:
        ckpt = torch.load(os.fspath(checkpoint_path), map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise InputError(f"no such checkpoint: {os.fspath(checkpoint_path)!r}", code="not-found") from e
    except Exception as e:  # torch reports unsafe or damaged pickles with several types
        raise InputError(
            f"cannot read checkpoint {os.fspath(checkpoint_path)!r} with torch.load(weights_only=True): {e}",
            code="bad-checkpoint",
        ) from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model_state_dict"), Mapping):
        raise InputError("checkpoint is not a dict with a 'model_state_dict' mapping", code="bad-checkpoint")
    if isinstance(ckpt.get("epoch"), int):
        metadata.training_epochs = ckpt["epoch"]
    for key, attr in (("train_loss", "final_train_loss"), ("val_loss", "final_val_loss")):
        value = ckpt.get(key)
        if value is not None:
            try:
                setattr(metadata, attr, float(value))
            except (TypeError, ValueError) as e:
                raise InputError(f"checkpoint {key!r} is not a number: {value!r}", code="bad-checkpoint") from e
    return _save(
        dict(ckpt["model_state_dict"]),
        ckpt.get("latent_dim"),
        ckpt.get("spectrogram_config") or {},
        ckpt.get("training_config") or {},
        metadata,
        models_dir,
        ckpt.get("latent_analysis"),
        ckpt.get("vocoder_state"),
        progress=progress,
    )

