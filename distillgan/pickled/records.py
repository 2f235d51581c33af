"""What unpickling builds: read-only classes, inert stand-ins for unknown globals, and records.

Records (storages, tensors, parameters, numpy arrays) are plain data checked while unpickling;
no torch or numpy function runs until :mod:`.materialise` turns them into real objects.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from .common import INT64_MAX, MAX_NDIM, Budget, show, unreadable, unsafe
from .enums import MAX_ENUM_LEVELS, STDLIB_ENUMS, STDLIB_MODULES

_ENUM_SCALARS = (type(None), bool, int, float, str)
_NOT_A_VALUE = MAX_ENUM_LEVELS + 1


def kind_of(value: object) -> str:
    """What a value is, for messages: a stand-in by the name the file gives it."""
    if isinstance(value, type):
        return repr(value)
    if isinstance(value, PickledObject):
        return f"a record of {show(value.full_name)}"
    return type(value).__name__


# --------------------------------------------------------------------------------------------
# Classes a pickle can reach: read-only, and records that refuse BUILD


class FrozenType(type):
    """Metaclass of every class a pickle can reach: ``BUILD`` slot state cannot ``setattr`` on it."""

    def __setattr__(cls, name: str, value: object) -> None:
        raise unsafe(f"the pickle sets attribute {show(name)} on {cls!r}; classes reachable from a pickle are read-only")

    def __delattr__(cls, name: str) -> None:
        raise unsafe(f"the pickle deletes attribute {show(name)} of {cls!r}; classes reachable from a pickle are read-only")

    @property
    def __setstate__(cls) -> Any:
        # BUILD looks up __setstate__ on its target; a metaclass data descriptor wins over the class's own
        # (instance) method, so BUILD applied to a class itself is refused here, deterministically
        raise unsafe(f"the pickle applies BUILD state to the class {cls!r} itself")

    def __repr__(cls) -> str:
        name = cls.__dict__.get("pickle_name")
        return f"<{'stand-in' if issubclass(cls, PickledObject) else 'allowlisted'} {show(name)}>" if name else super().__repr__()


class PickledObject(metaclass=FrozenType):
    """An inert stand-in for an object whose class the file names: recorded, never imported or called.

    Each unknown global ``module.qualname`` becomes one subclass (``type(obj).module`` and
    ``type(obj).qualname`` name it). An instance holds what the pickle did to it:

    - ``args``/``kwargs``: the arguments of ``REDUCE``/``NEWOBJ``/``NEWOBJ_EX``/``INST``/``OBJ``;
    - ``called``: true when created by calling the class (``REDUCE``, ``INST``/``OBJ`` with
      arguments), false for ``NEWOBJ``-style creation;
    - ``state``/``built``: the ``BUILD`` state and whether there was one;
    - ``items``: values given by ``APPEND``/``APPENDS``/``ADDITEMS``;
      ``dict_items``: ``(key, value)`` pairs given by ``SETITEM``/``SETITEMS``.
    """

    __slots__ = ("args", "built", "called", "dict_items", "items", "kwargs", "state")
    module = ""
    qualname = ""
    pickle_name = ""
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    called: bool
    state: Any
    built: bool
    items: list[Any]
    dict_items: list[tuple[Any, Any]]

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:  # noqa: PYI034 (Self needs Python 3.11)
        if cls is PickledObject:
            raise TypeError("PickledObject is the base of stand-ins; it is not created directly")
        self = object.__new__(cls)
        self.args = args
        self.kwargs = kwargs
        self.called = False
        self.state = None
        self.built = False
        self.items = []
        self.dict_items = []
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.called = True  # type.__call__ runs __init__ after __new__; NEWOBJ runs only __new__

    def __setstate__(self, state: Any) -> None:
        if self.built:
            raise unsafe(f"the pickle builds {show(type(self).pickle_name)} twice (two BUILD opcodes on one object)")
        self.state = state
        self.built = True

    def append(self, item: Any) -> None:
        self.items.append(item)

    def extend(self, items: list[Any]) -> None:
        self.items.extend(items)

    def add(self, item: Any) -> None:
        self.items.append(item)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.dict_items.append((key, value))

    @property
    def full_name(self) -> str:
        """``module.qualname`` as the file names it."""
        return type(self).pickle_name

    def enum_shaped(self) -> bool:
        """True when this is called the way ``Enum.__reduce_ex__`` pickles a member: ``Class(value)``, nothing more.

        The callee must also be named like a class (its last name part starts with an upper-case
        letter, as every Enum class is): a function called with one value — ``os.system("...")``,
        ``eval("...")`` — stays a record of the call instead of passing for its argument. Whether
        ``value`` can be a member's value is :class:`EnumMembers`'s question.
        """
        name = type(self).pickle_name
        if name not in STDLIB_ENUMS:
            if name.split(".", 1)[0] in STDLIB_MODULES:
                return False  # decimal.Decimal("1.5"), ipaddress.IPv4Address(16909060): a value of its own, not a member
            if not type(self).qualname.rsplit(".", 1)[-1][:1].isupper():
                return False
        plain_call = len(self.args) == 1 and not self.kwargs
        return self.called and plain_call and not self.built and not self.items and not self.dict_items

    def is_enum_like(self) -> bool:
        """True when this is an Enum member as :class:`EnumMembers` reads one (a conversion shares one instance)."""
        return EnumMembers(None).is_member(self)

    def __repr__(self) -> str:
        parts = [show(type(self).pickle_name)]
        if self.args:
            parts.append(f"args={show(self.args, 60)}")
        if self.built:
            parts.append(f"state={show(self.state, 60)}")
        return f"<PickledObject {' '.join(parts)}>"


class EnumMembers:
    """Which stand-ins are Enum members: :meth:`PickledObject.enum_shaped`, with a value an Enum member can have.

    A member's value is None/bool/int/float/str, another member, or a tuple of such values, at most
    :data:`MAX_ENUM_LEVELS` levels of tuples and members deep (``save_model`` stores a member as its
    ``.value`` and converts that again, so a member whose value is a member becomes that one's value).
    Each object is looked at once however many members share it (its levels are remembered by id:
    the tree holding the objects outlives this), and each look is charged to ``budget`` when given.
    """

    __slots__ = ("budget", "levels")

    def __init__(self, budget: Budget | None) -> None:
        self.budget = budget
        self.levels: dict[int, int] = {}  # id -> levels of tuples and members it is; _NOT_A_VALUE: too deep, or not made of them

    def is_member(self, value: object) -> bool:
        return isinstance(value, PickledObject) and value.enum_shaped() and self.depth(value.args[0]) <= MAX_ENUM_LEVELS

    def parts(self, value: object) -> tuple[Any, ...] | None:
        """What a member's value is made of one level down; None for a value no member has."""
        if type(value) is tuple:
            return value
        if isinstance(value, PickledObject) and value.enum_shaped():
            return value.args
        return None

    def depth(self, value: object) -> int:
        """Levels of tuples and members ``value`` is (a scalar: 0), ``MAX_ENUM_LEVELS + 1`` for no member's value.

        Walked with a list, never recursively; each object's levels computed once, after its parts'.
        """
        levels = self.levels
        todo: list[tuple[Any, bool]] = [(value, False)]
        while todo:
            item, expanded = todo.pop()
            if type(item) in _ENUM_SCALARS:
                continue
            key = id(item)
            parts = self.parts(item)
            if expanded:
                below = max((levels.get(id(p), 0) for p in parts or () if type(p) not in _ENUM_SCALARS), default=0)
                levels[key] = min(_NOT_A_VALUE, below + 1)
                continue
            if key in levels:
                continue
            levels[key] = _NOT_A_VALUE  # until its parts are measured: a value holding itself is no member's value
            if parts is None:
                continue
            if self.budget is not None:
                self.budget.charge_work(1 + len(parts), "an Enum member's value")
            todo.append((item, True))
            todo.extend((p, False) for p in parts if type(p) not in _ENUM_SCALARS and id(p) not in levels)
        return 0 if type(value) in _ENUM_SCALARS else levels[id(value)]


def is_frozen_class(value: object) -> bool:
    """A class this package made (a stand-in or an allowlisted constructor): hashed by identity, never by content."""
    return isinstance(value, FrozenType)


def is_stand_in_class(value: object) -> bool:
    return isinstance(value, FrozenType) and issubclass(value, PickledObject) and value is not PickledObject


class Record:
    """Base of the values this module builds while unpickling; ``BUILD`` on them is refused."""

    __slots__ = ()
    what = "record"

    def __setstate__(self, state: Any) -> None:
        raise unsafe(f"the pickle applies BUILD state to a {self.what}; its legitimate writer never does")


class PathRecord(Record):
    """A ``pathlib`` path: its parts, checked as str; it becomes a pure path once the file is read."""

    __slots__ = ("parts", "windows")
    what = "path"

    def __init__(self, parts: tuple[str, ...], windows: bool) -> None:
        self.parts, self.windows = parts, windows


class StorageType(Record):
    """What ``torch.FloatStorage`` & co. resolve to: a dtype, used only inside persistent ids."""

    __slots__ = ("dtype", "name", "untyped")
    what = "storage type"

    def __init__(self, name: str, dtype: torch.dtype, untyped: bool) -> None:
        self.name, self.dtype, self.untyped = name, dtype, untyped

    def __repr__(self) -> str:
        return f"<storage type {self.name}>"


class StorageRecord(Record):
    """One storage of the file: its bytes (a bytearray we own) once read."""

    __slots__ = ("_bool_checked", "_storage", "data", "dtype", "key", "nbytes", "order_unknown", "untyped", "where")
    what = "storage"

    def __init__(self, key: str, stype: StorageType, nbytes: int, where: str) -> None:
        self.key, self.dtype, self.untyped, self.nbytes, self.where = key, stype.dtype, stype.untyped, nbytes, where
        self.data: bytearray | None = None
        self.order_unknown = False  # a big-endian untyped storage: its element size, hence its byte order, is unknown
        self._storage: torch.UntypedStorage | None = None
        self._bool_checked = False

    def storage(self) -> torch.UntypedStorage:
        if self._storage is None:
            if self.data is None:
                raise unreadable(f"{self.where}: storage {show(self.key)} was never filled with data")
            if self.data:
                self._storage = torch.frombuffer(self.data, dtype=torch.uint8).untyped_storage()
            else:
                self._storage = torch.empty(0, dtype=torch.uint8).untyped_storage()
        return self._storage

    def check_bool(self) -> None:
        """A bool tensor must hold only bytes 0 and 1 (other bytes are undefined behaviour in torch)."""
        if not self._bool_checked:
            assert self.data is not None
            if self.data.translate(None, b"\x00\x01"):
                raise unreadable(f"{self.where}: bool storage {show(self.key)} holds bytes other than 0 and 1")
            self._bool_checked = True


class TensorRecord(Record):
    __slots__ = ("conj", "dtype", "neg", "offset", "requires_grad", "size", "storage", "stride")
    what = "tensor"

    def __init__(self, storage: StorageRecord, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                 dtype: torch.dtype, requires_grad: bool, conj: bool, neg: bool) -> None:  # fmt: skip
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.dtype, self.requires_grad, self.conj, self.neg = dtype, requires_grad, conj, neg


class ParameterRecord(Record):
    __slots__ = ("data", "requires_grad")
    what = "parameter"

    def __init__(self, data: TensorRecord, requires_grad: bool) -> None:
        self.data, self.requires_grad = data, requires_grad


class NpDType(Record):
    """A numpy dtype: ``numpy.dtype('f8', False, True)`` then BUILD ``(3, '<', None, None, None, -1, -1, 0)``."""

    __slots__ = ("itemsize", "spec", "str")
    what = "numpy dtype"

    def __init__(self, spec: str, itemsize: int) -> None:
        self.spec, self.itemsize = spec, itemsize
        self.str: str | None = None  # '<f8' once BUILD gave the byte order

    def __setstate__(self, state: Any) -> None:
        if self.str is not None:
            raise unsafe(f"the pickle builds numpy dtype {self.spec!r} twice")
        if type(state) is not tuple or len(state) != 8 or state[0] != 3 or type(state[0]) is not int:
            raise unsafe(f"numpy dtype {self.spec!r}: BUILD state {show(state)} is not numpy's (3, byteorder, None, ...)")
        _, order, subarray, names, fields, elsize, alignment, flags = state
        if (subarray, names, fields, elsize, alignment, flags) != (None, None, None, -1, -1, 0) or type(flags) is not int:
            raise unsafe(f"numpy dtype {self.spec!r}: state {show(state)} describes a structured, flexible or object dtype")
        if type(order) is not str or order not in ("<", ">", "|", "=") or (order == "|") != (self.itemsize == 1):
            raise unsafe(f"numpy dtype {self.spec!r}: byte order {show(order)} does not fit a {self.itemsize}-byte type")
        if order == "=":
            order = "<" if sys.byteorder == "little" else ">"
        self.str = order + self.spec


class NdArray(Record):
    """A numpy array: ``_reconstruct(ndarray, (0,), b'b')`` then BUILD, or ``_frombuffer`` (protocol 5)."""

    __slots__ = ("data", "dtype", "fortran", "shape")
    what = "numpy array"

    def __init__(self) -> None:
        self.data: bytes | bytearray | None = None

    def fill(self, shape: Any, dtype: Any, fortran: bool, data: Any, where: str) -> None:
        if type(dtype) is not NpDType or dtype.str is None:
            raise unsafe(f"{where}: expected a numpy dtype of numbers or bool, got {kind_of(dtype)}")
        if type(data) not in (bytes, bytearray):
            raise unsafe(f"{where}: array data is {kind_of(data)}, not bytes (object arrays are refused)")
        self.shape = int_tuple(shape, where, "shape")
        n = 1
        for d in self.shape:
            n *= d
        if n * dtype.itemsize != len(data):
            raise unreadable(
                f"{where}: shape {self.shape} of {dtype.str} needs {n * dtype.itemsize} bytes; the pickle holds {len(data)}"
            )
        self.dtype, self.fortran, self.data = dtype, fortran, data

    def __setstate__(self, state: Any) -> None:
        where = "numpy array BUILD"
        if self.data is not None:
            raise unsafe("the pickle builds one numpy array twice")
        if type(state) is not tuple or len(state) != 5 or type(state[0]) is not int or state[0] != 1:
            raise unsafe(f"{where}: state {show(state)} is not numpy's (1, shape, dtype, is_fortran, data)")
        _, shape, dtype, fortran, data = state
        if type(fortran) is not bool:
            raise unsafe(f"{where}: is_fortran is {kind_of(fortran)}, expected bool")
        self.fill(shape, dtype, fortran, data, where)


class NpScalar(Record):
    __slots__ = ("data", "dtype")
    what = "numpy scalar"

    def __init__(self, dtype: NpDType, data: bytes) -> None:
        self.dtype, self.data = dtype, data


def int_tuple(value: Any, where: str, what: str) -> tuple[int, ...]:
    """A tensor's or array's size/stride: a tuple (or list, torch.Size) of ints in [0, 2**63)."""
    if type(value) not in (tuple, list, torch.Size):
        raise unreadable(f"{where}: {what} is {kind_of(value)}; expected a tuple of ints")
    if len(value) > MAX_NDIM:
        raise unreadable(f"{where}: {what} has {len(value)} dimensions; at most {MAX_NDIM} are read")
    for v in value:
        if type(v) is not int or not 0 <= v <= INT64_MAX:
            raise unreadable(f"{where}: {what} {show(tuple(value))} holds {show(v)}; expected ints in [0, 2**63)")
    return tuple(value)


# torch dtypes readable from a checkpoint: those safetensors (and distillgan's writer) has, plus complex128
DTYPE_NAMES: dict[torch.dtype, str] = {
    getattr(torch, name): name
    for name in (
        "float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
        "float8_e8m0fnu", "complex64", "complex128", "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16",
        "uint8", "bool",
    )
    if hasattr(torch, name)
}  # fmt: skip
# torch/storage.py _dtype_to_storage_type_map: the storage classes that legacy and zip checkpoints name
LEGACY_STORAGES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32, "ShortStorage": torch.int16,
    "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
}  # fmt: skip
