"""The allowlisted constructors: each vets its arguments and returns plain data or a record.

Each is a class (so NEWOBJ, REDUCE, INST and OBJ all reach the same ``__new__``), read-only
through :class:`~.records.FrozenType`; ``__new__`` never returns an instance of the class.
Which ``(module, name)`` reaches which constructor is :mod:`.allowlist`'s table.
"""

from __future__ import annotations

from typing import Any

import torch

from .common import BUILTIN_MODULES, INT64_MAX, over_limit, show, unreadable, unsafe
from .containers import DictBuilder, SetBuilder, checked_frozenset, dict_from_pairs
from .records import (
    DTYPE_NAMES,
    FrozenType,
    NdArray,
    NpDType,
    NpScalar,
    ParameterRecord,
    PathRecord,
    PickledObject,
    StorageRecord,
    TensorRecord,
    int_tuple,
    is_frozen_class,
    is_stand_in_class,
    kind_of,
)
from .session import current_session

# --------------------------------------------------------------------------------------------
# The allowlisted constructors. Each is a class (so NEWOBJ, REDUCE, INST and OBJ all reach the
# same __new__), read-only through FrozenType; __new__ vets the arguments and returns plain
# data or a record, never an instance of the class.


class Safe(metaclass=FrozenType):
    __slots__ = ()
    pickle_name = "allowlisted"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise unsafe(f"{cls.pickle_name} is allowlisted as a marker only; the pickle calls it with {show(args)}")


def _expect_args(cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any], lo: int, hi: int) -> None:
    if kwargs or not lo <= len(args) <= hi:
        count = f"{lo}" if lo == hi else f"{lo} to {hi}"
        raise unsafe(f"{cls.pickle_name} takes {count} positional arguments from a pickle; got {show(args)} {show(kwargs)}")


class OrderedDictNew(Safe):
    pickle_name = "collections.OrderedDict"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 0, 1)
        if not args:
            return DictBuilder(ordered=True)
        items = args[0]  # Python 2 pickled OrderedDict as OrderedDict([[k, v], ...])
        if type(items) is not list or any(type(p) not in (list, tuple) or len(p) != 2 for p in items):
            raise unsafe(f"collections.OrderedDict: expected a list of key-value pairs, got {show(items)}")
        return dict_from_pairs(((p[0], p[1]) for p in items), True, cls.pickle_name)


class DefaultDictNew(Safe):
    pickle_name = "collections.defaultdict"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 0, 1)  # the default factory (a global) is not kept: the value is a dict
        return DictBuilder()


class DictNew(Safe):
    """The VM's rewrite of ``EMPTY_DICT`` (no arguments) and ``DICT`` (keys and values, flat)."""

    pickle_name = "distillgan.pickled.dict"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if kwargs or len(args) % 2:
            raise unreadable(f"DICT with an odd number of items {show(args)}")
        return dict_from_pairs(zip(args[::2], args[1::2]), False, "a dict of the pickle")


class SetNew(Safe):
    pickle_name = "builtins.set"
    frozen = False

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 0, 1)
        items = args[0] if args else ()
        if type(items) is SetBuilder:
            items = items.items
        if type(items) not in (list, tuple, set, frozenset):
            raise unsafe(f"{cls.pickle_name}: expected a list of items, got {kind_of(items)}")
        return _make_set(items, cls.frozen, cls.pickle_name)


class FrozensetNew(SetNew):
    pickle_name = "builtins.frozenset"
    frozen = True


class OpSetNew(Safe):
    """The VM's rewrite of ``EMPTY_SET`` (``ADDITEMS`` then calls ``add``)."""

    pickle_name = "distillgan.pickled.set"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 0, 0)
        return SetBuilder()


class OpFrozensetNew(Safe):
    """The VM's rewrite of ``FROZENSET`` (the items, flat)."""

    pickle_name = "distillgan.pickled.frozenset"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise unreadable(f"FROZENSET with keyword arguments {show(kwargs)}")
        return checked_frozenset(args, "a frozenset of the pickle")


def _make_set(items: Any, frozen: bool, where: str) -> Any:
    if frozen:
        return checked_frozenset(items, where)
    out = SetBuilder()
    for item in items:
        out.add(item)
    return out


