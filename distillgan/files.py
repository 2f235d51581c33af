"""The file-level API, with the names safetensors users know: ``save_file``, ``load_file``, ``safe_open``.

One ``.distillgan`` file at a path of your choosing, no model folder and no index (the folder API
the app calls, ``save_model``/``load_model``, adds those). ``save_file`` writes exactly what it
is given — the same inputs give the same bytes —, atomically: a temporary file beside the target,
fsynced, then published under the target's name without ever leaving a half-written file there.
``safe_open`` opens a file (or an fsspec URL) lazily: tensors are read one at a time, as views of
the mapping or, for a URL, by one range request each.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .archive import Archive, Progress, open_archive, plan_archive, write_archive
from .content import ModelContent
from .errors import InputError, os_errors
from .fsio import fsync_dir
from .persistence import check_device, load_model
from .publish import place_file, unlink_quietly
from .source import is_url
from .tensors import TensorInfo, array_from, tensor_from
from .values import Ref, json_view


def _local_path(path: str | os.PathLike[str], what: str) -> Path:
    text = os.fspath(path)
    if is_url(text):
        raise InputError(f"{what} {text!r} is a URL; files are written to local paths only", code="invalid-input")
    return Path(os.path.expanduser(text))


def save_file(
    tensors_or_module: Any,
    path: str | os.PathLike[str],
    *,
    config: Any = None,
    metadata: Any = None,
    spectrogram_config: Any = None,
    analysis: Any = None,
    vocoder_state: Any = None,
    extra: Any = None,
    latent_dim: int | None = None,
    user_metadata: Any = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write one ``.distillgan`` file at ``path``.

    ``tensors_or_module`` is a state dict (or any value tree holding tensors) or an
    ``nn.Module`` (its ``state_dict()``; ``latent_dim`` from its attribute unless given).
    ``config`` is stored as the training config, ``metadata`` (a ``ModelMetadata``, dataclass
    or mapping) as given, except that an empty ``model_id`` becomes a fresh one (a UUID4), so
    that two files saved this way are two models in a models folder; ``save_date`` stays empty
    unless you set it. Set ``model_id`` yourself and the same inputs give the same bytes.
    ``user_metadata`` is a free-form map of str to str, kept apart from ``ModelMetadata``'s fields
    (safetensors' ``__metadata__``: it is stored there, FORMAT.md §5.2). Everything else as in
    ``save_model`` (FORMAT.md §4.4).
    An existing file is replaced only with ``overwrite=True``; the write is atomic either way.
    Returns the path.
    """
    target = _local_path(path, "path")
    if target.is_dir():
        raise InputError(f"{str(target)!r} is a folder; give save_file a file path (save_model takes a folder)", code="invalid-input")
    if target.exists() and not overwrite:
        raise InputError(f"{str(target)!r} exists; pass overwrite=True to replace it", code="file-exists")
    content = ModelContent.of_model(
        tensors_or_module,
        "tensors_or_module",
        latent_dim=latent_dim,
        metadata=metadata if metadata is not None else {},
        spectrogram_config=spectrogram_config if spectrogram_config is not None else {},
        training_config=config if config is not None else {},
        analysis=analysis,
        vocoder_state=vocoder_state,
        extra=extra,
        training_config_name="config",
        user_metadata=user_metadata,
    )
    if not content.metadata["model_id"]:  # a fresh id: two files saved here are two models wherever they end up
        import uuid

        content.metadata["model_id"] = str(uuid.uuid4())
    # refuses unstorable values before any file is created
    plan = plan_archive(content.manifest(), user_metadata=content.user_metadata)
    with os_errors("write a model file", target):
        return _publish_file(plan, target, overwrite, progress)


def convert_to_file(
    path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    name: str | None = None,
    metadata: Any = None,
    key: str | None = None,
    strip_prefix: str | None = None,
    overwrite: bool = False,
    progress: Any = None,
) -> Path:
    """Convert a checkpoint or model file (see :func:`~distillgan.read_checkpoint`) into one ``.distillgan`` file at ``out_path``.

    No models folder and no index (that is :func:`~distillgan.convert_checkpoint`): the file is written as
    :func:`save_file` writes it (atomically; ``overwrite`` to replace an existing
    one). The metadata comes from the file when it has some, then ``metadata``'s non-default
    fields and ``name`` (default: the file's stem). Returns ``out_path``.
    """
    from .convert import merged_metadata, read_checkpoint

    src = Path(os.path.expanduser(os.fspath(path)))
    ck = read_checkpoint(src, key=key, strip_prefix=strip_prefix)
    meta = merged_metadata(src, ck, metadata, name)
    meta.setdefault("has_analysis", ck.analysis is not None)
    return save_file(ck.state_dict, out_path, config=ck.training_config, metadata=meta, spectrogram_config=ck.spectrogram_config,
                     analysis=ck.analysis, vocoder_state=ck.vocoder_state, extra=ck.extra, latent_dim=ck.latent_dim,
                     overwrite=overwrite, progress=progress)


