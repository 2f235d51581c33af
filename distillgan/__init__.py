"""distillgan: audio generative models stored without pickle.

A ``.distillgan`` file is a strict zip of ``manifest.msgpack``,
``model.safetensors`` and, when bundled, ``vocoder.safetensors``
(``spec/FORMAT.md``). Importing this package does not import torch;
``inspect`` and ``verify`` never need it. Names are imported from their
modules on first use, so ``import distillgan`` and the command line start
fast and load only what a command needs.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily (see __getattr__)
    from .archive import Archive, file_sha256, inspect, open_archive, verify, write_archive
    from .catalog import MODEL_FILE_EXTENSION, ModelEntry, ModelLibrary, RepairReport, VocoderInfo
    from .convert import Checkpoint, convert_checkpoint, export_safetensors, read_checkpoint
    from .errors import (
        ContainerError,
        DistillganError,
        FileAccessError,
        InputError,
        IntegrityError,
        LegacyFormatError,
        LibraryError,
        ManifestError,
        SignatureError,
        TensorError,
        VersionError,
    )
    from .files import SafeOpen, TensorSlice, load_file, safe_open, save_file
    from .manifest import MODEL_FORMAT_MARKER, SAVED_MODEL_VERSION, ModelMetadata
    from .persistence import LoadedModel, delete_model, load_model, save_model, save_model_from_checkpoint, sign, update_vocoder

_EXPORTS = {  # public name -> the module that defines it, imported on first use (PEP 562)
    "Archive": "archive",
    "Checkpoint": "convert",
    "ContainerError": "errors",
    "DistillganError": "errors",
    "FileAccessError": "errors",
    "InputError": "errors",
    "IntegrityError": "errors",
    "LegacyFormatError": "errors",
    "LibraryError": "errors",
    "LoadedModel": "persistence",
    "MODEL_FILE_EXTENSION": "catalog",
    "MODEL_FORMAT_MARKER": "manifest",
    "ManifestError": "errors",
    "ModelEntry": "catalog",
    "ModelLibrary": "catalog",
    "ModelMetadata": "manifest",
    "RepairReport": "catalog",
    "SAVED_MODEL_VERSION": "manifest",
    "SafeOpen": "files",
    "SignatureError": "errors",
    "TensorError": "errors",
    "TensorSlice": "files",
    "VersionError": "errors",
    "VocoderInfo": "catalog",
    "convert_checkpoint": "convert",
    "delete_model": "persistence",
    "export_safetensors": "convert",
    "file_sha256": "archive",
    "inspect": "archive",
    "load_file": "files",
    "load_model": "persistence",
    "open_archive": "archive",
    "read_checkpoint": "convert",
    "safe_open": "files",
    "save_file": "files",
    "save_model": "persistence",
    "save_model_from_checkpoint": "persistence",
    "sign": "persistence",
    "update_vocoder": "persistence",
    "verify": "archive",
    "write_archive": "archive",
}

__version__ = "0.1.0"

__all__ = [
    "MODEL_FILE_EXTENSION",
    "MODEL_FORMAT_MARKER",
    "SAVED_MODEL_VERSION",
    "Archive",
    "Checkpoint",
    "ContainerError",
    "DistillganError",
    "FileAccessError",
    "InputError",
    "IntegrityError",
    "LegacyFormatError",
    "LibraryError",
    "LoadedModel",
    "ManifestError",
    "ModelEntry",
    "ModelLibrary",
    "ModelMetadata",
    "RepairReport",
    "SafeOpen",
    "SignatureError",
    "TensorError",
    "TensorSlice",
    "VersionError",
    "VocoderInfo",
    "__version__",
    "convert_checkpoint",
    "delete_model",
    "export_safetensors",
    "file_sha256",
    "inspect",
    "load_file",
    "load_model",
    "open_archive",
    "read_checkpoint",
    "safe_open",
    "save_file",
    "save_model",
    "save_model_from_checkpoint",
    "sign",
    "update_vocoder",
    "verify",
    "write_archive",
]


def __getattr__(name: str) -> _Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'distillgan' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once loaded, an ordinary module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
