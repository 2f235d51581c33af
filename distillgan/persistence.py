"""The model API of the seed plan: save, load, delete and convert ``.distillgan`` models.

Storage is the archive of FORMAT.md (zip + msgpack manifest + safetensors),
never a pickle. Saving is atomic and durable: the file is written under a
temporary name in the target folder, fsynced, and published under a name no
other save can take; then the folder's index is updated.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import container as zc
from .archive import Progress, open_archive, write_archive
from .catalog import MODEL_FILE_EXTENSION, ModelLibrary, entry_from_manifest, fsync_dir
from .errors import InputError, LibraryError
from .manifest import (
    MODEL_FORMAT_MARKER,
    NDARRAY_KEY,
    PLACEHOLDER_KEYS,
    SAVED_MODEL_VERSION,
    TENSOR_KEY,
    ModelMetadata,
    check_metadata,
    to_plain,
)
from .tensors import ANALYSIS_PREFIX, as_numpy, from_numpy, is_tensor_like

VOCODER_STATE_KEYS = ("type", "state_dict", "config", "training_metadata")
MAX_STEM_CHARS = 100
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


@dataclass
class LoadedModel:
    """Everything a ``.distillgan`` file stores, ready to use.

    ``state_dict`` tensors (and the vocoder's) are on ``device``; on the CPU
    they are copy-on-write views of the mapped file. ``model`` is the module
    built by ``load_model``'s ``model_builder``, else None.
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


def _as_dict(value: Any, where: str) -> dict[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise InputError(f"{where}: expected a dict or a dataclass instance, got {type(value).__name__}", code="invalid-input")


def _state_dict_of(model: Any, where: str) -> tuple[dict[str, Any], int | None]:
    """(state dict, latent_dim) of an nn.Module or a mapping of names to tensors."""
    import torch

    if isinstance(model, torch.nn.Module):
        latent = getattr(model, "latent_dim", None)
        return dict(model.state_dict()), latent
    if isinstance(model, Mapping):
        return dict(model), None
    raise InputError(f"{where}: expected an nn.Module or a mapping of names to tensors, got {type(model).__name__}", code="invalid-input")


def _split_analysis(analysis: Any) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Replace every array in the analysis with a placeholder; return (skeleton, tensors)."""
    if analysis is None:
        return None, {}
    if hasattr(analysis, "to_dict") and callable(analysis.to_dict):
        analysis = analysis.to_dict()
    tensors: dict[str, Any] = {}

    def walk(value: Any, where: str) -> Any:
        kind = is_tensor_like(value)
        if kind is not None:
            name = f"{ANALYSIS_PREFIX}{len(tensors)}"
            tensors[name] = from_numpy(value, where) if kind == "numpy" else value
            return {NDARRAY_KEY if kind == "numpy" else TENSOR_KEY: name}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            for key in PLACEHOLDER_KEYS:
                if key in value:
                    raise InputError(f"{where}: the key {key!r} is reserved in the analysis (FORMAT.md §4.4)", code="invalid-input")
            return {k: walk(value[k], f"{where}.{k}") for k in sorted(value, key=lambda k: str(k))}
        if isinstance(value, (list, tuple)):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    skeleton = walk(_as_dict(analysis, "analysis"), "$.analysis")
    return skeleton, tensors


def _restore_analysis(skeleton: Any, tensors: Mapping[str, Any]) -> Any:
    if isinstance(skeleton, dict):
        if len(skeleton) == 1:
            key = next(iter(skeleton))
            if key == NDARRAY_KEY:
                return as_numpy(tensors[skeleton[key]].cpu())
            if key == TENSOR_KEY:
                return tensors[skeleton[key]]
        return {k: _restore_analysis(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [_restore_analysis(v, tensors) for v in skeleton]
    return skeleton


def _publish(tmp: str, models_dir: Path, stem: str) -> Path:
    """Give the finished temporary file its final name without ever replacing another file."""
    for counter in itertools.count():
        suffix = "" if counter == 0 else f"_{counter}"
        final = models_dir / f"{stem[: MAX_STEM_CHARS - len(suffix)]}{suffix}{MODEL_FILE_EXTENSION}"
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


def _save(
    state_dict: Mapping[str, Any],
    latent_dim: Any,
    spectrogram_config: Any,
    training_config: Any,
    metadata: ModelMetadata,
    models_dir: str | os.PathLike[str],
    analysis: Any,
    vocoder_state: Mapping[str, Any] | None,
    progress: Progress | None = None,
) -> Path:
    if not isinstance(metadata, ModelMetadata):
        raise InputError(f"metadata: expected ModelMetadata, got {type(metadata).__name__}", code="invalid-input")
    if latent_dim is not None and (type(latent_dim) is not int or latent_dim < 0):
        raise InputError(f"latent_dim: expected a non-negative int or None, got {latent_dim!r}", code="invalid-input")
    reserved = [k for k in state_dict if isinstance(k, str) and k.startswith(ANALYSIS_PREFIX)]
    if reserved:
        raise InputError(f"tensor name {reserved[0]!r} uses the reserved prefix {ANALYSIS_PREFIX!r} (FORMAT.md §4.4)", code="st-name")
    skeleton, analysis_tensors = _split_analysis(analysis)
    if not metadata.model_id:
        metadata.model_id = str(uuid.uuid4())
    if not metadata.save_date:
        metadata.save_date = datetime.now(timezone.utc).isoformat()
    check_metadata(dataclasses.asdict(metadata), InputError)
    if skeleton is not None:
        metadata.has_analysis = True
        n_active = skeleton.get("n_active_components")
        if type(n_active) is int and n_active >= 0:
            metadata.n_active_components = n_active
    manifest: dict[str, Any] = {
        "format": MODEL_FORMAT_MARKER,
        "version": SAVED_MODEL_VERSION,
        "latent_dim": latent_dim,
        "spectrogram_config": _as_dict(spectrogram_config, "spectrogram_config"),
        "training_config": _as_dict(training_config, "training_config"),
        "analysis": skeleton,
        "metadata": dataclasses.asdict(metadata),
    }
    members: dict[str, Mapping[str, Any]] = {zc.MODEL_NAME: {**state_dict, **analysis_tensors}}
    if vocoder_state is not None:
        voc = _as_dict(vocoder_state, "vocoder_state")
        unknown = sorted(set(voc) - set(VOCODER_STATE_KEYS))
        if unknown or "type" not in voc or "state_dict" not in voc:
            raise InputError(
                f"vocoder_state: expected keys {list(VOCODER_STATE_KEYS)} ('type' and 'state_dict' required); "
                f"got {sorted(voc)}",
                code="invalid-input",
            )
        if not isinstance(voc["type"], str) or not voc["type"]:
            raise InputError(f"vocoder_state.type: expected a non-empty str, got {voc['type']!r}", code="invalid-input")
        vsd, _ = _state_dict_of(voc["state_dict"], "vocoder_state.state_dict")
        manifest["vocoder"] = {
            "type": voc["type"],
            "config": _as_dict(voc.get("config") or {}, "vocoder_state.config"),
            "training_metadata": _as_dict(voc.get("training_metadata") or {}, "vocoder_state.training_metadata"),
        }
        members[zc.VOCODER_NAME] = vsd
    to_plain(manifest, "$")  # refuse unstorable values before any file is created

    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    library = ModelLibrary(models_dir)
    library.check_id_free(metadata.model_id)  # fail before writing; checked again under the lock
    stem = _sanitize_filename(metadata.name)
    fd, tmp = tempfile.mkstemp(dir=models_dir, prefix=f".{stem}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a published model is an ordinary readable file
        with os.fdopen(fd, "wb", buffering=0) as f:
            size = write_archive(f, manifest, members, progress=progress)
            os.fsync(f.fileno())
        final = _publish(tmp, models_dir, stem)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(models_dir)
    # The manifest was round-tripped through the reader before writing, so the entry comes from it
    # directly; the index is written once, under the lock, after re-checking the id.
    entry = entry_from_manifest(manifest, final.name, size)
    try:
        library.add_new_entry(entry)
    except LibraryError:
        os.unlink(final)
        raise
    return final


# --- public API -------------------------------------------------------------------------


def save_model(
    model: Any,
    spectrogram_config: Any,
    training_config: Any,
    metadata: ModelMetadata,
    models_dir: str | os.PathLike[str],
    analysis: Any = None,
    vocoder_state: Mapping[str, Any] | None = None,
    *,
    progress: Progress | None = None,
) -> Path:
    """Save a trained model as a ``.distillgan`` file in ``models_dir`` and index it.

    Parameters:
        model: an ``nn.Module`` (its ``state_dict()`` is stored and its
            ``latent_dim`` attribute recorded when present) or a mapping of
            names to tensors.
        spectrogram_config, training_config: dicts or dataclass instances of
            plain values (None, bool, int, finite float, str, lists, dicts).
        metadata: ``ModelMetadata``; ``model_id`` and ``save_date`` are filled
            in when empty, ``has_analysis``/``n_active_components`` from the
            analysis (the object is updated in place, as in the seed app).
        models_dir: the folder; created if missing.
        analysis: the latent analysis: a dict (or dataclass, or object with
            ``to_dict()``) whose numpy arrays and tensors are stored as tensors.
        vocoder_state: ``{"type", "state_dict", "config", "training_metadata"}``
            for a bundled HiFi-GAN vocoder; None stores no vocoder.
        progress: called as ``progress(bytes_written, bytes_total)`` while
            tensor data is written (possibly from a worker thread).

    Returns the path of the new file, named after ``metadata.name`` (with
    ``_1``, ``_2``… when taken). Raises :class:`~distillgan.InputError` for
    values that cannot be stored, before anything is written.
    """
    state_dict, latent_dim = _state_dict_of(model, "model")
    return _save(state_dict, latent_dim, spectrogram_config, training_config, metadata, models_dir, analysis, vocoder_state, progress)


def load_model(
    model_path: str | os.PathLike[str],
    device: Any = "cpu",
    *,
    model_builder: Callable[[LoadedModel], Any] | None = None,
    verify: bool = False,
) -> LoadedModel:
    """Load a ``.distillgan`` file: tensors, configs, analysis, metadata and vocoder.

    Nothing is unpickled. On the CPU, tensors are copy-on-write views of the
    mapped file (modifying them never changes the file); on another device
    they are copied there. ``model_builder(loaded)`` may build the module:
    its ``load_state_dict`` is then called strictly and the module is moved
    to ``device`` and put in eval mode. ``verify=True`` also checks the
    CRC-32 of the tensor data (``verify()`` does that for a whole file).

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
        manifest = archive.manifest
        model_tensors = archive.tensors(zc.MODEL_NAME)
        vocoder_tensors = archive.tensors(zc.VOCODER_NAME) if zc.VOCODER_NAME in archive.tables else None
    finally:
        archive.close()  # the mapping lives on inside the tensors that view it

    moved: dict[int, Any] = {}

    def to_device(t: Any) -> Any:
        if torch_device.type == "cpu":
            return t
        if id(t) not in moved:  # aliases stay aliases
            moved[id(t)] = t.to(torch_device)
        return moved[id(t)]

    analysis_tensors = {k: v for k, v in model_tensors.items() if k.startswith(ANALYSIS_PREFIX)}
    state_dict = {k: to_device(v) for k, v in model_tensors.items() if not k.startswith(ANALYSIS_PREFIX)}
    analysis = None
    if manifest["analysis"] is not None:
        analysis = _restore_analysis(manifest["analysis"], {k: to_device(v) for k, v in analysis_tensors.items()})
    vocoder_state = None
    if vocoder_tensors is not None:
        voc = manifest["vocoder"]
        vocoder_state = {
            "type": voc["type"],
            "state_dict": {k: to_device(v) for k, v in vocoder_tensors.items()},
            "config": voc["config"],
            "training_metadata": voc["training_metadata"],
        }
    loaded = LoadedModel(
        state_dict=state_dict,
        metadata=ModelMetadata(**manifest["metadata"]),
        spectrogram_config=manifest["spectrogram_config"],
        training_config=manifest["training_config"],
        latent_dim=manifest["latent_dim"],
        analysis=analysis,
        device=torch_device,
        vocoder_state=vocoder_state,
    )
    if model_builder is not None:
        module = model_builder(loaded)
        try:
            module.load_state_dict(state_dict)
        except RuntimeError as e:  # torch reports missing/unexpected keys and shape mismatches so
            raise InputError(f"the stored weights do not fit the module model_builder built: {e}", code="invalid-input") from e
        loaded.model = module.to(torch_device).eval()
    return loaded


def delete_model(model_id: str, models_dir: str | os.PathLike[str]) -> bool:
    """Delete a model's ``.distillgan`` file and its index entry; False if the id is unknown.

    The entry goes first, then the file, both under the folder's lock, so the
    index never lists a missing file. If the file cannot be removed (on
    Windows, while it is loaded), the entry is restored and
    :class:`~distillgan.LibraryError` is raised.
    """
    library = ModelLibrary(models_dir)
    with library.locked():
        entry = library.get(model_id)
        if entry is None:
            return False
        library.remove(model_id)
        try:
            os.unlink(Path(models_dir) / entry.file_path)
        except FileNotFoundError:
            pass
        except OSError as e:
            library.add_entry(entry)
            raise LibraryError(f"cannot delete {entry.file_path!r}: {e.strerror} (is it loaded?)", code="file-in-use") from e
    fsync_dir(Path(models_dir))
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
        progress,
    )

