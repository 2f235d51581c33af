"""distillgan: audio generative models stored without pickle.

A ``.distillgan`` file is a strict zip of ``manifest.msgpack``,
``model.safetensors`` and, when bundled, ``vocoder.safetensors``
(``spec/FORMAT.md``). Importing this package does not import torch;
``inspect`` and ``verify`` never need it.
"""

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
    TensorError,
    VersionError,
)
from .files import SafeOpen, TensorSlice, load_file, safe_open, save_file
from .manifest import MODEL_FORMAT_MARKER, SAVED_MODEL_VERSION, ModelMetadata
from .persistence import LoadedModel, delete_model, load_model, save_model, save_model_from_checkpoint, update_vocoder

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
    "update_vocoder",
    "verify",
    "write_archive",
]
