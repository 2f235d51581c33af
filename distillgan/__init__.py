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

# The public API, each name listed once: the module that defines it -> its names, imported on first
# use (PEP 562). __all__ and __getattr__ derive from this table; the imports below repeat it for type
# checkers only, and tests/test_api.py checks that the two agree.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "archive": ("Archive", "file_sha256", "inspect", "open_archive", "verify", "write_archive"),
    "catalog": ("MODEL_FILE_EXTENSION", "ModelEntry", "ModelLibrary", "RepairReport", "VocoderInfo"),
    "convert": ("Checkpoint", "FolderConversion", "convert_checkpoint", "convert_folder", "export_safetensors", "read_checkpoint"),
    "errors": (
        "AccessDeniedError",
        "ContainerError",
        "DistillganError",
        "FileAccessError",
        "InputError",
        "IntegrityError",
        "IsAFolderError",
        "LegacyFormatError",
        "LibraryError",
        "ManifestError",
        "NotFoundError",
        "SignatureError",
        "TensorError",
        "VersionError",
    ),
    "files": ("SafeOpen", "TensorSlice", "convert_to_file", "load_file", "safe_open", "save_file"),
    "manifest": ("MODEL_FORMAT_MARKER", "SAVED_MODEL_VERSION", "ModelMetadata"),
    "persistence": (
        "LoadedModel", "delete_model", "load_into", "load_model", "save_model", "save_model_from_checkpoint", "sign", "update_vocoder",
    ),
    "publish": ("sanitize_filename",),
}

if _TYPE_CHECKING:  # `X as X`: an explicit re-export, for type checkers and IDEs; at run time __getattr__ loads them
    from .archive import Archive as Archive
    from .archive import file_sha256 as file_sha256
    from .archive import inspect as inspect
    from .archive import open_archive as open_archive
    from .archive import verify as verify
    from .archive import write_archive as write_archive
    from .catalog import MODEL_FILE_EXTENSION as MODEL_FILE_EXTENSION
    from .catalog import ModelEntry as ModelEntry
    from .catalog import ModelLibrary as ModelLibrary
    from .catalog import RepairReport as RepairReport
    from .catalog import VocoderInfo as VocoderInfo
    from .convert import Checkpoint as Checkpoint
    from .convert import FolderConversion as FolderConversion
    from .convert import convert_folder as convert_folder
    from .convert import convert_checkpoint as convert_checkpoint
    from .convert import export_safetensors as export_safetensors
    from .convert import read_checkpoint as read_checkpoint
    from .errors import AccessDeniedError as AccessDeniedError
    from .errors import ContainerError as ContainerError
    from .errors import DistillganError as DistillganError
    from .errors import FileAccessError as FileAccessError
    from .errors import InputError as InputError
    from .errors import IntegrityError as IntegrityError
    from .errors import IsAFolderError as IsAFolderError
    from .errors import LegacyFormatError as LegacyFormatError
    from .errors import LibraryError as LibraryError
    from .errors import ManifestError as ManifestError
    from .errors import NotFoundError as NotFoundError
    from .errors import SignatureError as SignatureError
    from .errors import TensorError as TensorError
    from .errors import VersionError as VersionError
    from .files import SafeOpen as SafeOpen
    from .files import TensorSlice as TensorSlice
    from .files import convert_to_file as convert_to_file
    from .files import load_file as load_file
    from .files import safe_open as safe_open
    from .files import save_file as save_file
    from .manifest import MODEL_FORMAT_MARKER as MODEL_FORMAT_MARKER
    from .manifest import SAVED_MODEL_VERSION as SAVED_MODEL_VERSION
    from .manifest import ModelMetadata as ModelMetadata
    from .persistence import LoadedModel as LoadedModel
    from .persistence import delete_model as delete_model
    from .persistence import load_into as load_into
    from .persistence import load_model as load_model
    from .persistence import save_model as save_model
    from .persistence import save_model_from_checkpoint as save_model_from_checkpoint
    from .persistence import sign as sign
    from .persistence import update_vocoder as update_vocoder
    from .publish import sanitize_filename as sanitize_filename

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__version__ = "0.1.0"


def _isort_key(name: str) -> tuple[int, str]:
    """ruff RUF022's order: SCREAMING_SNAKE_CASE, then CamelCase, then the rest."""
    return (0 if len(name) > 1 and name.isupper() else 1 if name[0].isupper() else 2), name


__all__ = ["__version__"]
__all__ += list(_MODULE_OF)
__all__.sort(key=_isort_key)


def __getattr__(name: str) -> _Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'distillgan' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once loaded, an ordinary module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
