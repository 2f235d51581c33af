"""The model API the app calls: save, load, delete and convert ``.distillgan`` models.

Storage is the archive of FORMAT.md (zip + msgpack manifest + safetensors),
never a pickle. How a file is built from what the caller has is content.py's; how it is published
in a folder, atomically and durably, publish.py's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import container as zc
from .archive import ArchivePlan, Progress, encode_checked, open_archive, plan_member
from .catalog import ModelLibrary, entry_from_manifest
from .content import ModelContent, as_tree
from .convert import convert_checkpoint
from .crc import crc32
from .errors import InputError, IntegrityError, LibraryError, os_errors
from .fsio import fsync_dir
from .manifest import ModelMetadata
from .modules import load_state_into
from .publish import MAX_STEM_CHARS, publish_over, sanitize_filename, save_content, unlink_quietly, write_temporary
from .source import is_url
from .values import Splitter

__all__ = ["MAX_STEM_CHARS", "LoadedModel", "ModelMetadata", "delete_model", "load_into",
           "load_model", "save_model", "save_model_from_checkpoint", "update_vocoder"]

logger = logging.getLogger("distillgan")


@dataclass
class LoadedModel:
    """Everything a ``.distillgan`` file stores, ready to use.

    Every value comes back as it was saved (FORMAT.md §4.4): the same
    structure, container and key types, tensors and numpy arrays at the same
    places. Tensors are on ``device``; on the CPU they are copy-on-write views
    of the mapped file unless they were copied (``load_model``'s ``copy``). ``model`` is the
    module built by ``load_model``'s ``model_builder``, else None; with ``strict=False``,
    ``missing_keys`` and ``unexpected_keys`` say what did not load into it (torch's lists).
    ``user_metadata`` is the free-form metadata given to ``save_model``/``save_file``.
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
    missing_keys: list[str] = field(default_factory=list)  # what model_builder's module lacked (strict=False), as torch says
    unexpected_keys: list[str] = field(default_factory=list)  # stored weights model_builder's module has no place for
    user_metadata: dict[str, str] = field(default_factory=dict)  # free-form str -> str metadata (FORMAT.md §5.2)

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
    user_metadata: Mapping[str, str] | None = None,
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
        user_metadata: free-form metadata, a map of str to str kept apart from
            ``ModelMetadata``'s fields (safetensors' ``__metadata__`` habit; stored
            there, FORMAT.md §5.2); comes back as ``LoadedModel.user_metadata``.

    Returns the path of the new file, named after ``metadata.name`` (with
    ``_1``, ``_2``… when taken).
    """
    content = ModelContent.of_model(
        model,
        "model",
        latent_dim=latent_dim,
        metadata=metadata,
        spectrogram_config=spectrogram_config,
        training_config=training_config,
        analysis=analysis,
        vocoder_state=vocoder_state,
        extra=extra,
        user_metadata=user_metadata,
    )
    return save_content(content, models_dir, metadata, progress)


def check_device(device: Any) -> Any:
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


def load_model(
    model_path: str | os.PathLike[str],
    device: Any = "cpu",
    *,
    model_builder: Callable[[LoadedModel], Any] | None = None,
    vocoder_builder: Callable[[LoadedModel], Any] | None = None,
    strict: bool = True,
    assign: bool = False,
    verify: bool = False,
    copy: bool | None = None,
    progress: Progress | None = None,
    public_key: Any = None,
    certificate_chain: Any = None,
    storage_options: Mapping[str, Any] | None = None,
) -> LoadedModel:
    """Load a ``.distillgan`` file: tensors, configs, analysis, metadata, vocoder and extra.

    Nothing is unpickled. Every value comes back as it was saved: the same
    structure, container and key types, and tensors, parameters and numpy
    arrays at the same places with the same dtypes and bits; tied tensors
    are one object. On the CPU, tensors are copy-on-write views of the
    mapped file (modifying them never changes the file) with ``copy=False``;
    ``copy=True`` gives tensors that own their memory, so that nothing keeps
    the file mapped. **Windows:** a mapped file stays in use while tensors view
    it — it cannot be deleted or replaced (the app's vocoder training does
    both) — so the default ``copy=None`` means copy on Windows and map
    elsewhere. On another device each tensor is copied there once, from the
    mapping (``copy`` changes nothing there). ``model_path`` may also be the
    file's bytes or a binary file object (:func:`~distillgan.open_archive`).

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

    ``public_key`` (a PEM public key, or a list: any of them) or ``certificate_chain`` (PEM
    certificates you trust) make the load refuse a model without a valid signature from one of
    them in its sidecar ``model_path + ".sig"`` (URLs too): the signature is checked first, then
    the whole file is read once into memory of its own, its SHA-256 compared with the signed one,
    and only those bytes are parsed and handed out as tensors (``copy=True`` semantics; FORMAT.md
    §16.3). Failures are :class:`~distillgan.SignatureError`; needs ``distillgan[signing]``.

    ``storage_options`` go to the remote reader of a URL: ``{"headers": {...}}`` for http(s) (a
    token for a private server; FORMAT.md §12.2), the backend's options for another fsspec scheme.

    Raises :class:`~distillgan.LegacyFormatError` for legacy ``.distill`` and
    pickle files, :class:`~distillgan.VersionError` for newer format
    versions, :class:`~distillgan.InputError` ``device-unavailable`` for a device this machine
    lacks, and other :class:`~distillgan.DistillganError` subclasses for anything invalid.
    """
    torch_device = check_device(device)
    if copy is None:
        copy = os.name == "nt"  # Windows: a mapped file cannot be deleted or replaced while tensors view it
    if public_key is not None or certificate_chain is not None:
        from .signing import read_verified

        snapshot, signed = read_verified(model_path, public_key=public_key, certificate_chain=certificate_chain,
                                         storage_options=storage_options)
        logger.info("signature of %s is valid: %s (%s)", os.fspath(model_path), signed.signer, signed.signature)
        archive = open_archive(model_path, source=snapshot)
        copy = False  # the tensors view the checked bytes, which are memory of their own already
    else:
        archive = open_archive(model_path, storage_options=storage_options)
    try:
        raw = archive.manifest
        user_metadata = archive.user_metadata
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
        user_metadata=user_metadata,
    )
    if model_builder is not None:
        loaded.model, result = load_state_into(
            model_builder(loaded), loaded.state_dict, strict=strict, assign=assign, device=torch_device, what="model_builder"
        )
        loaded.missing_keys, loaded.unexpected_keys = list(result.missing_keys), list(result.unexpected_keys)
    if vocoder_builder is not None:
        voc = loaded.vocoder_state
        key = next((k for k in ("generator_state_dict", "state_dict") if isinstance(voc, dict) and isinstance(voc.get(k), dict)), None)
        if key is None or voc is None:
            raise InputError("vocoder_builder given, but the file bundles no vocoder weights (generator_state_dict or state_dict)",
                             code="invalid-input")
        loaded.vocoder, _result = load_state_into(
            vocoder_builder(loaded), voc[key], strict=strict, assign=assign, device=torch_device, what="vocoder_builder"
        )
    logger.info("loaded %r (%s) from %s onto %s", loaded.metadata.name, loaded.metadata.model_id, archive.path, torch_device)
    return loaded


def load_into(module: Any, path: Any, *, strict: bool = True, assign: bool = False, device: Any = None, copy: bool | None = None,
              vocoder: bool = False) -> Any:
    """Load a ``.distillgan`` file's weights into ``module``, as ``safetensors.torch.load_model(module, path)`` does.

    ``path`` is anything :func:`~distillgan.load_model` takes. The state dict (with ``vocoder``, the
    bundled vocoder's ``generator_state_dict`` or ``state_dict``) is loaded with
    ``module.load_state_dict(strict=strict, assign=assign)``; tied weights stay tied. ``device``
    defaults to the device of the module's first parameter (the CPU for a module on the meta
    device, which needs ``assign=True``). The module is left in eval mode. Returns torch's
    ``(missing_keys, unexpected_keys)`` named tuple: what did not load (both empty with
    ``strict=True``, where a mismatch is InputError ``invalid-input``).
    """
    if device is None:
        first = next(iter(module.parameters()), None) if hasattr(module, "parameters") else None
        device = "cpu" if first is None or first.is_meta else first.device
    loaded = load_model(path, device, copy=copy)
    if vocoder:
        voc = loaded.vocoder_state if isinstance(loaded.vocoder_state, dict) else {}
        key = next((k for k in ("generator_state_dict", "state_dict") if isinstance(voc.get(k), dict)), None)
        if key is None:
            shown = os.fspath(path) if isinstance(path, (str, os.PathLike)) else type(path).__name__
            raise InputError(f"{shown!r} bundles no vocoder weights (generator_state_dict or state_dict)", code="invalid-input")
        state = voc[key]
    else:
        state = loaded.state_dict
    _module, result = load_state_into(module, state, strict=strict, assign=assign, device=loaded.device, what="load_into")
    return result


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
    ``file-in-use``. A signature ``FILE.sig`` is for the old bytes: it is moved
    to ``FILE.sig.stale`` and a warning logged (sign the file again).
    """
    with os_errors("replace the vocoder of a model", model_path):
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
            raw["vocoder_state"] = splitter.encode(as_tree(vocoder_state, "vocoder_state", allow_none=True), ("vocoder_state",), zc.VOCODER_NAME)
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
            tmp, size = write_temporary(plan, path.parent, sanitize_filename(raw["metadata"]["name"]), progress)
        finally:
            archive.close()
        try:
            publish_over(library, tmp, path, entry_from_manifest(plan.raw, path.name, size))
        except BaseException:
            unlink_quietly(tmp)  # nothing if it was published
            raise
    return path


def sign(
    path: str | os.PathLike[str],
    *,
    private_key: str | os.PathLike[str],
    signature: str | os.PathLike[str] | None = None,
    password: str | bytes | None = None,
    signing_certificate: str | os.PathLike[str] | None = None,
    certificate_chain: Any = None,
) -> str:
    """Sign a local ``.distillgan`` file with OpenSSF model signing; write its sidecar and return the sidecar's path.

    The sidecar is ``FILE.sig`` unless ``signature`` names another (FORMAT.md §16.1). The file is
    first opened as an archive (every layer but tensor data), so nothing distillgan would refuse to
    read gets signed. ``private_key`` is a PEM ECDSA key (``password`` if it is encrypted); with
    ``signing_certificate`` and ``certificate_chain`` the bundle carries certificates instead of
    naming the key. Needs ``distillgan[signing]``; failures are
    :class:`~distillgan.SignatureError` or other :class:`~distillgan.DistillganError` subclasses.
    """
    from . import signing

    def structure(p: str) -> None:
        open_archive(p).close()

    return signing.sign(path, private_key=private_key, signature=signature, password=password,
                        signing_certificate=signing_certificate, certificate_chain=certificate_chain, check=structure)


def delete_model(model_id: str, models_dir: str | os.PathLike[str]) -> bool:
    """Delete a model's ``.distillgan`` file, its signatures (``FILE.sig``, ``FILE.sig.stale``) and its index entry; False if the id is unknown.

    The index is only a hint: the file is deleted only if its own manifest holds ``model_id``
    (:class:`~distillgan.LibraryError` ``index-mismatch`` otherwise, and nothing is deleted).
    The entry goes first, then the file, both under the folder's lock, so the index never
    lists a missing file. If the file cannot be removed (on Windows, while it is loaded), the
    entry is restored and :class:`~distillgan.LibraryError` ``file-in-use`` is raised. A
    folder that does not exist holds no model: False, and nothing is created.
    """
    with os_errors("delete a model", models_dir):
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
        from .signing import SIGNATURE_SUFFIX, STALE_SUFFIX

        for suffix in (SIGNATURE_SUFFIX, STALE_SUFFIX):  # its signatures go with it (FORMAT.md §16.1)
            sig = os.fspath(library.models_dir / entry.file_path) + suffix
            try:
                unlink_quietly(sig)
            except OSError as e:  # the model is gone already; a sidecar that cannot go is reported, not fatal
                logger.warning("cannot remove the signature %s of the deleted model: %s", sig, e)
    fsync_dir(library.models_dir)
    return True


def save_model_from_checkpoint(
    checkpoint_path: str | os.PathLike[str],
    metadata: Any,
    models_dir: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    keep_training_state: bool = False,
) -> Path:
    """Convert a training checkpoint (or any file :func:`~distillgan.read_checkpoint` knows) into a model.

    The checkpoint is read without running anything in it (never ``torch.load``): weights,
    configs, analysis and ``latent_dim`` go to their places, the epoch and losses (inf and NaN
    kept) also into the metadata, and every other key into ``extra`` — except what only resuming
    training needs, the optimizer and scheduler states and the metrics history, which are left
    out, as the app's own model files leave them out; ``keep_training_state=True`` keeps them in
    ``extra`` (``distillgan convert`` keeps everything). ``metadata``'s non-default fields win over the
    file's; the object is filled in place (``model_id``, ``save_date``, ``training_epochs``,
    losses), as the app's own function does.
    """
    return convert_checkpoint(checkpoint_path, models_dir, metadata=metadata, progress=progress,
                              keep_training_state=keep_training_state)