class GetattrNew(Safe):
    """``getattr(Outer, "Inner")``: how pickle protocols 0-3 name a nested class. Only on a stand-in class."""

    pickle_name = "builtins.getattr"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 2, 2)
        outer, name = args
        ok = type(name) is str and 0 < len(name) <= 256 and all(part.isidentifier() for part in name.split("."))
        if not (is_stand_in_class(outer) and ok):
            raise unsafe(f"builtins.getattr is read only as a nested class's name, getattr(<class>, 'Inner'); got {show(args)}")
        return current_session().stand_in_class(outer.module, f"{outer.qualname}.{name}")


class ComplexNew(Safe):
    pickle_name = "builtins.complex"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 0, 2)
        if any(type(a) not in (int, float) for a in args):
            raise unsafe(f"builtins.complex: expected real and imaginary numbers, got {show(args)}")
        return complex(*args)


class BytearrayNew(Safe):
    pickle_name = "builtins.bytearray"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 0, 2)
        if not args:
            return bytearray()
        if len(args) == 1 and type(args[0]) is bytes:
            current_session().budget.charge_bytes(len(args[0]), cls.pickle_name)  # a copy per call: shared bytes cost each time
            return bytearray(args[0])
        if len(args) == 2 and type(args[0]) is str and args[1] == "latin-1":  # Python 3.0-3.2, protocols 0-2
            current_session().budget.charge_bytes(len(args[0]), cls.pickle_name)
            return bytearray(_latin1(args[0], cls.pickle_name))
        raise unsafe(f"builtins.bytearray: expected bytes (or str and 'latin-1'), got {show(args)}")


class BytesNew(Safe):
    pickle_name = "builtins.bytes"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 0, 0)  # protocols 0-2 write b'' as bytes()
        return b""


def _latin1(text: str, where: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError as e:
        raise unreadable(f"{where}: a string meant to hold bytes has characters beyond U+00FF") from e


class CodecsEncode(Safe):
    pickle_name = "_codecs.encode"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # protocols 0-2 write bytes as _codecs.encode(str, 'latin1'); nothing else is accepted
        if kwargs or len(args) != 2 or type(args[0]) is not str or type(args[1]) is not str or args[1] != "latin1":
            raise unsafe(
                f"_codecs.encode is accepted only as encode(str, 'latin1'); the pickle passes {show(args)} {show(kwargs)}"
            )
        current_session().budget.charge_bytes(len(args[0]), cls.pickle_name)
        return _latin1(args[0], cls.pickle_name)


class PosixPathNew(Safe):
    pickle_name = "pathlib.PurePosixPath"
    windows = False

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 0, 4096)
        if any(type(a) is not str for a in args):
            raise unsafe(f"{cls.pickle_name}: expected path parts as str, got {show(args)}")
        current_session().budget.charge_work(len(args), cls.pickle_name)
        return PathRecord(args, cls.windows)  # a pure path once the file is read: string handling only, no filesystem access


class WindowsPathNew(PosixPathNew):
    pickle_name = "pathlib.PureWindowsPath"
    windows = True


class SizeNew(Safe):
    pickle_name = "torch.Size"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 1, 1)
        return torch.Size(int_tuple(args[0], "torch.Size", "argument"))


class DeviceNew(Safe):
    pickle_name = "torch.device"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 1, 2)
        kind = args[0]
        ok = type(kind) is str and 0 < len(kind) <= 32 and all(c.isascii() and (c.isalnum() or c in "_:") for c in kind)
        if not ok or (len(args) == 2 and (type(args[1]) is not int or not 0 <= args[1] < 1 << 16)):
            raise unsafe(f"torch.device: expected a device type and index, got {show(args)}")
        try:
            return torch.device(*args)  # parses the string; initialises no backend
        except (RuntimeError, ValueError) as e:
            raise unreadable(f"torch.device{show(args)}: {e}") from e


class TensorType(Safe):
    pickle_name = "torch.Tensor"  # the new_type argument of _rebuild_from_type_v2; calling it is refused


class ParameterNew(Safe):
    pickle_name = "torch.nn.parameter.Parameter"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 1, 2)
        return parameter_record(args[0], args[1] if len(args) == 2 else True, None, None, cls.pickle_name)


