"""The model API of the seed plan: save, load, delete and convert ``.distillgan`` models.

Storage is the archive of FORMAT.md (zip + msgpack manifest + safetensors),
never a pickle. Saving is atomic and durable: the file is written under a
temporary name in the target folder, fsynced, and published under a name no
other save can take; then the folder's index is updated.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import container as zc
from .archive import ArchivePlan, Progress, encode_checked, open_archive, plan_archive, plan_member, write_archive
from .catalog import MODEL_FILE_EXTENSION, ModelLibrary, entry_from_manifest, fsync_dir
from .crc import crc32
from .errors import DistillganError, InputError, IntegrityError, LibraryError, from_os_error
from .locks import create_temporary, discard_temporary, release_temporary
from .manifest import ModelMetadata, coerce_metadata
from .source import is_url
from .values import Splitter, dataclass_to_dict

logger = logging.getLogger("distillgan")
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
    vocoder: Any = None

    def __repr__(self) -> str:
        def tensors(value: Any) -> tuple[int, int]:
            seen: dict[int, int] = {}
            stack = [value]
            while stack:
                v = stack.pop()
                if hasattr(v, "element_size") and hasattr(v, "numel"):
                    seen[id(v)] = v.numel() * v.element_size()
                elif hasattr(v, "nbytes") and hasattr(v, "dtype"):
                    seen[id(v)] = int(v.nbytes)
                elif isinstance(v, dict):
                    stack.extend(v.values())
                elif isinstance(v, (list, tuple)):
                    stack.extend(v)
            return len(seen), sum(seen.values())

        n, size = tensors(self.state_dict)
        parts = [f"name={self.metadata.name!r}", f"id={self.metadata.model_id!r}", f"state_dict={n} tensors ({size / 2**20:.1f} MiB)",
                 f"latent_dim={self.latent_dim}", f"analysis={'yes' if self.analysis is not None else 'no'}"]
        if self.vocoder_state is not None:
            vn, vsize = tensors(self.vocoder_state)
            kind = self.vocoder_state.get("type", "?") if isinstance(self.vocoder_state, dict) else "?"
            parts.append(f"vocoder={kind!s} ({vn} tensors, {vsize / 2**20:.1f} MiB)")
        else:
            parts.append("vocoder=None")
        if self.extra is not None:
            parts.append(f"extra={type(self.extra).__name__}")
        if self.model is not None:
            parts.append(f"model={type(self.model).__name__}")
        parts.append(f"device={self.device}")
        return f"LoadedModel({', '.join(parts)})"


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


@contextmanager
def _os_errors(action: str, path: Any) -> Iterator[None]:
    """Turn an ``OSError`` into the DistillganError that names the path and what to do."""
    try:
        yield
    except DistillganError:
        raise
    except OSError as e:
        raise from_os_error(e, action, path) from e


def _save(*args: Any, **kwargs: Any) -> Path:
    """:func:`_save_model_file`, with OS failures (permissions, read-only, disk full) as DistillganErrors."""
    folder = kwargs.get("models_dir", args[5] if len(args) > 5 else "")
    with _os_errors("save a model", folder):
        path = _save_model_file(*args, **kwargs)
    logger.info("saved %s", path)
    return path


def _save_model_file(
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
    text = os.fspath(models_dir)
    if is_url(text):
        raise InputError(
            f"models_dir {text!r} is a URL; save_model writes into a local folder (distillgan reads URLs, it does not write them)",
            code="invalid-input",
        )
    if text.lower().endswith(MODEL_FILE_EXTENSION):
        raise InputError(
            f"models_dir {text!r} looks like a file name; save_model takes a folder and names the file after the model. "
            "To write one file at a path of your choosing use distillgan.save_file(model, path, ...)",
            code="invalid-input",
        )
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


def _torch_device(device: Any) -> Any:
    """``torch.device(device)``, checked to be usable here: an InputError naming ``device="cpu"`` otherwise."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"device {device!r} is not a torch device: {e}", code="invalid-input") from e
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and (dev.index is None or dev.index < torch.cuda.device_count())
        why = "this torch has no CUDA, or no CUDA device is visible" if not torch.cuda.is_available() else "there is no such CUDA device"
    elif dev.type == "mps":
        ok = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
        why = "MPS is not available on this machine"
    else:
        try:
            torch.empty(0, device=dev)
            ok, why = True, ""
        except (RuntimeError, AssertionError, NotImplementedError) as e:
            ok, why = False, str(e).splitlines()[0]
    if not ok:
        raise InputError(f"device {str(dev)!r} cannot be used here: {why}. Load with device=\"cpu\"", code="device-unavailable")
    return dev