def _publish_file(plan: Any, target: Path, overwrite: bool, progress: Progress | None) -> Path:
    import tempfile

    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    # not a model folder's temporary file (no folder lock, no .distillgan-tmp name): mkstemp's O_EXCL and
    # O_NOFOLLOW, a hidden name, removed unless published
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o644)  # mkstemp makes 0600; a model file is an ordinary readable file
        with os.fdopen(fd, "wb", buffering=0) as f:
            write_archive(f, plan, progress=progress)
            os.fsync(f.fileno())
        place_file(tmp, target, overwrite=overwrite,
                   exists=lambda: InputError(f"{str(target)!r} exists; pass overwrite=True to replace it", code="file-exists"))
    finally:
        unlink_quietly(tmp)
    fsync_dir(folder)
    return target


def load_file(
    path: Any, device: Any = "cpu", *, copy: bool | None = None, framework: str = "pt",
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The state dict of a ``.distillgan`` file, like ``safetensors.torch.load_file``.

    ``path`` is a path, an fsspec URL, the file's bytes (``bytes``, ``bytearray``,
    ``memoryview``) or a binary file object (read to its end). Tensors are views of the mapped
    file with ``copy=False``, own their memory with ``copy=True``; the default ``None`` copies on
    Windows (where a mapped file cannot be deleted or replaced) and maps elsewhere. On a non-CPU
    ``device`` each is copied there once.
    ``framework="np"`` (or ``"numpy"``) gives numpy arrays, as ``safetensors.numpy.load_file``
    does, without importing torch (a BF16 or F8 tensor, which numpy has no dtype for, is
    ``invalid-input``). For everything else the file holds use ``load_model`` or ``safe_open``.
    ``storage_options`` go to the remote reader of a URL (``{"headers": {...}}`` for http(s); FORMAT.md §12.2).
    """
    if _framework(framework) == "np":
        with safe_open(path, framework, device, storage_options=storage_options) as f:
            own = os.name == "nt" if copy is None else copy
            return {name: (f.get_tensor(name).copy() if own else f.get_tensor(name)) for name in f}
    return load_model(path, device, copy=copy, storage_options=storage_options).state_dict


def _framework(framework: str) -> str:
    if framework in ("pt", "torch"):
        return "pt"
    if framework in ("np", "numpy"):
        return "np"
    raise InputError(f"framework {framework!r}: expected 'pt' (torch tensors) or 'np' (numpy arrays)", code="invalid-input")


class SafeOpen:
    """A ``.distillgan`` file opened lazily (see :func:`safe_open`); close it, or use it as a context manager."""

    def __init__(self, path: Any, device: Any = "cpu", framework: str = "pt",
                 storage_options: Mapping[str, Any] | None = None) -> None:
        self._numpy = _framework(framework) == "np"
        if self._numpy and not (type(device) is str and device == "cpu"):
            raise InputError(f"framework='np' gives numpy arrays, which live on the CPU; device must be 'cpu', not {device!r}",
                             code="invalid-input")
        # an unusable device is an error now, naming device="cpu", not at get_tensor; the default
        # needs no check, so keys(), metadata() and the manifest never import torch
        self._device: Any = "cpu" if device == "cpu" and type(device) is str else check_device(device)
        self._archive: Archive = open_archive(path, storage_options=storage_options)
        state = self._archive.decoded.values["state_dict"]
        self._refs: dict[str, Ref] = {k: v for k, v in state.items() if type(k) is str and type(v) is Ref} if type(state) is dict else {}

    # -- what safetensors' safe_open offers --

    def keys(self) -> list[str]:
        """The state dict's keys that hold tensors, in the file's order."""
        return list(self._refs)

    def metadata(self) -> dict[str, Any]:
        """The model's metadata (``ModelMetadata``'s fields) in the JSON form of FORMAT.md §4.6."""
        return json_view(self._archive.manifest["metadata"])

    def user_metadata(self) -> dict[str, str]:
        """The free-form str -> str metadata given as ``user_metadata`` when saving (safetensors' ``__metadata__``)."""
        return self._archive.user_metadata

    def get_tensor(self, name: str) -> Any:
        """One tensor of the state dict, read now (a view of the mapping; one range request for a URL)."""
        t = self._read(*self._info(name))
        return t if self._on_cpu() else t.to(self._device)

    def get_slice(self, name: str) -> TensorSlice:
        """A handle that reads only what you index: ``f.get_slice("w")[:, :8]``."""
        return TensorSlice(self, *self._info(name))

    # -- beyond safetensors --

    @property
    def manifest(self) -> dict[str, Any]:
        """The whole manifest in the JSON form of FORMAT.md §4.6 (no tensor data read)."""
        return json_view(self._archive.manifest)

    def values(self, *, copy: bool = False) -> dict[str, Any]:
        """Every value slot with its tensors (as ``load_model`` gives them)."""
        return self._archive.values(device=self._device, copy=copy)

    def close(self) -> None:
        self._archive.close()

    def __enter__(self) -> SafeOpen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[str]:
        return iter(self._refs)

    def __repr__(self) -> str:
        return f"<distillgan.SafeOpen {self._archive.path!r}: {len(self._refs)} tensors>"

    # -- internals --

    def _on_cpu(self) -> bool:
        return self._device == "cpu" or bool(self._device.type == "cpu")  # the default string, or a checked torch.device

    def _info(self, name: str) -> tuple[str, TensorInfo]:
        """(member, stored tensor) of a state-dict key: dict lookups only (the archive's index is built once)."""
        ref = self._refs.get(name)
        if ref is None:
            raise InputError(f"the state dict has no tensor {name!r}", code="not-found")
        target = self._archive.manifest["members"][ref.member]["aliases"].get(ref.name, ref.name)
        return ref.member, self._archive._index[ref.member][target]

    def _read(self, member: str, info: TensorInfo) -> Any:
        table = self._archive.tables[member]
        if self._archive.source.mappable:
            self._archive.source.exported = True
            if self._numpy:
                return array_from(self._archive.source.mapping(), info, table.data_start, member)
            checked = self._archive.bools_read(member, info, private=False)
            return tensor_from(self._archive.source.mapping(), info, table.data_start, member, bools_checked=checked)
        data = bytearray(info.nbytes)  # a URL: ranged reads of this tensor's bytes, nothing else
        self._archive.source.read_into(table.data_start + info.begin, memoryview(data))
        return (array_from if self._numpy else tensor_from)(data, info, -info.begin, member)


class TensorSlice:
    """One tensor of a :class:`SafeOpen` file, indexed lazily like safetensors' slices."""

    def __init__(self, owner: SafeOpen, member: str, info: TensorInfo) -> None:
        self._owner = owner
        self._member = member
        self._info = info

    def get_shape(self) -> list[int]:
        return list(self._info.shape)

    def get_dtype(self) -> str:
        return self._info.dtype

    def __getitem__(self, index: Any) -> Any:
        whole = self._owner._read(self._member, self._info)  # a view of the mapping: indexing reads only the pages it touches
        part = whole[index]
        return part if self._owner._on_cpu() else part.to(self._owner._device)


def safe_open(
    path: Any, framework: str = "pt", device: Any = "cpu", *, storage_options: Mapping[str, Any] | None = None
) -> SafeOpen:
    """Open a ``.distillgan`` file lazily: ``keys()``, ``get_tensor``, ``get_slice``, ``metadata()``.

    Like ``safetensors.safe_open``: validates every header now, reads tensor data only when asked.
    ``path`` is a path, an fsspec URL, the file's bytes or a binary file object (read to its end).
    ``framework`` is ``"pt"`` (torch tensors) or ``"np"``/``"numpy"`` (numpy arrays, without
    importing torch). ``device`` is checked now: one this machine lacks is InputError
    ``device-unavailable`` (as for ``load_model``). Use it as a context manager.
    ``storage_options`` go to the remote reader of a URL (``{"headers": {...}}`` for http(s); FORMAT.md §12.2).
    """
    return SafeOpen(path, device, framework, storage_options)