class RebuildTensor(Safe):
    pickle_name = "torch._utils._rebuild_tensor"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 4, 4)
        storage, offset, size, stride = args
        return tensor_record(storage, offset, size, stride, None, False, None, None, cls.pickle_name)


class RebuildTensorV2(Safe):
    pickle_name = "torch._utils._rebuild_tensor_v2"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 6, 7)
        storage, offset, size, stride, requires_grad, hooks = args[:6]
        metadata = args[6] if len(args) == 7 else None
        return tensor_record(storage, offset, size, stride, None, requires_grad, hooks, metadata, cls.pickle_name)


class RebuildTensorV3(Safe):
    pickle_name = "torch._utils._rebuild_tensor_v3"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 7, 8)
        storage, offset, size, stride, requires_grad, hooks, dtype = args[:7]
        metadata = args[7] if len(args) == 8 else None
        if type(dtype) is not torch.dtype or dtype not in DTYPE_NAMES:
            raise unreadable(
                f"{cls.pickle_name}: dtype {show(dtype)} is not one of the dtypes read: {', '.join(DTYPE_NAMES.values())}"
            )
        return tensor_record(storage, offset, size, stride, dtype, requires_grad, hooks, metadata, cls.pickle_name)


class RebuildParameter(Safe):
    pickle_name = "torch._utils._rebuild_parameter"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 3, 3)
        return parameter_record(args[0], args[1], args[2], None, cls.pickle_name)


class RebuildParameterWithState(Safe):
    pickle_name = "torch._utils._rebuild_parameter_with_state"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 4, 4)
        return parameter_record(args[0], args[1], args[2], args[3], cls.pickle_name)


class RebuildFromTypeV2(Safe):
    pickle_name = "torch._tensor._rebuild_from_type_v2"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 4, 4)
        func, new_type, fargs, state = args
        if not (is_frozen_class(func) and func in TENSOR_REBUILDERS):
            raise unsafe(
                f"{cls.pickle_name}: the function argument is {kind_of(func)}; only torch's tensor rebuild functions are accepted"
            )
        if type(fargs) is not tuple:
            raise unreadable(f"{cls.pickle_name}: arguments are {kind_of(fargs)}, expected a tuple")
        value = func(*fargs)
        if new_type is TensorType:
            if not empty_state(state):
                raise unreadable(
                    f"{cls.pickle_name}: a tensor carries Python attributes {state_names(state)}, which are not converted"
                )
            return value
        if is_stand_in_class(new_type):  # a tensor subclass we do not import: an inert record wrapping the tensor
            inst = PickledObject.__new__(new_type, value)
            if not empty_state(state):
                inst.__setstate__(state)
            return inst
        raise unsafe(f"{cls.pickle_name}: new_type is {kind_of(new_type)}; expected torch.Tensor or a tensor subclass")


class RebuildFromType(RebuildFromTypeV2):
    pickle_name = "torch._tensor._rebuild_from_type"  # torch 1.x spelling, same arguments


class LoadFromBytes(Safe):
    """``TypedStorage.__reduce__``: a storage pickled as the bytes of a nested ``torch.save`` stream."""

    pickle_name = "torch.storage._load_from_bytes"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 1, 1)
        data = args[0]
        if type(data) is not bytes:
            raise unsafe(f"{cls.pickle_name}: expected bytes, got {kind_of(data)}")
        session = current_session()
        known = session.nested.get(id(data))
        if known is not None:  # the same bytes again (a memo reference): the same storage, read once
            return known[1]
        if session.nesting:
            raise unsafe(f"{cls.pickle_name} inside a storage that is itself nested bytes; torch never writes that")
        session.nesting += 1
        try:
            assert session.read_nested is not None
            root = session.read_nested(data, f"{cls.pickle_name}({len(data)} bytes)")
        finally:
            session.nesting -= 1
        if type(root) is not StorageRecord:
            raise unreadable(f"{cls.pickle_name}: the nested stream holds {kind_of(root)}, not a storage")
        session.nested[id(data)] = (data, root)  # the bytes stay alive with the session: their id is never reused
        return root