def _load_into(module: Any, state: Mapping[str, Any], *, strict: bool, assign: bool, device: Any, what: str) -> Any:
    """``module.load_state_dict(state)`` with the module on ``device`` first, so each tensor is copied once at most."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise InputError(f"{what} returned a {type(module).__name__}, not an nn.Module", code="invalid-input")
    on_meta = any(p.is_meta for p in module.parameters()) or any(b.is_meta for b in module.buffers())
    if on_meta and not assign:
        raise InputError(
            f"{what} built a module on the meta device: load it with assign=True (its parameters become the loaded tensors)",
            code="invalid-input",
        )
    if not on_meta and not assign:
        module = module.to(device)  # then load_state_dict copies device to device, once
    try:
        result = module.load_state_dict(state, strict=strict, assign=assign)
    except RuntimeError as e:  # torch reports missing/unexpected keys and shape mismatches so
        raise InputError(f"the stored weights do not fit the module {what} built: {e}", code="invalid-input") from e
    if not strict and (result.missing_keys or result.unexpected_keys):
        logger.info("%s: missing keys %s, unexpected keys %s", what, result.missing_keys, result.unexpected_keys)
    return module.to(device).eval()


def load_model(
    model_path: str | os.PathLike[str],
    device: Any = "cpu",
    *,
    model_builder: Callable[[LoadedModel], Any] | None = None,
    vocoder_builder: Callable[[LoadedModel], Any] | None = None,
    strict: bool = True,
    assign: bool = False,
    verify: bool = False,
    copy: bool = False,
    progress: Progress | None = None,
) -> LoadedModel:
    """Load a ``.distillgan`` file: tensors, configs, analysis, metadata, vocoder and extra.

    Nothing is unpickled. Every value comes back as it was saved: the same
    structure, container and key types, and tensors, parameters and numpy
    arrays at the same places with the same dtypes and bits; tied tensors
    are one object. On the CPU, tensors are copy-on-write views of the
    mapped file (modifying them never changes the file) unless ``copy=True``,
    which gives tensors that own their memory so that nothing keeps the file
    mapped (on Windows a mapped file cannot be deleted or replaced). On
    another device each tensor is copied there once, from the mapping.

    ``model_builder(loaded)`` builds the generator module: ``load_state_dict(state_dict,
    strict=strict, assign=assign)`` is called on it and it is moved to ``device`` and put in
    eval mode (``loaded.model``). Build it on the meta device and pass ``assign=True`` to use the
    loaded tensors as its parameters without a second copy in memory. ``vocoder_builder``
    does the same for the bundled vocoder (``loaded.vocoder``) with
    ``vocoder_state["generator_state_dict"]`` (the app's key) or ``["state_dict"]``.
    ``verify=True`` also checks the CRC-32 of the tensor data and returns tensors that own memory:
    the bytes checked are the bytes used, and neither a truncation nor a rewrite of the file by
    another process reaches them (``verify()`` checks a whole file). ``progress(done, total)``
    counts the stored tensor bytes made available.

    Raises :class:`~distillgan.LegacyFormatError` for legacy ``.distill`` and
    pickle files, :class:`~distillgan.VersionError` for newer format
    versions, :class:`~distillgan.InputError` ``device-unavailable`` for a device this machine
    lacks, and other :class:`~distillgan.DistillganError` subclasses for anything invalid.
    """
    torch_device = _torch_device(device)
    archive = open_archive(model_path)
    try:
        raw = archive.manifest
        values = archive.values(device=torch_device, copy=copy, verify=verify, progress=progress)
    finally:
        archive.close()  # with views, the mapping lives on inside the tensors that view it
    loaded = LoadedModel(
        state_dict=values["state_dict"],
        metadata=ModelMetadata(**{str(k): (list(v) if k == "tags" else v) for k, v in raw["metadata"].items()}),  # type: ignore[arg-type]
        spectrogram_config=values["spectrogram_config"],
        training_config=values["training_config"],
        latent_dim=raw["latent_dim"],
        analysis=values["analysis"],
        device=torch_device,
        vocoder_state=values["vocoder_state"],
        extra=values["extra"],
    )
    if model_builder is not None:
        loaded.model = _load_into(
            model_builder(loaded), loaded.state_dict, strict=strict, assign=assign, device=torch_device, what="model_builder"
        )
    if vocoder_builder is not None:
        voc = loaded.vocoder_state
        key = next((k for k in ("generator_state_dict", "state_dict") if isinstance(voc, dict) and isinstance(voc.get(k), dict)), None)
        if key is None or voc is None:
            raise InputError("vocoder_builder given, but the file bundles no vocoder weights (generator_state_dict or state_dict)",
                             code="invalid-input")
        loaded.vocoder = _load_into(
            vocoder_builder(loaded), voc[key], strict=strict, assign=assign, device=torch_device, what="vocoder_builder"
        )
    logger.info("loaded %r (%s) from %s onto %s", loaded.metadata.name, loaded.metadata.model_id, os.fspath(model_path), torch_device)
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
    with _os_errors("replace the vocoder of a model", model_path):
        path = _update_vocoder(model_path, vocoder_state, progress)
    logger.info("replaced the vocoder of %s", path)
    return path


def _update_vocoder(model_path: str | os.PathLike[str], vocoder_state: Mapping[str, Any] | None, progress: Progress | None) -> Path:
    path = Path(os.path.expanduser(os.fspath(model_path)))
    if is_url(os.fspath(model_path)):
        raise InputError(f"{os.fspath(model_path)!r} is a URL; update_vocoder rewrites a local file", code="invalid-input")
    library = ModelLibrary(path.parent)
    with library.locked():
        archive = open_archive(path)
        try:
            model = next(m for m in archive.members if m.name == zc.MODEL_NAME)
            raw = {k: v for k, v in archive.manifest.items() if k not in ("format", "version")}
            splitter = Splitter()
            raw["vocoder_state"] = splitter.encode(_as_tree(vocoder_state, "vocoder_state", allow_none=True), ("vocoder_state",), zc.VOCODER_NAME)
            raw["members"] = {zc.MODEL_NAME: raw["members"][zc.MODEL_NAME]}
            def model_chunks() -> Iterator[bytes]:
                """The weights byte for byte, their CRC-32 checked on exactly the bytes written: damaged
                weights never get a fresh, valid CRC (the write is aborted), and a rewrite of the file
                meanwhile cannot slip in."""
                crc = 0
                for view in archive.source.read_stream(model.data_offset, model.size):
                    chunk = bytes(view)  # the writer keeps chunks a while (CRC on a worker); the stream reuses its buffer
                    crc = crc32(chunk, crc)
                    yield chunk
                if crc != model.crc32:
                    raise IntegrityError(
                        f"{str(path)!r}: model.safetensors has CRC-32 0x{crc:08x}; the directory records 0x{model.crc32:08x}: "
                        "the weights are damaged, the vocoder was not replaced (FORMAT.md §6)",
                        code="crc-mismatch",
                    )

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
            _publish_over(library, tmp, path, entry_from_manifest(plan.raw, path.name, size))
        except BaseException:
            _unlink_quietly(tmp)  # nothing if it was published
            raise
    return path


def _publish_over(library: ModelLibrary, tmp: str, path: Path, entry: Any, before_index: Callable[[], None] | None = None) -> None:
    """Rename the finished temporary file ``tmp`` over the published ``path``, then index ``entry``; the caller holds the lock.

    A kill between the rename and the index leaves the replacement marker (FORMAT.md §15.2 item 4),
    so the next reader indexes the file again; a failed rename leaves the old file and its entry
    as they were, and no marker. The index update only warns if it fails (the marker then stays).
    ``before_index`` runs between the two (the crash tests stop there).
    """
    release_temporary(tmp)  # Windows cannot rename an open file
    marker = library.mark_replacing(path.name)
    try:
        _replace(tmp, path)
    except BaseException:
        _unlink_quietly(marker)
        raise
    fsync_dir(path.parent)
    if before_index is not None:
        before_index()
    if library.record(library.indexed(), entry, durable=True):
        _unlink_quietly(marker)


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
    with _os_errors("delete a model", models_dir):
        deleted = _delete_model(model_id, models_dir)
    if deleted:
        logger.info("deleted model %s from %s", model_id, os.fspath(models_dir))
    return deleted


def _delete_model(model_id: str, models_dir: str | os.PathLike[str]) -> bool:
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
    metadata: Any,
    models_dir: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
) -> Path:
    """Convert a training checkpoint (or any file :func:`~distillgan.read_checkpoint` knows) into a model.

    The checkpoint is read without running anything in it (never ``torch.load``), and nothing is
    dropped: weights, configs, analysis and ``latent_dim`` go to their places, the epoch and
    losses (inf and NaN kept) also into the metadata, and the optimizer, scheduler, metrics
    history and every other key into ``extra``. ``metadata``'s non-default fields win over the
    file's; the object is filled in place (``model_id``, ``save_date``, ``training_epochs``,
    losses), as in the seed app.
    """
    from .convert import convert_checkpoint

    return convert_checkpoint(checkpoint_path, models_dir, metadata=metadata, progress=progress)
