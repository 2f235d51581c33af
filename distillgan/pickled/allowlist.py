"""The allowlist: the exact ``(module, name)`` pairs a pickle may name, and what each resolves to.

This table is the security boundary of the restricted reader. A global that is not a key here
becomes an inert stand-in class (:class:`~.records.PickledObject`) that records what the pickle
does with it; no module is imported and nothing named by the file is looked up. Every value
below is a constructor of :mod:`.constructors` (which vets its arguments), a storage-type marker
or a torch dtype.
"""

from __future__ import annotations

from typing import Any

import torch

from . import constructors as c
from .common import BUILTIN_MODULES, show, unreadable, unsafe
from .records import DTYPE_NAMES, LEGACY_STORAGES, StorageType
from .session import Session


def build_allowlist() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): c.OrderedDictNew,
        ("collections", "defaultdict"): c.DefaultDictNew,
        ("_codecs", "encode"): c.CodecsEncode,
        ("copyreg", "_reconstructor"): c.Reconstructor,
        ("copy_reg", "_reconstructor"): c.Reconstructor,
        ("torch", "Size"): c.SizeNew,
        ("torch", "device"): c.DeviceNew,
        ("torch", "Tensor"): c.TensorType,
        ("torch._tensor", "Tensor"): c.TensorType,
        ("torch.nn.parameter", "Parameter"): c.ParameterNew,
        ("torch._utils", "_rebuild_tensor"): c.RebuildTensor,
        ("torch._utils", "_rebuild_tensor_v2"): c.RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor_v3"): c.RebuildTensorV3,
        ("torch._utils", "_rebuild_parameter"): c.RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state"): c.RebuildParameterWithState,
        ("torch._tensor", "_rebuild_from_type_v2"): c.RebuildFromTypeV2,
        ("torch._tensor", "_rebuild_from_type"): c.RebuildFromType,
        ("torch.storage", "_load_from_bytes"): c.LoadFromBytes,
        ("distillgan.pickled", "dict"): c.DictNew,  # the VM's rewrites of EMPTY_DICT/DICT, EMPTY_SET, FROZENSET
        ("distillgan.pickled", "set"): c.OpSetNew,
        ("distillgan.pickled", "frozenset"): c.OpFrozensetNew,
        ("torch.storage", "UntypedStorage"): StorageType("UntypedStorage", torch.uint8, True),
        ("torch", "UntypedStorage"): StorageType("UntypedStorage", torch.uint8, True),
    }
    for module in BUILTIN_MODULES:
        table[(module, "set")] = c.SetNew
        table[(module, "frozenset")] = c.FrozensetNew
        table[(module, "complex")] = c.ComplexNew
        table[(module, "bytearray")] = c.BytearrayNew
        table[(module, "bytes")] = c.BytesNew
        table[(module, "getattr")] = c.GetattrNew  # protocols 0-3 name a nested class Outer.Inner as getattr(Outer, "Inner")
    for name, dtype in LEGACY_STORAGES.items():
        marker = StorageType(name, dtype, False)
        table[("torch", name)] = marker
        table[("torch.cuda", name)] = marker  # torch < 0.4 named the CUDA classes
    for dtype, name in DTYPE_NAMES.items():
        table[("torch", name)] = dtype  # torch.dtype.__reduce__ returns the attribute name
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x, numpy 2.x
        table[(module, "_reconstruct")] = c.NpReconstruct
        table[(module, "scalar")] = c.NpScalarNew
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        table[(module, "_frombuffer")] = c.NpFromBuffer
    table[("numpy", "ndarray")] = c.NdArrayType
    table[("numpy", "dtype")] = c.NpDTypeNew
    for module in ("pathlib", "pathlib._local"):  # Python 3.13 moved the classes to pathlib._local
        for name in ("PosixPath", "PurePosixPath"):
            table[(module, name)] = c.PosixPathNew
        for name in ("WindowsPath", "PureWindowsPath"):
            table[(module, name)] = c.WindowsPathNew
    return table


ALLOWLIST = build_allowlist()
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(ALLOWLIST)
"""The exact ``(module, name)`` pairs that resolve to something other than an inert stand-in."""

# torch names of tensor kinds the value tree cannot hold: refused by name rather than recorded
UNSUPPORTED = {
    (module, name): "quantized tensors"
    for module in ("torch", "torch.cuda")
    for name in ("QInt8Storage", "QUInt8Storage", "QInt32Storage", "QUInt4x2Storage", "QUInt2x4Storage")
}
UNSUPPORTED |= {
    ("torch._utils", name): what
    for name, what in {
        "_rebuild_qtensor": "quantized tensors",
        "_rebuild_sparse_tensor": "sparse tensors",
        "_rebuild_sparse_csr_tensor": "sparse tensors",
        "_rebuild_nested_tensor": "nested tensors",
        "_rebuild_meta_tensor_no_storage": "meta tensors (no data)",
        "_rebuild_wrapper_subclass": "tensor wrapper subclasses (DTensor, fake tensors)",
        "_rebuild_device_tensor_from_numpy": "device tensors",
        "_rebuild_device_tensor_from_cpu_tensor": "device tensors",
        "_rebuild_xla_tensor": "XLA tensors",
        "_rebuild_mps_tensor": "MPS tensors",
    }.items()
}


def resolve_global(session: Session, module: Any, name: Any) -> Any:
    """find_class: the allowlist by exact pair, a refusal for unsupported torch kinds, else a stand-in class."""
    if type(module) is not str or type(name) is not str:
        raise unsafe(f"global {show(module)}.{show(name)}: module and name must be str")
    key = (module, name)
    found = ALLOWLIST.get(key)
    if found is not None:
        return found
    if key in UNSUPPORTED:
        raise unreadable(f"the file holds {UNSUPPORTED[key]} ({module}.{name}), which are not converted")
    return session.stand_in_class(module, name)