class Reconstructor(Safe):
    """``copyreg._reconstructor(cls, base, state)``: how protocols 0-1 create plain class instances."""

    pickle_name = "copyreg._reconstructor"
    bases = frozenset({"object", "list", "dict", "set", "tuple", "str", "int", "float", "bytes"})

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 3, 3)
        target, base, state = args
        if not is_stand_in_class(target):
            raise unsafe(f"{cls.pickle_name}: class argument is {kind_of(target)}; only classes unknown to us become records")
        if not (is_stand_in_class(base) and base.module in BUILTIN_MODULES and base.qualname in cls.bases):
            raise unsafe(f"{cls.pickle_name}: base argument is {kind_of(base)}; expected object or a builtin container type")
        if base.qualname == "object" and state is None:
            return PickledObject.__new__(target)
        return PickledObject.__new__(target, state)


class NdArrayType(Safe):
    pickle_name = "numpy.ndarray"  # the subtype argument of _reconstruct; calling it is refused


class NpReconstruct(Safe):
    pickle_name = "numpy.core.multiarray._reconstruct"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # numpy pickles every array as _reconstruct(ndarray, (0,), b'b') and then BUILDs it; any other
        # shape would make numpy allocate it before the data arrives, so nothing else is accepted
        _expect_args(cls, args, kwargs, 3, 3)
        subtype, shape, typecode = args
        if (
            subtype is not NdArrayType
            or type(shape) is not tuple
            or shape != (0,)
            or type(shape[0]) is not int
            or typecode != b"b"
        ):
            raise unsafe(f"{cls.pickle_name} is accepted only as numpy writes it, (ndarray, (0,), b'b'); got {show(args)}")
        return NdArray()


class NpFromBuffer(Safe):
    pickle_name = "numpy.core.numeric._frombuffer"  # protocol 5: _frombuffer(buffer, dtype, shape, order)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 4, 4)
        buf, dtype, shape, order = args
        if order not in ("C", "F") or type(order) is not str:
            raise unsafe(f"{cls.pickle_name}: order is {show(order)}, expected 'C' or 'F'")
        array = NdArray()
        array.fill(shape, dtype, order == "F", buf, cls.pickle_name)
        return array


_NP_SPECS = {
    f"{k}{n}": n
    for k, sizes in {"b": (1,), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (2, 4, 8), "c": (8, 16)}.items()
    for n in sizes
}


class NpDTypeNew(Safe):
    pickle_name = "numpy.dtype"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 1, 3)
        spec = args[0]
        if type(spec) is not str or spec not in _NP_SPECS or any(type(a) is not bool for a in args[1:]):
            raise unsafe(f"numpy.dtype{show(args)}: only bool, integer, float and complex dtypes are read (no object dtype)")
        return NpDType(spec, _NP_SPECS[spec])


class NpScalarNew(Safe):
    pickle_name = "numpy.core.multiarray.scalar"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 2, 2)
        dtype, data = args
        if type(dtype) is not NpDType or dtype.str is None:
            raise unsafe(f"{cls.pickle_name}: expected a numpy dtype of numbers or bool, got {kind_of(dtype)}")
        if type(data) is not bytes or len(data) != dtype.itemsize:
            raise unsafe(f"{cls.pickle_name}: a {dtype.str} scalar needs {dtype.itemsize} bytes, got {show(data)}")
        return NpScalar(dtype, data)


TENSOR_REBUILDERS = frozenset({RebuildTensor, RebuildTensorV2, RebuildTensorV3, RebuildParameter, RebuildParameterWithState})


def _mapping(value: Any) -> dict[Any, Any] | None:
    """The items of a dict the pickle built (a :class:`DictBuilder`), or None for anything else."""
    return value.data if type(value) is DictBuilder else None


def _empty_dict(value: Any) -> bool:
    return type(value) is DictBuilder and not value.data and not value.attrs


def empty_state(state: Any) -> bool:
    """No Python attributes: None, {}, or a (dict, slots) pair of those (Python >= 3.11 writes None)."""
    if state is None or _empty_dict(state):
        return True
    return type(state) is tuple and len(state) == 2 and all(empty_state(s) for s in state)


def state_names(state: Any) -> str:
    if type(state) is tuple:
        return ", ".join(state_names(s) for s in state if not empty_state(s))
    items = _mapping(state)
    if items is not None:
        return show([show(k, 40) for k in list(items)[:8]])
    return show(state)


def tensor_record(storage: Any, offset: Any, size: Any, stride: Any, dtype: torch.dtype | None, requires_grad: Any,
            hooks: Any, metadata: Any, fn: str) -> TensorRecord:  # fmt: skip
    """Validate a tensor view (integers, bounds, expansion) before any torch function sees it."""
    if type(storage) is not StorageRecord:
        raise unsafe(f"{fn}: the storage argument is {kind_of(storage)}; expected a storage of this file")
    if dtype is None:
        if storage.untyped:
            raise unreadable(f"{fn}: an untyped storage needs a dtype (torch writes _rebuild_tensor_v3 for it)")
        dtype = storage.dtype
    if type(offset) is not int or not 0 <= offset <= INT64_MAX:
        raise unreadable(f"{fn}: storage offset {show(offset)}; expected an int in [0, 2**63)")
    size = int_tuple(size, fn, "size")
    stride = int_tuple(stride, fn, "stride")
    if len(size) != len(stride):
        raise unreadable(f"{fn}: size {size} and stride {stride} differ in length")
    if type(requires_grad) is not bool:
        raise unreadable(f"{fn}: requires_grad is {kind_of(requires_grad)}, expected bool")
    if requires_grad and not (dtype.is_floating_point or dtype.is_complex):
        raise unreadable(f"{fn}: requires_grad on a {dtype} tensor (only floating and complex tensors have gradients)")
    if hooks is not None and not _empty_dict(hooks):
        raise unreadable(f"{fn}: backward hooks {show(hooks)} are not converted")
    flags = {}
    if metadata is not None:
        items = _mapping(metadata)
        if items is None or any(type(k) is not str or k not in ("conj", "neg") or type(v) is not bool for k, v in items.items()):
            raise unreadable(f"{fn}: tensor metadata {show(metadata)}; expected {{'conj': bool, 'neg': bool}}")
        flags = {k: v for k, v in items.items() if v}
    if flags.get("conj") and not dtype.is_complex:
        raise unreadable(f"{fn}: conjugate bit on a {dtype} tensor")
    if flags.get("neg") and dtype is torch.bool:
        raise unreadable(f"{fn}: negative bit on a bool tensor (torch has no negation of bool)")
    itemsize = dtype.itemsize
    if storage.order_unknown and itemsize > 1:
        raise unreadable(f"{fn}: a {dtype} tensor in a big-endian untyped storage; its byte order is ambiguous")
    capacity = storage.nbytes // itemsize
    numel = 1
    for d in size:
        numel *= d
    if numel > capacity:
        raise over_limit(
            f"{fn}: a {dtype} view of {numel} elements over a storage of {capacity}: expanded or overlapping views are refused"
        )
    if numel:
        extent = offset + 1 + sum((d - 1) * s for d, s in zip(size, stride))
        if extent > capacity:
            raise unreadable(
                f"{fn}: view (offset {offset}, size {size}, stride {stride}) reaches element {extent - 1} of a {capacity}-element storage"
            )
    elif offset > capacity:
        raise unreadable(f"{fn}: storage offset {offset} is past the end of a {capacity}-element storage")
    current_session().add_view(storage, dtype, offset, size, stride, numel * itemsize)
    return TensorRecord(storage, offset, size, stride, dtype, requires_grad, bool(flags.get("conj")), bool(flags.get("neg")))


def parameter_record(data: Any, requires_grad: Any, hooks: Any, state: Any, fn: str) -> ParameterRecord:
    if type(data) is not TensorRecord:
        raise unsafe(f"{fn}: data is {kind_of(data)}; expected a tensor of this file")
    if type(requires_grad) is not bool:
        raise unreadable(f"{fn}: requires_grad is {kind_of(requires_grad)}, expected bool")
    if requires_grad and not (data.dtype.is_floating_point or data.dtype.is_complex):
        raise unreadable(f"{fn}: requires_grad on a {data.dtype} parameter")
    if hooks is not None and not _empty_dict(hooks):
        raise unreadable(f"{fn}: backward hooks {show(hooks)} are not converted")
    if not empty_state(state):
        raise unreadable(f"{fn}: the parameter carries Python attributes {state_names(state)}, which are not converted")
    return ParameterRecord(data, requires_grad)
