"""Reading pickle-era files without running them: the restricted reader behind the converter.

:func:`read_pickled` reads the three kinds of file the pickle era left behind and returns the
object tree the file holds:

1. torch zip checkpoints (``torch.save`` since torch 1.6): ``<prefix>/data.pkl`` plus one
   stored member ``<prefix>/data/<key>`` per storage, ``byteorder``, ``version``;
2. legacy torch streams (torch < 1.6, e.g. the official HiFi-GAN ``g_*`` checkpoints): five
   pickles in a row (magic number, protocol version, sys_info, the data, the storage keys)
   followed by the raw storages, each an int64 element count and its bytes;
3. plain pickles of protocol 0 to 5 (the app's old pickle files); tensors pickled with
   ``pickle.dump`` carry their storages as nested legacy streams (``torch.storage._load_from_bytes``).

How it stays inert. Each pickle is first walked opcode by opcode (:func:`_scan_pickle`, pure
Python, nothing built) to find where it ends and to refuse what the C unpickler would turn into
work out of proportion to the file: memo indices far beyond the number of memo writes, text
integers of thousands of digits, lengths past the end, ``EXT1/2/4`` opcodes (their lookup goes
through ``copyreg._extension_cache``, a process-wide cache that can hold real objects and is
consulted *before* ``find_class``). Then the C unpickler runs with ``find_class`` overridden:
every ``GLOBAL``/``STACK_GLOBAL``/``INST``/``OBJ`` lookup lands in :data:`ALLOWED_GLOBALS`, a
dict keyed by exact ``(module, name)`` pairs whose values are constructors written here (each a
class whose ``__new__`` vets its arguments and returns plain data or a record), torch dtypes, or
storage-type markers. Every other global becomes an inert stand-in class, a subclass of
:class:`PickledObject` made on the fly, which records the call arguments, the ``BUILD`` state and
any ``APPEND``/``SETITEM``/``ADDITEMS`` instead of doing anything. No module named by the file is
imported and no attribute of a real module is looked up by a name from the file. Every class a
pickle can reach has a metaclass that refuses ``setattr``, so ``BUILD``'s slot state cannot
rewire it; records refuse ``BUILD``. While unpickling no torch or numpy function runs at all:
tensors and arrays are records (:class:`_TensorRecord`, :class:`_NdArray`); once the whole file
is read and every bound checked, one pass (:class:`_Materialiser`) turns the records into real
tensors and arrays. Storage bytes are read from the file into ``bytearray``s that this module
allocates; tensors *view* those buffers (one copy from the file, no mapping of the file, one
storage per key: tensors that shared a storage when saved still share one).

Conversion rule (:func:`to_plain_tree`), the value tree the writer stores:

- ``dict``/``OrderedDict``/``defaultdict`` -> ``dict`` with the same keys in the same order;
  keys must be ``str`` or 64-bit ``int`` (an Enum-like stand-in key becomes its value); other
  keys are an error naming the path. Attributes set on an ``OrderedDict`` (torch's ``_metadata``
  version table) are not part of the value tree. The keys ``"__class__"`` and ``"__global__"``
  are reserved for the two encodings below.
- ``list`` -> ``list``; ``tuple`` (and ``torch.Size``) -> ``tuple``.
- ``None``, ``bool``, ``float`` (NaN and infinities kept), ``str`` (valid Unicode), ``bytes``
  (``bytearray`` -> ``bytes``), ``int`` in ``[-2**63, 2**64)``.
- torch tensors and ``nn.Parameter`` as read (views of the buffers above, conj/neg bits
  resolved); numpy arrays as read (never of object dtype), in this host's byte order; numpy
  scalars -> their Python value.
- ``torch.device`` and ``pathlib`` paths -> ``str``.
- an Enum-like stand-in -> its value, converted by these rules (``(1, "x")`` stays that tuple),
  which is what ``save_model`` stores for the live member. Enum-like means called the way
  ``Enum.__reduce_ex__`` pickles a member, ``Class(value)`` and nothing else (no state, no
  items), where ``value`` is None/bool/int/float/str or a tuple of such values (nested), and the
  callee is a class named outside the standard library whose last name part starts with an
  upper-case letter (as every Enum class is), or one of the standard library's own Enums
  (:data:`STDLIB_ENUMS`: ``http.HTTPStatus``, ``signal.Signals``, ``re.RegexFlag``, ...). So a
  function called so (``os.system("...")``) stays a record of the call, and so do the standard
  library's value classes that reduce with one argument — ``decimal.Decimal("1.5")``,
  ``ipaddress.IPv4Address(16909060)``, ``datetime.date(b"...")`` — as do those that reduce with
  several (``fractions.Fraction(3, 4)``, ``datetime.timedelta(1, 2, 0)``) or through ``NEWOBJ``
  and state (``uuid.UUID``: ``{"__class__": "uuid.UUID", "__state__": {"int": ...}}``); what they
  reduce to is the same for pickle protocols 2 and 4/5. A class of a third-party module called with
  one such value is taken for an Enum member: the heuristic cannot tell it from one.
- any other stand-in instance -> ``{"__class__": "module.qualname", "__args__": [...],
  "__kwargs__": {...}, "__state__": ..., "__items__": [...], "__dictitems__": {...}}``, each of the
  last five present only when the pickle supplied it; ``complex`` -> ``{"__class__":
  "builtins.complex", "__args__": [re, im]}``; ``set``/``frozenset`` -> ``{"__class__":
  "builtins.set", "__args__": [sorted items]}``; a numpy dtype -> ``{"__class__": "numpy.dtype",
  "__args__": ["<f8"]}``.
- a class or function named by the file, used as a value (a stand-in class, an allowlisted
  constructor, a torch dtype) -> ``{"__global__": "module.qualname"}``.
- anything else (a bare storage, a cycle) is an error naming the path.

Errors are :class:`~distillgan.errors.InputError` with one of four codes, or
:class:`~distillgan.errors.FileAccessError` for the path (``not-found``, ``not-regular-file``,
``file-too-large``, ``io-error``):

- ``convert-unreadable``: damaged, truncated or unsupported content (quantized or sparse tensors,
  TorchScript archives, a storage whose size disagrees with its member, ...);
- ``convert-unsafe``: the pickle uses an allowlisted name outside the form its legitimate writer
  emits (``_codecs.encode`` with another codec, ``_rebuild_from_type_v2`` with a function that is
  not a tensor rebuilder, object-dtype arrays, EXT opcodes, ``BUILD`` on a record, ...);
- ``convert-limit``: a work or memory bound of :class:`PickleLimits` would be exceeded;
- ``convert-value``: :func:`to_plain_tree` meets a value the tree cannot hold;
- ``numpy-unavailable``: the file holds numpy arrays and numpy is not installed.
"""

from __future__ import annotations

import contextvars
import io
import os
import pickle
import pickletools
import reprlib
import stat
import struct
import sys
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Any, BinaryIO

import torch

from .errors import DistillganError, FileAccessError, InputError, not_regular_error, open_error

__all__ = ["ALLOWED_GLOBALS", "DEFAULT_LIMITS", "PickleLimits", "PickledObject", "read_pickled", "to_plain_tree"]

TORCH_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER: first pickle of a legacy stream
TORCH_LEGACY_PROTOCOL_VERSION = 1001  # torch/serialization.py PROTOCOL_VERSION: second pickle
MAX_NUMBER_CHARS = 4300  # text INT/LONG/FLOAT/PUT/GET lines: CPython's default int_max_str_digits, so parsing stays cheap
MAX_DIRECTORY_BYTES = 64 << 20  # central directory of a torch zip read at most (zipfile reads all of it into memory)
MAX_NDIM = 64  # dimensions of one tensor or array
MAX_SMALL_MEMBER = 64  # byteorder / version members
_INT64_MAX = (1 << 63) - 1
_BUILTINS = ("builtins", "__builtin__")  # protocols 0-2 spell builtins "__builtin__" (fix_imports)


@dataclass(frozen=True)
class PickleLimits:
    """Work and memory bounds of :func:`read_pickled` and :func:`to_plain_tree` (code ``convert-limit``).

    ``max_file_bytes``: input file size. ``max_pickle_bytes``: one pickle (``data.pkl``, one pickle
    of a legacy stream, a plain pickle), decompressed. ``view_bytes_factor``/``view_bytes_extra``:
    the distinct tensor views of a file may total at most factor x its storage bytes + extra.
    ``max_classes``: distinct unknown globals (each costs a class object, ~1 KiB).
    ``max_nodes``/``max_depth``: nodes visited (shared references counted each time) and nesting.
    """

    max_file_bytes: int = 64 << 30
    max_pickle_bytes: int = 256 << 20
    view_bytes_factor: int = 4
    view_bytes_extra: int = 64 << 20
    max_classes: int = 20_000
    max_nodes: int = 5_000_000
    max_depth: int = 64


DEFAULT_LIMITS = PickleLimits()


def _unreadable(message: str) -> InputError:
    return InputError(message, code="convert-unreadable")


def _unsafe(message: str) -> InputError:
    return InputError(message, code="convert-unsafe")


def _limit(message: str) -> InputError:
    return InputError(message, code="convert-limit")


class _ShortRepr(reprlib.Repr):
    """reprlib bounds containers and strings; ints are bounded too (a huge int's decimal repr is quadratic)."""

    def repr_int(self, x: int, level: int) -> str:
        return repr(x) if x.bit_length() <= 64 else f"<int of {x.bit_length()} bits>"


_SHORT_REPR = _ShortRepr()
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 80
_SHORT_REPR.maxlevel = 3


def _show(value: object, width: int = 80) -> str:
    """A bounded-cost repr of an untrusted value, cut to ``width`` characters (control characters escaped)."""
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _kind(value: object) -> str:
    """What a value is, for messages: a stand-in by the name the file gives it."""
    if isinstance(value, type):
        return repr(value)
    if isinstance(value, PickledObject):
        return f"a record of {_show(value.full_name)}"
    return type(value).__name__


# --------------------------------------------------------------------------------------------
# Classes a pickle can reach: read-only, and records that refuse BUILD


class _FrozenType(type):
    """Metaclass of every class a pickle can reach: ``BUILD`` slot state cannot ``setattr`` on it."""

    def __setattr__(cls, name: str, value: object) -> None:
        raise _unsafe(f"the pickle sets attribute {_show(name)} on {cls!r}; classes reachable from a pickle are read-only")

    def __delattr__(cls, name: str) -> None:
        raise _unsafe(f"the pickle deletes attribute {_show(name)} of {cls!r}; classes reachable from a pickle are read-only")

    @property
    def __setstate__(cls) -> Any:
        # BUILD looks up __setstate__ on its target; a metaclass data descriptor wins over the class's own
        # (instance) method, so BUILD applied to a class itself is refused here, deterministically
        raise _unsafe(f"the pickle applies BUILD state to the class {cls!r} itself")

    def __repr__(cls) -> str:
        name = cls.__dict__.get("pickle_name")
        return (
            f"<{'stand-in' if issubclass(cls, PickledObject) else 'allowlisted'} {_show(name)}>" if name else super().__repr__()
        )


class PickledObject(metaclass=_FrozenType):
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
            raise _unsafe(f"the pickle builds {_show(type(self).pickle_name)} twice (two BUILD opcodes on one object)")
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

    def is_enum_like(self) -> bool:
        """True when this is how ``Enum.__reduce_ex__`` pickles a member: ``Class(value)``, nothing more.

        The callee must also be named like a class (its last name part starts with an upper-case
        letter, as every Enum class is): a function called with one value — ``os.system("...")``,
        ``eval("...")`` — stays a record of the call instead of passing for its argument.
        """
        name = type(self).pickle_name
        if name not in STDLIB_ENUMS:
            if name.split(".", 1)[0] in _STDLIB_MODULES:
                return False  # decimal.Decimal("1.5"), ipaddress.IPv4Address(16909060): a value of its own, not a member
            if not type(self).qualname.rsplit(".", 1)[-1][:1].isupper():
                return False
        return (
            self.called
            and len(self.args) == 1
            and not self.kwargs
            and _is_enum_value(self.args[0])
            and not self.built
            and not self.items
            and not self.dict_items
        )

    def __repr__(self) -> str:
        parts = [_show(type(self).pickle_name)]
        if self.args:
            parts.append(f"args={_show(self.args, 60)}")
        if self.built:
            parts.append(f"state={_show(self.state, 60)}")
        return f"<PickledObject {' '.join(parts)}>"


# The top-level names of the standard library's modules (and Python 2's, which protocols 0-2 may
# spell): a class of theirs called with one value is never taken for an Enum member, except the
# standard library's own Enums below. Never imported: only the names are compared.
_STDLIB_MODULES = frozenset(sys.stdlib_module_names) | {"__builtin__", "copy_reg", "_codecs"}
STDLIB_ENUMS = frozenset({
    "http.HTTPStatus", "http.HTTPMethod", "signal.Signals", "signal.Handlers", "signal.Sigmasks",
    "socket.AddressFamily", "socket.SocketKind", "socket.MsgFlag", "socket.AddressInfo", "inspect._ParameterKind",
    "uuid.SafeUUID", "ssl.TLSVersion", "ssl.VerifyMode", "ssl.VerifyFlags", "ssl.Options", "ssl.AlertDescription",
    "ssl._SSLMethod", "re.RegexFlag", "pstats.SortKey", "plistlib.PlistFormat",
})  # fmt: skip
_ENUM_SCALARS = (type(None), bool, int, float, str)


def _is_enum_value(value: object, depth: int = 0) -> bool:
    """A value an Enum member can have and be read back as: a scalar, or a tuple of such values (nested)."""
    if type(value) in _ENUM_SCALARS:
        return True
    return type(value) is tuple and depth < 8 and all(_is_enum_value(v, depth + 1) for v in value)


def _is_stand_in_class(value: object) -> bool:
    return isinstance(value, _FrozenType) and issubclass(value, PickledObject) and value is not PickledObject


class _Record:
    """Base of the values this module builds while unpickling; ``BUILD`` on them is refused."""

    __slots__ = ()
    what = "record"

    def __setstate__(self, state: Any) -> None:
        raise _unsafe(f"the pickle applies BUILD state to a {self.what}; its legitimate writer never does")


class _StorageType(_Record):
    """What ``torch.FloatStorage`` & co. resolve to: a dtype, used only inside persistent ids."""

    __slots__ = ("dtype", "name", "untyped")
    what = "storage type"

    def __init__(self, name: str, dtype: torch.dtype, untyped: bool) -> None:
        self.name, self.dtype, self.untyped = name, dtype, untyped

    def __repr__(self) -> str:
        return f"<storage type {self.name}>"


class _StorageRecord(_Record):
    """One storage of the file: its bytes (a bytearray we own) once read."""

    __slots__ = ("_bool_checked", "_storage", "data", "dtype", "key", "nbytes", "order_unknown", "untyped", "where")
    what = "storage"

    def __init__(self, key: str, stype: _StorageType, nbytes: int, where: str) -> None:
        self.key, self.dtype, self.untyped, self.nbytes, self.where = key, stype.dtype, stype.untyped, nbytes, where
        self.data: bytearray | None = None
        self.order_unknown = False  # a big-endian untyped storage: its element size, hence its byte order, is unknown
        self._storage: torch.UntypedStorage | None = None
        self._bool_checked = False

    def storage(self) -> torch.UntypedStorage:
        if self._storage is None:
            if self.data is None:
                raise _unreadable(f"{self.where}: storage {_show(self.key)} was never filled with data")
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
                raise _unreadable(f"{self.where}: bool storage {_show(self.key)} holds bytes other than 0 and 1")
            self._bool_checked = True


class _TensorRecord(_Record):
    __slots__ = ("conj", "dtype", "neg", "offset", "requires_grad", "size", "storage", "stride")
    what = "tensor"

    def __init__(self, storage: _StorageRecord, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                 dtype: torch.dtype, requires_grad: bool, conj: bool, neg: bool) -> None:  # fmt: skip
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.dtype, self.requires_grad, self.conj, self.neg = dtype, requires_grad, conj, neg


class _ParameterRecord(_Record):
    __slots__ = ("data", "requires_grad")
    what = "parameter"

    def __init__(self, data: _TensorRecord, requires_grad: bool) -> None:
        self.data, self.requires_grad = data, requires_grad


class _NpDType(_Record):
    """A numpy dtype: ``numpy.dtype('f8', False, True)`` then BUILD ``(3, '<', None, None, None, -1, -1, 0)``."""

    __slots__ = ("itemsize", "spec", "str")
    what = "numpy dtype"

    def __init__(self, spec: str, itemsize: int) -> None:
        self.spec, self.itemsize = spec, itemsize
        self.str: str | None = None  # '<f8' once BUILD gave the byte order

    def __setstate__(self, state: Any) -> None:
        if self.str is not None:
            raise _unsafe(f"the pickle builds numpy dtype {self.spec!r} twice")
        if type(state) is not tuple or len(state) != 8 or state[0] != 3 or type(state[0]) is not int:
            raise _unsafe(f"numpy dtype {self.spec!r}: BUILD state {_show(state)} is not numpy's (3, byteorder, None, ...)")
        _, order, subarray, names, fields, elsize, alignment, flags = state
        if (subarray, names, fields, elsize, alignment, flags) != (None, None, None, -1, -1, 0) or type(flags) is not int:
            raise _unsafe(f"numpy dtype {self.spec!r}: state {_show(state)} describes a structured, flexible or object dtype")
        if type(order) is not str or order not in ("<", ">", "|", "=") or (order == "|") != (self.itemsize == 1):
            raise _unsafe(f"numpy dtype {self.spec!r}: byte order {_show(order)} does not fit a {self.itemsize}-byte type")
        if order == "=":
            order = "<" if sys.byteorder == "little" else ">"
        self.str = order + self.spec


class _NdArray(_Record):
    """A numpy array: ``_reconstruct(ndarray, (0,), b'b')`` then BUILD, or ``_frombuffer`` (protocol 5)."""

    __slots__ = ("data", "dtype", "fortran", "shape")
    what = "numpy array"

    def __init__(self) -> None:
        self.data: bytes | bytearray | None = None

    def fill(self, shape: Any, dtype: Any, fortran: bool, data: Any, where: str) -> None:
        if type(dtype) is not _NpDType or dtype.str is None:
            raise _unsafe(f"{where}: expected a numpy dtype of numbers or bool, got {_kind(dtype)}")
        if type(data) not in (bytes, bytearray):
            raise _unsafe(f"{where}: array data is {_kind(data)}, not bytes (object arrays are refused)")
        self.shape = _int_tuple(shape, where, "shape")
        n = 1
        for d in self.shape:
            n *= d
        if n * dtype.itemsize != len(data):
            raise _unreadable(
                f"{where}: shape {self.shape} of {dtype.str} needs {n * dtype.itemsize} bytes; the pickle holds {len(data)}"
            )
        self.dtype, self.fortran, self.data = dtype, fortran, data

    def __setstate__(self, state: Any) -> None:
        where = "numpy array BUILD"
        if self.data is not None:
            raise _unsafe("the pickle builds one numpy array twice")
        if type(state) is not tuple or len(state) != 5 or type(state[0]) is not int or state[0] != 1:
            raise _unsafe(f"{where}: state {_show(state)} is not numpy's (1, shape, dtype, is_fortran, data)")
        _, shape, dtype, fortran, data = state
        if type(fortran) is not bool:
            raise _unsafe(f"{where}: is_fortran is {_kind(fortran)}, expected bool")
        self.fill(shape, dtype, fortran, data, where)


class _NpScalar(_Record):
    __slots__ = ("data", "dtype")
    what = "numpy scalar"

    def __init__(self, dtype: _NpDType, data: bytes) -> None:
        self.dtype, self.data = dtype, data


def _int_tuple(value: Any, where: str, what: str) -> tuple[int, ...]:
    """A tensor's or array's size/stride: a tuple (or list, torch.Size) of ints in [0, 2**63)."""
    if type(value) not in (tuple, list, torch.Size):
        raise _unreadable(f"{where}: {what} is {_kind(value)}; expected a tuple of ints")
    if len(value) > MAX_NDIM:
        raise _unreadable(f"{where}: {what} has {len(value)} dimensions; at most {MAX_NDIM} are read")
    for v in value:
        if type(v) is not int or not 0 <= v <= _INT64_MAX:
            raise _unreadable(f"{where}: {what} {_show(tuple(value))} holds {_show(v)}; expected ints in [0, 2**63)")
    return tuple(value)


# --------------------------------------------------------------------------------------------
# The allowlisted constructors. Each is a class (so NEWOBJ, REDUCE, INST and OBJ all reach the
# same __new__), read-only through _FrozenType; __new__ vets the arguments and returns plain
# data or a record, never an instance of the class.


class _Safe(metaclass=_FrozenType):
    __slots__ = ()
    pickle_name = "allowlisted"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise _unsafe(f"{cls.pickle_name} is allowlisted as a marker only; the pickle calls it with {_show(args)}")


def _expect_args(cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any], lo: int, hi: int) -> None:
    if kwargs or not lo <= len(args) <= hi:
        count = f"{lo}" if lo == hi else f"{lo} to {hi}"
        raise _unsafe(f"{cls.pickle_name} takes {count} positional arguments from a pickle; got {_show(args)} {_show(kwargs)}")


class _OrderedDictNew(_Safe):
    pickle_name = "collections.OrderedDict"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 0, 1)
        if not args:
            return OrderedDict()
        items = args[0]  # Python 2 pickled OrderedDict as OrderedDict([[k, v], ...])
        if type(items) is not list or any(type(p) not in (list, tuple) or len(p) != 2 for p in items):
            raise _unsafe(f"collections.OrderedDict: expected a list of key-value pairs, got {_show(items)}")
        return OrderedDict((p[0], p[1]) for p in items)


class _DefaultDictNew(_Safe):
    pickle_name = "collections.defaultdict"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 0, 1)  # the default factory (a global) is not kept: the value is a dict
        return {}


class _SetNew(_Safe):
    pickle_name = "builtins.set"
    frozen = False

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 0, 1)
        items = args[0] if args else ()
        if type(items) not in (list, tuple, set, frozenset):
            raise _unsafe(f"{cls.pickle_name}: expected a list of items, got {_kind(items)}")
        return frozenset(items) if cls.frozen else set(items)


class _FrozensetNew(_SetNew):
    pickle_name = "builtins.frozenset"
    frozen = True


class _ComplexNew(_Safe):
    pickle_name = "builtins.complex"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 0, 2)
        if any(type(a) not in (int, float) for a in args):
            raise _unsafe(f"builtins.complex: expected real and imaginary numbers, got {_show(args)}")
        return complex(*args)


class _BytearrayNew(_Safe):
    pickle_name = "builtins.bytearray"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 0, 2)
        if not args:
            return bytearray()
        if len(args) == 1 and type(args[0]) is bytes:
            return bytearray(args[0])
        if len(args) == 2 and type(args[0]) is str and args[1] == "latin-1":  # Python 3.0-3.2, protocols 0-2
            return bytearray(_latin1(args[0], cls.pickle_name))
        raise _unsafe(f"builtins.bytearray: expected bytes (or str and 'latin-1'), got {_show(args)}")


class _BytesNew(_Safe):
    pickle_name = "builtins.bytes"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 0, 0)  # protocols 0-2 write b'' as bytes()
        return b""


def _latin1(text: str, where: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError as e:
        raise _unreadable(f"{where}: a string meant to hold bytes has characters beyond U+00FF") from e


class _CodecsEncode(_Safe):
    pickle_name = "_codecs.encode"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # protocols 0-2 write bytes as _codecs.encode(str, 'latin1'); nothing else is accepted
        if kwargs or len(args) != 2 or type(args[0]) is not str or type(args[1]) is not str or args[1] != "latin1":
            raise _unsafe(
                f"_codecs.encode is accepted only as encode(str, 'latin1'); the pickle passes {_show(args)} {_show(kwargs)}"
            )
        return _latin1(args[0], cls.pickle_name)


class _PosixPathNew(_Safe):
    pickle_name = "pathlib.PurePosixPath"
    pure: type[PurePath] = PurePosixPath

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 0, 4096)
        if any(type(a) is not str for a in args):
            raise _unsafe(f"{cls.pickle_name}: expected path parts as str, got {_show(args)}")
        return cls.pure(*args)  # a pure path: string handling only, no filesystem access


class _WindowsPathNew(_PosixPathNew):
    pickle_name = "pathlib.PureWindowsPath"
    pure = PureWindowsPath


class _SizeNew(_Safe):
    pickle_name = "torch.Size"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 1, 1)
        return torch.Size(_int_tuple(args[0], "torch.Size", "argument"))


class _DeviceNew(_Safe):
    pickle_name = "torch.device"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 1, 2)
        kind = args[0]
        ok = type(kind) is str and 0 < len(kind) <= 32 and all(c.isascii() and (c.isalnum() or c in "_:") for c in kind)
        if not ok or (len(args) == 2 and (type(args[1]) is not int or not 0 <= args[1] < 1 << 16)):
            raise _unsafe(f"torch.device: expected a device type and index, got {_show(args)}")
        try:
            return torch.device(*args)  # parses the string; initialises no backend
        except (RuntimeError, ValueError) as e:
            raise _unreadable(f"torch.device{_show(args)}: {e}") from e


class _TensorType(_Safe):
    pickle_name = "torch.Tensor"  # the new_type argument of _rebuild_from_type_v2; calling it is refused


class _ParameterNew(_Safe):
    pickle_name = "torch.nn.parameter.Parameter"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 1, 2)
        return _parameter(args[0], args[1] if len(args) == 2 else True, None, None, cls.pickle_name)


class _RebuildTensor(_Safe):
    pickle_name = "torch._utils._rebuild_tensor"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 4, 4)
        storage, offset, size, stride = args
        return _tensor(storage, offset, size, stride, None, False, None, None, cls.pickle_name)


class _RebuildTensorV2(_Safe):
    pickle_name = "torch._utils._rebuild_tensor_v2"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 6, 7)
        storage, offset, size, stride, requires_grad, hooks = args[:6]
        metadata = args[6] if len(args) == 7 else None
        return _tensor(storage, offset, size, stride, None, requires_grad, hooks, metadata, cls.pickle_name)


class _RebuildTensorV3(_Safe):
    pickle_name = "torch._utils._rebuild_tensor_v3"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 7, 8)
        storage, offset, size, stride, requires_grad, hooks, dtype = args[:7]
        metadata = args[7] if len(args) == 8 else None
        if type(dtype) is not torch.dtype or dtype not in _DTYPE_NAMES:
            raise _unreadable(
                f"{cls.pickle_name}: dtype {_show(dtype)} is not one of the dtypes read: {', '.join(_DTYPE_NAMES.values())}"
            )
        return _tensor(storage, offset, size, stride, dtype, requires_grad, hooks, metadata, cls.pickle_name)


class _RebuildParameter(_Safe):
    pickle_name = "torch._utils._rebuild_parameter"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 3, 3)
        return _parameter(args[0], args[1], args[2], None, cls.pickle_name)


class _RebuildParameterWithState(_Safe):
    pickle_name = "torch._utils._rebuild_parameter_with_state"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 4, 4)
        return _parameter(args[0], args[1], args[2], args[3], cls.pickle_name)


class _RebuildFromTypeV2(_Safe):
    pickle_name = "torch._tensor._rebuild_from_type_v2"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 4, 4)
        func, new_type, fargs, state = args
        if func not in _TENSOR_REBUILDERS:
            raise _unsafe(
                f"{cls.pickle_name}: the function argument is {_kind(func)}; only torch's tensor rebuild functions are accepted"
            )
        if type(fargs) is not tuple:
            raise _unreadable(f"{cls.pickle_name}: arguments are {_kind(fargs)}, expected a tuple")
        value = func(*fargs)
        if new_type is _TensorType:
            if not _empty_state(state):
                raise _unreadable(
                    f"{cls.pickle_name}: a tensor carries Python attributes {_state_names(state)}, which are not converted"
                )
            return value
        if _is_stand_in_class(new_type):  # a tensor subclass we do not import: an inert record wrapping the tensor
            inst = PickledObject.__new__(new_type, value)
            if not _empty_state(state):
                inst.__setstate__(state)
            return inst
        raise _unsafe(f"{cls.pickle_name}: new_type is {_kind(new_type)}; expected torch.Tensor or a tensor subclass")


class _RebuildFromType(_RebuildFromTypeV2):
    pickle_name = "torch._tensor._rebuild_from_type"  # torch 1.x spelling, same arguments


class _LoadFromBytes(_Safe):
    """``TypedStorage.__reduce__``: a storage pickled as the bytes of a nested ``torch.save`` stream."""

    pickle_name = "torch.storage._load_from_bytes"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 1, 1)
        data = args[0]
        if type(data) is not bytes:
            raise _unsafe(f"{cls.pickle_name}: expected bytes, got {_kind(data)}")
        session = _session()
        if session.nesting:
            raise _unsafe(f"{cls.pickle_name} inside a storage that is itself nested bytes; torch never writes that")
        session.nesting += 1
        try:
            root = _read_stream(io.BytesIO(data), len(data), session, f"{cls.pickle_name}({len(data)} bytes)")
        finally:
            session.nesting -= 1
        if type(root) is not _StorageRecord:
            raise _unreadable(f"{cls.pickle_name}: the nested stream holds {_kind(root)}, not a storage")
        return root


class _Reconstructor(_Safe):
    """``copyreg._reconstructor(cls, base, state)``: how protocols 0-1 create plain class instances."""

    pickle_name = "copyreg._reconstructor"
    bases = frozenset({"object", "list", "dict", "set", "tuple", "str", "int", "float", "bytes"})

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 3, 3)
        target, base, state = args
        if not _is_stand_in_class(target):
            raise _unsafe(f"{cls.pickle_name}: class argument is {_kind(target)}; only classes unknown to us become records")
        if not (_is_stand_in_class(base) and base.module in _BUILTINS and base.qualname in cls.bases):
            raise _unsafe(f"{cls.pickle_name}: base argument is {_kind(base)}; expected object or a builtin container type")
        if base.qualname == "object" and state is None:
            return PickledObject.__new__(target)
        return PickledObject.__new__(target, state)


class _NdArrayType(_Safe):
    pickle_name = "numpy.ndarray"  # the subtype argument of _reconstruct; calling it is refused


class _NpReconstruct(_Safe):
    pickle_name = "numpy.core.multiarray._reconstruct"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # numpy pickles every array as _reconstruct(ndarray, (0,), b'b') and then BUILDs it; any other
        # shape would make numpy allocate it before the data arrives, so nothing else is accepted
        _expect_args(cls, args, kwargs, 3, 3)
        subtype, shape, typecode = args
        if (
            subtype is not _NdArrayType
            or type(shape) is not tuple
            or shape != (0,)
            or type(shape[0]) is not int
            or typecode != b"b"
        ):
            raise _unsafe(f"{cls.pickle_name} is accepted only as numpy writes it, (ndarray, (0,), b'b'); got {_show(args)}")
        return _NdArray()


class _NpFromBuffer(_Safe):
    pickle_name = "numpy.core.numeric._frombuffer"  # protocol 5: _frombuffer(buffer, dtype, shape, order)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 4, 4)
        buf, dtype, shape, order = args
        if order not in ("C", "F") or type(order) is not str:
            raise _unsafe(f"{cls.pickle_name}: order is {_show(order)}, expected 'C' or 'F'")
        array = _NdArray()
        array.fill(shape, dtype, order == "F", buf, cls.pickle_name)
        return array


_NP_SPECS = {
    f"{k}{n}": n
    for k, sizes in {"b": (1,), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (2, 4, 8), "c": (8, 16)}.items()
    for n in sizes
}


class _NpDTypeNew(_Safe):
    pickle_name = "numpy.dtype"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 1, 3)
        spec = args[0]
        if type(spec) is not str or spec not in _NP_SPECS or any(type(a) is not bool for a in args[1:]):
            raise _unsafe(f"numpy.dtype{_show(args)}: only bool, integer, float and complex dtypes are read (no object dtype)")
        return _NpDType(spec, _NP_SPECS[spec])


class _NpScalarNew(_Safe):
    pickle_name = "numpy.core.multiarray.scalar"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _expect_args(cls, args, kwargs, 2, 2)
        dtype, data = args
        if type(dtype) is not _NpDType or dtype.str is None:
            raise _unsafe(f"{cls.pickle_name}: expected a numpy dtype of numbers or bool, got {_kind(dtype)}")
        if type(data) is not bytes or len(data) != dtype.itemsize:
            raise _unsafe(f"{cls.pickle_name}: a {dtype.str} scalar needs {dtype.itemsize} bytes, got {_show(data)}")
        return _NpScalar(dtype, data)


_TENSOR_REBUILDERS = frozenset(
    {_RebuildTensor, _RebuildTensorV2, _RebuildTensorV3, _RebuildParameter, _RebuildParameterWithState}
)

# torch dtypes readable from a checkpoint: those safetensors (and distillgan's writer) has, plus complex128
_DTYPE_NAMES: dict[torch.dtype, str] = {
    getattr(torch, name): name
    for name in (
        "float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
        "float8_e8m0fnu", "complex64", "complex128", "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16",
        "uint8", "bool",
    )
    if hasattr(torch, name)
}  # fmt: skip
# torch/storage.py _dtype_to_storage_type_map: the storage classes that legacy and zip checkpoints name
_LEGACY_STORAGES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32, "ShortStorage": torch.int16,
    "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
}  # fmt: skip


def _build_allowlist() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): _OrderedDictNew,
        ("collections", "defaultdict"): _DefaultDictNew,
        ("_codecs", "encode"): _CodecsEncode,
        ("copyreg", "_reconstructor"): _Reconstructor,
        ("copy_reg", "_reconstructor"): _Reconstructor,
        ("torch", "Size"): _SizeNew,
        ("torch", "device"): _DeviceNew,
        ("torch", "Tensor"): _TensorType,
        ("torch._tensor", "Tensor"): _TensorType,
        ("torch.nn.parameter", "Parameter"): _ParameterNew,
        ("torch._utils", "_rebuild_tensor"): _RebuildTensor,
        ("torch._utils", "_rebuild_tensor_v2"): _RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor_v3"): _RebuildTensorV3,
        ("torch._utils", "_rebuild_parameter"): _RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _RebuildParameterWithState,
        ("torch._tensor", "_rebuild_from_type_v2"): _RebuildFromTypeV2,
        ("torch._tensor", "_rebuild_from_type"): _RebuildFromType,
        ("torch.storage", "_load_from_bytes"): _LoadFromBytes,
        ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", torch.uint8, True),
        ("torch", "UntypedStorage"): _StorageType("UntypedStorage", torch.uint8, True),
    }
    for module in _BUILTINS:
        table[(module, "set")] = _SetNew
        table[(module, "frozenset")] = _FrozensetNew
        table[(module, "complex")] = _ComplexNew
        table[(module, "bytearray")] = _BytearrayNew
        table[(module, "bytes")] = _BytesNew
    for name, dtype in _LEGACY_STORAGES.items():
        marker = _StorageType(name, dtype, False)
        table[("torch", name)] = marker
        table[("torch.cuda", name)] = marker  # torch < 0.4 named the CUDA classes
    for dtype, name in _DTYPE_NAMES.items():
        table[("torch", name)] = dtype  # torch.dtype.__reduce__ returns the attribute name
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x, numpy 2.x
        table[(module, "_reconstruct")] = _NpReconstruct
        table[(module, "scalar")] = _NpScalarNew
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        table[(module, "_frombuffer")] = _NpFromBuffer
    table[("numpy", "ndarray")] = _NdArrayType
    table[("numpy", "dtype")] = _NpDTypeNew
    for module in ("pathlib", "pathlib._local"):  # Python 3.13 moved the classes to pathlib._local
        for name in ("PosixPath", "PurePosixPath"):
            table[(module, name)] = _PosixPathNew
        for name in ("WindowsPath", "PureWindowsPath"):
            table[(module, name)] = _WindowsPathNew
    return table


_ALLOWLIST = _build_allowlist()
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(_ALLOWLIST)
"""The exact ``(module, name)`` pairs that resolve to something other than an inert stand-in."""

# torch names of tensor kinds the value tree cannot hold: refused by name rather than recorded
_UNSUPPORTED = {
    (module, name): "quantized tensors"
    for module in ("torch", "torch.cuda")
    for name in ("QInt8Storage", "QUInt8Storage", "QInt32Storage", "QUInt4x2Storage", "QUInt2x4Storage")
}
_UNSUPPORTED |= {
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


def _empty_state(state: Any) -> bool:
    """No Python attributes: None, {}, or a (dict, slots) pair of those (Python >= 3.11 writes None)."""
    if state is None or (type(state) in (dict, OrderedDict) and not state):
        return True
    return type(state) is tuple and len(state) == 2 and all(_empty_state(s) for s in state)


def _state_names(state: Any) -> str:
    if type(state) is tuple:
        return ", ".join(_state_names(s) for s in state if not _empty_state(s))
    if type(state) in (dict, OrderedDict):
        return _show(sorted(map(str, state))[:8])
    return _show(state)


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: torch.dtype | None, requires_grad: Any,
            hooks: Any, metadata: Any, fn: str) -> _TensorRecord:  # fmt: skip
    """Validate a tensor view (integers, bounds, expansion) before any torch function sees it."""
    if type(storage) is not _StorageRecord:
        raise _unsafe(f"{fn}: the storage argument is {_kind(storage)}; expected a storage of this file")
    if dtype is None:
        if storage.untyped:
            raise _unreadable(f"{fn}: an untyped storage needs a dtype (torch writes _rebuild_tensor_v3 for it)")
        dtype = storage.dtype
    if type(offset) is not int or not 0 <= offset <= _INT64_MAX:
        raise _unreadable(f"{fn}: storage offset {_show(offset)}; expected an int in [0, 2**63)")
    size = _int_tuple(size, fn, "size")
    stride = _int_tuple(stride, fn, "stride")
    if len(size) != len(stride):
        raise _unreadable(f"{fn}: size {size} and stride {stride} differ in length")
    if type(requires_grad) is not bool:
        raise _unreadable(f"{fn}: requires_grad is {_kind(requires_grad)}, expected bool")
    if requires_grad and not (dtype.is_floating_point or dtype.is_complex):
        raise _unreadable(f"{fn}: requires_grad on a {dtype} tensor (only floating and complex tensors have gradients)")
    if hooks is not None and not (type(hooks) in (dict, OrderedDict) and not hooks):
        raise _unreadable(f"{fn}: backward hooks {_show(hooks)} are not converted")
    flags = {}
    if metadata is not None:
        if type(metadata) not in (dict, OrderedDict) or any(
            k not in ("conj", "neg") or type(v) is not bool for k, v in metadata.items()
        ):
            raise _unreadable(f"{fn}: tensor metadata {_show(metadata)}; expected {{'conj': bool, 'neg': bool}}")
        flags = {k: v for k, v in metadata.items() if v}
    if flags.get("conj") and not dtype.is_complex:
        raise _unreadable(f"{fn}: conjugate bit on a {dtype} tensor")
    itemsize = dtype.itemsize
    if storage.order_unknown and itemsize > 1:
        raise _unreadable(f"{fn}: a {dtype} tensor in a big-endian untyped storage; its byte order is ambiguous")
    capacity = storage.nbytes // itemsize
    numel = 1
    for d in size:
        numel *= d
    if numel > capacity:
        raise _limit(
            f"{fn}: a {dtype} view of {numel} elements over a storage of {capacity}: expanded or overlapping views are refused"
        )
    if numel:
        extent = offset + 1 + sum((d - 1) * s for d, s in zip(size, stride))
        if extent > capacity:
            raise _unreadable(
                f"{fn}: view (offset {offset}, size {size}, stride {stride}) reaches element {extent - 1} of a {capacity}-element storage"
            )
    elif offset > capacity:
        raise _unreadable(f"{fn}: storage offset {offset} is past the end of a {capacity}-element storage")
    _session().add_view(storage, dtype, offset, size, stride, numel * itemsize)
    return _TensorRecord(storage, offset, size, stride, dtype, requires_grad, bool(flags.get("conj")), bool(flags.get("neg")))


def _parameter(data: Any, requires_grad: Any, hooks: Any, state: Any, fn: str) -> _ParameterRecord:
    if type(data) is not _TensorRecord:
        raise _unsafe(f"{fn}: data is {_kind(data)}; expected a tensor of this file")
    if type(requires_grad) is not bool:
        raise _unreadable(f"{fn}: requires_grad is {_kind(requires_grad)}, expected bool")
    if requires_grad and not (data.dtype.is_floating_point or data.dtype.is_complex):
        raise _unreadable(f"{fn}: requires_grad on a {data.dtype} parameter")
    if hooks is not None and not (type(hooks) in (dict, OrderedDict) and not hooks):
        raise _unreadable(f"{fn}: backward hooks {_show(hooks)} are not converted")
    if not _empty_state(state):
        raise _unreadable(f"{fn}: the parameter carries Python attributes {_state_names(state)}, which are not converted")
    return _ParameterRecord(data, requires_grad)


# --------------------------------------------------------------------------------------------
# The session: what one read_pickled call has seen (stand-in classes, storages, views)


class _Session:
    def __init__(self, limits: PickleLimits) -> None:
        self.limits = limits
        self.classes: dict[tuple[str, str], type[PickledObject]] = {}
        self.storage_bytes = 0
        self.views: set[tuple[int, torch.dtype, int, tuple[int, ...], tuple[int, ...]]] = set()
        self.view_bytes = 0
        self.nesting = 0

    def resolve(self, module: Any, name: Any) -> Any:
        """find_class: the allowlist by exact pair, a refusal for unsupported torch kinds, else a stand-in class."""
        if type(module) is not str or type(name) is not str:
            raise _unsafe(f"global {_show(module)}.{_show(name)}: module and name must be str")
        key = (module, name)
        found = _ALLOWLIST.get(key)
        if found is not None:
            return found
        if key in _UNSUPPORTED:
            raise _unreadable(f"the file holds {_UNSUPPORTED[key]} ({module}.{name}), which are not converted")
        cls = self.classes.get(key)
        if cls is None:
            if len(self.classes) >= self.limits.max_classes:
                raise _limit(f"the file names more than {self.limits.max_classes} distinct unknown globals (limit max_classes)")
            label = "".join(c if c.isascii() and c.isalnum() else "_" for c in f"{module}_{name}")[:60]
            attrs = {
                "__slots__": (),
                "module": module,
                "qualname": name,
                "pickle_name": f"{module}.{name}",
                "__module__": __name__,
            }
            made: Any = _FrozenType(f"PickledObject_{label}", (PickledObject,), attrs)
            self.classes[key] = cls = made
        return cls

    def add_storage(self, nbytes: int) -> None:
        self.storage_bytes += nbytes

    def add_view(
        self,
        storage: _StorageRecord,
        dtype: torch.dtype,
        offset: int,
        size: tuple[int, ...],
        stride: tuple[int, ...],
        nbytes: int,
    ) -> None:
        key = (id(storage), dtype, offset, size, stride)  # storages live as long as the session: ids are stable
        if key not in self.views:
            self.views.add(key)
            self.view_bytes += nbytes

    def check_views(self) -> None:
        budget = self.limits.view_bytes_factor * self.storage_bytes + self.limits.view_bytes_extra
        if self.view_bytes > budget:
            raise _limit(
                f"the file's {len(self.views)} distinct tensor views span {self.view_bytes} bytes over {self.storage_bytes} "
                f"bytes of storage; at most {budget} (limits view_bytes_factor, view_bytes_extra)"
            )


_SESSION: contextvars.ContextVar[_Session] = contextvars.ContextVar("distillgan_pickled_session")


def _session() -> _Session:
    try:
        return _SESSION.get()
    except LookupError:
        raise _unsafe("allowlisted constructors run only inside read_pickled") from None


# --------------------------------------------------------------------------------------------
# Walking one pickle before unpickling it


_OPS = {op.code.encode("latin-1"): op for op in pickletools.opcodes}
_LENGTH_PREFIX = {
    pickletools.TAKEN_FROM_ARGUMENT1: struct.Struct("<B"),
    pickletools.TAKEN_FROM_ARGUMENT4: struct.Struct("<i"),
    pickletools.TAKEN_FROM_ARGUMENT4U: struct.Struct("<I"),
    pickletools.TAKEN_FROM_ARGUMENT8U: struct.Struct("<Q"),
}
_NUMBER_LINES = {"INT", "LONG", "FLOAT", "PUT", "GET"}
_MEMO_WRITES = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}


def _scan_pickle(f: BinaryIO, start: int, size: int, limits: PickleLimits, where: str) -> int:
    """Walk the opcodes of the pickle at ``start`` without building anything; return where it ends.

    Refuses what would make the C unpickler work out of proportion to the bytes: memo indices
    beyond the memo writes so far (the C memo is an array resized to twice the index), text
    numbers longer than MAX_NUMBER_CHARS (decimal parsing is quadratic), declared lengths past
    the end, EXT opcodes (resolved through a process-wide cache before find_class is asked).
    """
    cap = min(size, start + limits.max_pickle_bytes)
    f.seek(start)
    pos = start
    memo_writes = 0

    def past(n: int, what: str) -> InputError:
        if cap < size and pos + n <= size:
            return _limit(f"{where}: the pickle runs past {limits.max_pickle_bytes} bytes (limit max_pickle_bytes)")
        return _unreadable(f"{where}: {what} at byte {pos} runs past the end of the data (truncated pickle)")

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if pos + n > cap:
            raise past(n, what)
        data = f.read(n)
        if len(data) != n:
            raise _unreadable(f"{where}: {what} at byte {pos} is truncated")
        pos += n
        return data

    def line(limit: int, what: str) -> bytes:
        nonlocal pos
        n = min(limit + 1, cap - pos)
        data = f.readline(n) if n > 0 else b""
        if not data.endswith(b"\n"):
            if len(data) > limit:
                raise _limit(f"{where}: {what} at byte {pos} is longer than {limit} characters")
            raise past(len(data) + 1, what)
        pos += len(data)
        return data

    while True:
        at = pos
        op = _OPS.get(take(1, "opcode"))
        if op is None:
            f.seek(at)
            raise _unreadable(f"{where}: byte {f.read(1)!r} at {at} is not a pickle opcode")
        name, arg = op.name, op.arg
        if name in ("EXT1", "EXT2", "EXT4"):
            raise _unsafe(f"{where}: {name} at byte {at}: extension-registry codes resolve through a process-wide cache; refused")
        value: Any = None
        if arg is None:
            pass
        elif arg.n >= 0:
            value = take(arg.n, name)
        elif arg.n == pickletools.UP_TO_NEWLINE:
            limit = MAX_NUMBER_CHARS + 2 if name in _NUMBER_LINES else cap - pos
            value = line(limit, name)
            if arg.name == "stringnl_noescape_pair":
                line(cap - pos, name)
        else:
            prefix = _LENGTH_PREFIX[arg.n]
            (n,) = prefix.unpack(take(prefix.size, name))
            if n < 0:
                raise _unreadable(f"{where}: {name} at byte {at} declares a negative length {n}")
            if pos + n > cap:
                raise past(n, f"{name} of {n} bytes")
            f.seek(n, os.SEEK_CUR)
            pos += n
        if name == "PROTO" and value[0] > pickle.HIGHEST_PROTOCOL:
            raise _unreadable(f"{where}: pickle protocol {value[0]} at byte {at}; at most {pickle.HIGHEST_PROTOCOL} is known")
        if name in ("PUT", "BINPUT", "LONG_BINPUT"):
            try:
                index = int(value) if name == "PUT" else int.from_bytes(value, "little")
            except ValueError:
                raise _unreadable(f"{where}: PUT argument {_show(value)} at byte {at} is not a number") from None
            if not 0 <= index <= memo_writes:
                raise _unsafe(
                    f"{where}: {name} {index} at byte {at} after {memo_writes} memo writes (picklers number them in order)"
                )
        if name in _MEMO_WRITES:
            memo_writes += 1
        if name == "FRAME" and pos + int.from_bytes(value, "little") > cap:
            raise past(int.from_bytes(value, "little"), "FRAME")
        if name == "STOP":
            return pos


class _Unpickler(pickle.Unpickler):
    """The C unpickler with every global resolved by the session and persistent ids by the reader."""

    def __init__(self, data: bytes, session: _Session, persistent: Callable[[Any], Any] | None, where: str) -> None:
        super().__init__(io.BytesIO(data), fix_imports=False, encoding="ASCII", errors="strict")
        self._session_ = session
        self._persistent = persistent
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        return self._session_.resolve(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise _unreadable(f"{self._where}: persistent id {_show(pid)} in a pickle that is not part of a torch checkpoint")
        return self._persistent(pid)


def _load_one(f: BinaryIO, start: int, size: int, session: _Session, where: str,
              persistent: Callable[[Any], Any] | None = None) -> tuple[Any, int]:  # fmt: skip
    """Scan, then unpickle, the pickle at ``start``; return its value and where it ends."""
    end = _scan_pickle(f, start, size, session.limits, where)
    f.seek(start)
    data = f.read(end - start)
    try:
        value = _Unpickler(data, session, persistent, where).load()
    except DistillganError:
        raise
    except MemoryError as e:
        raise _limit(f"{where}: out of memory while unpickling") from e
    except Exception as e:  # the C unpickler and the builtins it calls raise many types for malformed input
        raise _unreadable(f"{where}: {type(e).__name__}: {_show(str(e), 200)}") from e
    return value, end


# --------------------------------------------------------------------------------------------
# The three kinds of file


def _read_stream(f: BinaryIO, size: int, session: _Session, where: str) -> Any:
    f.seek(0)
    head = f.read(16)
    if not head:
        raise _unreadable(f"{where}: the file is empty")
    if head.startswith(b"PK\x03\x04"):
        return _read_torch_zip(f, size, session, where)
    if size >= 262:
        f.seek(257)
        if f.read(5) == b"ustar":
            raise _unreadable(f"{where}: a tar archive: torch's pre-0.4 tar checkpoint format is not supported")
    first, end = _load_one(f, 0, size, session, f"{where}, pickle at byte 0")
    if type(first) is int and first == TORCH_MAGIC_NUMBER and end < size:
        return _read_legacy_stream(f, end, size, session, where)
    if end != size:
        raise _unreadable(f"{where}: {size - end} bytes follow the pickle that ends at byte {end}")
    return first


def _read_legacy_stream(f: BinaryIO, pos: int, size: int, session: _Session, where: str) -> Any:
    """torch < 1.6 (torch/serialization.py ``_legacy_save``): after the magic number, four pickles, then the storages."""
    version, pos = _load_one(f, pos, size, session, f"{where}, protocol version pickle")
    if type(version) is not int or version != TORCH_LEGACY_PROTOCOL_VERSION:
        raise _unreadable(f"{where}: legacy torch protocol version {_show(version)}; expected {TORCH_LEGACY_PROTOCOL_VERSION}")
    sys_info, pos = _load_one(f, pos, size, session, f"{where}, sys_info pickle")
    if type(sys_info) is not dict:
        raise _unreadable(f"{where}: sys_info is {_kind(sys_info)}; expected a dict")
    # storage bytes are always little-endian in this format (THPStorage_writeFileRaw converts), whatever sys_info says
    storages: dict[str, _StorageRecord] = {}

    def persistent(pid: Any) -> Any:
        kind = pid[0] if type(pid) is tuple and pid else None
        if kind == "module" and len(pid) == 4:  # ('module', class, source file, source): a pickled nn.Module's class
            if not _is_stand_in_class(pid[1]):
                raise _unsafe(f"{where}: module persistent id names {_kind(pid[1])}")
            return pid[1]
        if kind != "storage" or len(pid) != 6:
            raise _unreadable(f"{where}: persistent id {_show(pid)}; expected ('storage', type, key, location, numel, view)")
        _, stype, key, location, numel, view = pid
        if view is not None:
            raise _unreadable(f"{where}: storage {_show(key)} is a view of another storage (torch < 0.4); not supported")
        return _declare_storage(storages, stype, key, location, numel, size, session, where)

    root, pos = _load_one(f, pos, size, session, f"{where}, data pickle", persistent)
    keys, pos = _load_one(f, pos, size, session, f"{where}, storage keys pickle")
    if (
        type(keys) is not list
        or any(type(k) is not str for k in keys)
        or len(set(keys)) != len(keys)
        or set(keys) != set(storages)
    ):
        raise _unreadable(
            f"{where}: storage keys {_show(keys)} do not list each of the {len(storages)} storages the data uses once"
        )
    need = sum(8 + storages[k].nbytes for k in keys)
    if pos + need > size:
        raise _unreadable(f"{where}: {len(keys)} storages need {need} bytes after byte {pos}; the file has {size - pos}")
    for key in keys:
        record = storages[key]
        f.seek(pos)
        (numel,) = struct.unpack("<q", f.read(8))
        if numel * record.dtype.itemsize != record.nbytes:
            raise _unreadable(
                f"{where}: storage {_show(key)} at byte {pos} holds {numel} elements; the data pickle declared {record.nbytes // record.dtype.itemsize}"
            )
        record.data = _read_exactly(f, pos + 8, record.nbytes, where)
        pos += 8 + record.nbytes
    if pos != size:
        raise _unreadable(f"{where}: {size - pos} bytes follow the last storage (byte {pos})")
    return root


def _declare_storage(storages: dict[str, _StorageRecord], stype: Any, key: Any, location: Any, numel: Any, room: int,
                     session: _Session, where: str) -> _StorageRecord:  # fmt: skip
    """The storage a persistent id names: one record per key, consistent across references."""
    if type(stype) is not _StorageType:
        raise _unreadable(f"{where}: storage type {_kind(stype)} is not one of {', '.join(_LEGACY_STORAGES)}, UntypedStorage")
    if type(key) is not str or type(location) is not str or type(numel) is not int or not 0 <= numel <= _INT64_MAX:
        raise _unreadable(
            f"{where}: storage id ({_show(key)}, {_show(location)}, {_show(numel)}); expected str key, str location, int size"
        )
    nbytes = numel * stype.dtype.itemsize
    known = storages.get(key)
    if known is not None:
        if known.dtype != stype.dtype or known.untyped != stype.untyped or known.nbytes != nbytes:
            raise _unreadable(
                f"{where}: storage {_show(key)} is referenced as {known.dtype} x{known.nbytes} bytes and as {stype.dtype} x{nbytes}"
            )
        return known
    if nbytes > room:
        raise _unreadable(f"{where}: storage {_show(key)} declares {nbytes} bytes; the data holds at most {room}")
    record = _StorageRecord(key, stype, nbytes, where)
    storages[key] = record
    session.add_storage(nbytes)
    return record


def _read_exactly(f: BinaryIO, offset: int, n: int, where: str) -> bytearray:
    """``n`` bytes at ``offset`` into a new bytearray (one copy, no intermediate bytes object)."""
    buf = bytearray(n)
    view = memoryview(buf)
    f.seek(offset)
    got = 0
    while got < n:
        k = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            raise _unreadable(f"{where}: {n} bytes at byte {offset} run past the end of the file")
        got += k
    return buf


_TORCH_MEMBERS = (
    "data.pkl",
    "byteorder",
    "version",
    ".data/version",
    ".format_version",
    ".storage_alignment",
    ".data/serialization_id",
)


def _read_torch_zip(f: BinaryIO, size: int, session: _Session, where: str) -> Any:
    """torch >= 1.6: a zip of ``<prefix>/data.pkl`` and one stored member per storage (torch/serialization.py ``_save``)."""
    _check_directory_size(f, size, where)
    try:
        zf = zipfile.ZipFile(f)
        infos = zf.infolist()
    except Exception as e:  # zipfile raises BadZipFile, OSError, EOFError, ValueError, struct.error ... for damaged files
        raise _unreadable(f"{where}: not a readable zip: {type(e).__name__}: {_show(str(e), 160)}") from e
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.orig_filename
        if name in members:
            raise _unreadable(f"{where}: the zip holds two members named {_show(name)}")
        members[name] = info
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in members):
        raise _unreadable(
            f"{where}: a TorchScript archive (torch.jit.save); its code is not read. Save its state_dict with torch.save instead"
        )
    roots = [n for n in members if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(roots) != 1:
        raise _unreadable(f"{where}: a zip but not a torch checkpoint: expected one '<name>/data.pkl', found {_show(roots)}")
    prefix = roots[0][: -len("data.pkl")]
    for name in members:
        rest = name[len(prefix) :] if name.startswith(prefix) else None
        if rest is None or not (rest in _TORCH_MEMBERS or (rest.startswith("data/") and rest.count("/") == 1 and len(rest) > 5)):
            raise _unreadable(f"{where}: member {_show(name)} is not part of a torch checkpoint")
    byteorder = _small_member(f, zf, members.get(prefix + "byteorder"), size, where)
    if byteorder not in (None, b"little", b"big"):
        raise _unreadable(f"{where}: byteorder member holds {_show(byteorder)}; expected 'little' or 'big'")
    swap = byteorder == b"big"  # storages are byteswapped to little-endian (this host's order; see FORMAT.md big-endian-host)
    version = _small_member(f, zf, members.get(prefix + "version"), size, where)
    if version is not None and not version.strip().isdigit():
        raise _unreadable(f"{where}: version member holds {_show(version)}; expected a decimal number")
    pkl_info = members[prefix + "data.pkl"]
    if pkl_info.file_size > session.limits.max_pickle_bytes:
        raise _limit(
            f"{where}: data.pkl is {pkl_info.file_size} bytes; the limit is {session.limits.max_pickle_bytes} (max_pickle_bytes)"
        )
    data_pkl = _member_bytes(f, zf, pkl_info, size, session.limits.max_pickle_bytes, where)
    storages: dict[str, _StorageRecord] = {}
    read_total = 0

    def persistent(pid: Any) -> Any:
        nonlocal read_total
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"):
            raise _unreadable(f"{where}: persistent id {_show(pid)}; expected ('storage', type, key, location, numel)")
        _, stype, key, location, numel = pid
        known = key in storages
        record = _declare_storage(storages, stype, key, location, numel, size, session, where)
        if known:
            return record
        info = members.get(f"{prefix}data/{key}")
        if info is None:
            raise _unreadable(f"{where}: storage {_show(key)} has no member {_show(prefix + 'data/' + key)}")
        if info.file_size != record.nbytes:
            raise _unreadable(
                f"{where}: member {_show(info.orig_filename)} holds {info.file_size} bytes; its persistent id declares {record.nbytes}"
            )
        if info.compress_type != zipfile.ZIP_STORED:
            raise _unreadable(
                f"{where}: storage member {_show(info.orig_filename)} is compressed; torch.save stores storages uncompressed"
            )
        read_total += record.nbytes
        if read_total > size:  # overlapping members would let a small file read its bytes many times
            raise _limit(f"{where}: storages total more bytes ({read_total}) than the file holds ({size})")
        record.data = _member_bytes(f, zf, info, size, record.nbytes, where)
        if swap and record.dtype.itemsize > 1:
            _byteswap(record.data, record.dtype)
        record.order_unknown = swap and stype.untyped
        return record

    root, end = _load_one(io.BytesIO(data_pkl), 0, len(data_pkl), session, f"{where}, {prefix}data.pkl", persistent)
    if end != len(data_pkl):
        raise _unreadable(f"{where}: {len(data_pkl) - end} bytes follow the pickle in {prefix}data.pkl")
    return root


def _check_directory_size(f: BinaryIO, size: int, where: str) -> None:
    """zipfile reads the whole central directory into memory: bound it first (APPNOTE 4.3.16, 4.3.14)."""
    tail = min(size, 0xFFFF + 22)
    f.seek(size - tail)
    data = f.read(tail)
    at = data.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(data):
        return  # zipfile will refuse it
    cd_size = int.from_bytes(data[at + 12 : at + 16], "little")
    if cd_size == 0xFFFFFFFF and at >= 20 and data[at - 20 : at - 16] == b"PK\x06\x07":
        record = int.from_bytes(data[at - 12 : at - 4], "little")
        if 0 <= record <= size - 56:
            f.seek(record)
            zip64 = f.read(56)
            if zip64[:4] == b"PK\x06\x06":
                cd_size = int.from_bytes(zip64[40:48], "little")
    if cd_size > MAX_DIRECTORY_BYTES:
        raise _limit(f"{where}: the zip's central directory is {cd_size} bytes; at most {MAX_DIRECTORY_BYTES} are read")


_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # APPNOTE 4.3.7: signature, 5 x u16, crc, sizes, name and extra lengths


def _member_bytes(f: BinaryIO, zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, limit: int, where: str) -> bytearray:
    """A member's bytes, at most ``limit`` of them, CRC checked. Stored members are read in place."""
    name = _show(info.orig_filename)
    if info.flag_bits & 0x1:
        raise _unreadable(f"{where}: member {name} is encrypted")
    if info.compress_type != zipfile.ZIP_STORED:
        try:
            with zf.open(info) as member:
                inflated = member.read(limit + 1)  # bounded: a deflate bomb stops at limit + 1 bytes
        except Exception as e:
            raise _unreadable(f"{where}: member {name}: {type(e).__name__}: {_show(str(e), 160)}") from e
        if len(inflated) > limit:
            raise _limit(f"{where}: member {name} decompresses to more than {limit} bytes")
        return bytearray(inflated)
    if info.file_size != info.compress_size or info.file_size > limit:
        raise _unreadable(
            f"{where}: stored member {name} declares {info.file_size} bytes (compressed {info.compress_size}); expected at most {limit}"
        )
    f.seek(info.header_offset)
    header = f.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise _unreadable(f"{where}: member {name} has no local header at byte {info.header_offset}")
    name_len, extra_len = _LOCAL_HEADER.unpack(header)[-2:]
    local_name = f.read(name_len)
    if local_name != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437"):
        raise _unreadable(f"{where}: local header name {_show(local_name)} differs from central directory name {name}")
    start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    if start + info.file_size > size:
        raise _unreadable(f"{where}: member {name} runs past the end of the file")
    data = _read_exactly(f, start, info.file_size, where)
    if zlib.crc32(data) != info.CRC:
        raise _unreadable(f"{where}: member {name} fails its CRC-32 check (damaged file)")
    return data


def _small_member(f: BinaryIO, zf: zipfile.ZipFile, info: zipfile.ZipInfo | None, size: int, where: str) -> bytes | None:
    if info is None:
        return None
    if info.file_size > MAX_SMALL_MEMBER:
        raise _unreadable(f"{where}: member {_show(info.orig_filename)} is {info.file_size} bytes; expected a short text")
    return bytes(_member_bytes(f, zf, info, size, MAX_SMALL_MEMBER, where))


def _byteswap(data: bytearray, dtype: torch.dtype) -> None:
    """Big-endian storage bytes to little-endian, in place (complex numbers swap each half)."""
    unit = dtype.itemsize // 2 if dtype.is_complex else dtype.itemsize
    if unit > 1 and data:
        lanes = torch.frombuffer(data, dtype=torch.uint8).view(-1, unit)
        lanes.copy_(lanes.flip(1))


# --------------------------------------------------------------------------------------------
# Records to real tensors and arrays, once every bound has been checked


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as e:
        raise InputError("this file holds numpy arrays; install numpy to convert it", code="numpy-unavailable") from e
    return numpy


class _Materialiser:
    """Replace records by tensors/arrays in one pass over the unique objects (lists and dicts in place)."""

    def __init__(self, limits: PickleLimits) -> None:
        self.limits = limits
        self.done: dict[int, Any] = {}
        self.pinned: list[Any] = []  # originals stay alive, so an id in `done` is never reused by a new object
        self.open_immutables: dict[int, bool] = {}  # tuples/frozensets being rebuilt -> seen again inside themselves
        self.path: list[str] = ["$"]

    def where(self) -> str:
        return "".join(self.path)

    def run(self, obj: Any) -> Any:
        return self.visit(obj)

    def visit(self, obj: Any) -> Any:
        kind = type(obj)
        if kind in _ATOMS or isinstance(obj, type):
            return obj
        key = id(obj)
        if key in self.done:
            return self.done[key]
        if key in self.open_immutables:
            self.open_immutables[key] = True
            return obj
        if len(self.path) > self.limits.max_depth:
            raise _limit(f"{self.where()}: nested deeper than {self.limits.max_depth} levels (limit max_depth)")
        self.pinned.append(obj)
        handler = _MATERIALISE.get(kind)
        if handler is not None:
            result = handler(self, obj)
        elif isinstance(obj, PickledObject):
            result = self.stand_in(obj)
        else:
            result = obj
        self.done[key] = result
        return result

    def child(self, step: str, value: Any) -> Any:
        self.path.append(step)
        try:
            return self.visit(value)
        finally:
            self.path.pop()

    def list_(self, obj: list[Any]) -> list[Any]:
        self.done[id(obj)] = obj
        for i, v in enumerate(obj):
            if type(v) not in _ATOMS:
                new = self.child(f"[{i}]", v)
                if new is not v:
                    obj[i] = new
        return obj

    def dict_(self, obj: dict[Any, Any]) -> dict[Any, Any]:
        self.done[id(obj)] = obj
        changed = False
        items = list(obj.items())
        for i, (k, v) in enumerate(items):
            nk = k if type(k) in _ATOMS else self.child(f"[key {_show(k, 40)}]", k)
            nv = v if type(v) in _ATOMS else self.child(_step(k), v)
            if nk is not k or nv is not v:
                items[i] = (nk, nv)
                changed = True
        if changed:
            obj.clear()
            obj.update(items)
        if type(obj) is OrderedDict:
            attrs = vars(obj)
            for k, v in list(attrs.items()):
                attrs[k] = self.child(_step(k), v)
        return obj

    def set_(self, obj: set[Any]) -> set[Any]:
        self.done[id(obj)] = obj
        old = list(obj)
        items = [self.child("{}", v) for v in old]
        if any(n is not o for n, o in zip(items, old)):
            obj.clear()
            obj.update(items)
        return obj

    def immutable(self, obj: tuple[Any, ...] | frozenset[Any]) -> Any:
        key = id(obj)
        self.open_immutables[key] = False
        try:
            items = [v if type(v) in _ATOMS else self.child(f"[{i}]", v) for i, v in enumerate(obj)]
        finally:
            cyclic = self.open_immutables.pop(key)
        if all(n is o for n, o in zip(items, obj)):
            return obj
        if cyclic:
            raise _unreadable(f"{self.where()}: a cycle passes through a {type(obj).__name__} that holds tensors or arrays")
        return tuple(items) if type(obj) is tuple else frozenset(items)

    def stand_in(self, obj: PickledObject) -> PickledObject:
        self.done[id(obj)] = obj
        obj.args = tuple(self.child(f".__args__[{i}]", v) for i, v in enumerate(obj.args))
        obj.kwargs = {k: self.child(f".__kwargs__{_step(k)}", v) for k, v in obj.kwargs.items()}
        obj.state = self.child(".__state__", obj.state)
        obj.items = [self.child(f".__items__[{i}]", v) for i, v in enumerate(obj.items)]
        obj.dict_items = [
            (self.child(".__dictitems__[key]", k), self.child(f".__dictitems__{_step(k)}", v)) for k, v in obj.dict_items
        ]
        return obj

    def tensor(self, rec: _TensorRecord) -> torch.Tensor:
        if rec.dtype is torch.bool:
            rec.storage.check_bool()
        t = torch.empty((0,), dtype=rec.dtype).set_(rec.storage.storage(), rec.offset, rec.size, rec.stride)
        if rec.conj or rec.neg:
            flags = {name: True for name, on in (("conj", rec.conj), ("neg", rec.neg)) if on}
            torch._C._set_tensor_metadata(t, flags)  # type: ignore[attr-defined]  # what torch's _rebuild_tensor_v2 does with the metadata argument
        if rec.requires_grad:
            t.requires_grad_(True)
        return t

    def parameter(self, rec: _ParameterRecord) -> torch.nn.Parameter:
        data = self.visit(rec.data)
        return torch.nn.Parameter(data.detach(), requires_grad=rec.requires_grad)

    def storage(self, rec: _StorageRecord) -> torch.UntypedStorage:
        return rec.storage()

    def ndarray(self, rec: _NdArray) -> Any:
        np = _numpy()
        if rec.data is None:
            raise _unreadable(f"{self.where()}: a numpy array without its BUILD state")
        assert rec.dtype.str is not None
        dtype = np.dtype(rec.dtype.str)
        order = "F" if rec.fortran else "C"
        if not rec.data:
            return np.empty(rec.shape, dtype=dtype, order=order)
        data = rec.data if type(rec.data) is bytearray else bytearray(rec.data)
        return np.frombuffer(data, dtype=dtype).reshape(rec.shape, order=order)

    def np_scalar(self, rec: _NpScalar) -> Any:
        np = _numpy()
        assert rec.dtype.str is not None
        return np.frombuffer(rec.data, dtype=np.dtype(rec.dtype.str))[0]

    def np_dtype(self, rec: _NpDType) -> Any:
        if rec.str is None:
            raise _unreadable(f"{self.where()}: a numpy dtype without its BUILD state")
        return _numpy().dtype(rec.str)


_ATOMS = frozenset(
    {type(None), bool, int, float, complex, str, bytes, bytearray, torch.dtype, torch.device, torch.Size,
     PurePosixPath, PureWindowsPath, _StorageType}
)  # fmt: skip
_MATERIALISE: dict[type, Callable[[_Materialiser, Any], Any]] = {
    list: _Materialiser.list_,
    dict: _Materialiser.dict_,
    OrderedDict: _Materialiser.dict_,
    set: _Materialiser.set_,
    tuple: _Materialiser.immutable,
    frozenset: _Materialiser.immutable,
    _TensorRecord: _Materialiser.tensor,
    _ParameterRecord: _Materialiser.parameter,
    _StorageRecord: _Materialiser.storage,
    _NdArray: _Materialiser.ndarray,
    _NpScalar: _Materialiser.np_scalar,
    _NpDType: _Materialiser.np_dtype,
}


def _step(key: Any) -> str:
    """One step of a ``$.a.b[3]["odd key"]`` path."""
    if type(key) is str:
        return f".{key}" if key.isidentifier() else f"[{_show(key, 60)}]"
    return f"[{_show(key, 60)}]"  # _show: an int key of thousands of digits is never formatted in decimal


# --------------------------------------------------------------------------------------------
# Public entry points


def _open_input(path: str | os.PathLike[str], limits: PickleLimits) -> tuple[BinaryIO, int]:
    """Open ``path`` as a regular file without blocking on a FIFO or device."""
    shown = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(shown, flags)
    except OSError as e:
        raise open_error(e, shown) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise not_regular_error(shown, st.st_mode)
        if st.st_size > limits.max_file_bytes:
            raise FileAccessError(
                f"{shown!r} is {st.st_size} bytes; the limit is {limits.max_file_bytes} (max_file_bytes)", code="file-too-large"
            )
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def read_pickled(path: str | os.PathLike[str], *, limits: PickleLimits = DEFAULT_LIMITS) -> Any:
    """Read a torch checkpoint (zip or legacy stream) or a plain pickle without running it.

    Returns the object tree the file holds: builtin containers and scalars, ``OrderedDict``,
    torch tensors and ``nn.Parameter`` (viewing buffers this call allocated and filled from the
    file), numpy arrays and scalars, ``torch.device``/``torch.Size``/dtypes, pure paths, and
    :class:`PickledObject` stand-ins for everything else. Raises
    :class:`~distillgan.errors.FileAccessError` for the path and
    :class:`~distillgan.errors.InputError` (codes in the module docstring) for the content.
    """
    f, size = _open_input(path, limits)
    where = _show(os.fspath(path), 120)
    session = _Session(limits)
    token = _SESSION.set(session)
    try:
        with f:
            root = _read_stream(f, size, session, where)
        session.check_views()
        return _Materialiser(limits).run(root)
    finally:
        _SESSION.reset(token)


def to_plain_tree(obj: Any, *, limits: PickleLimits = DEFAULT_LIMITS) -> Any:
    """Turn :func:`read_pickled`'s result into the value tree the writer stores (rules: module docstring).

    Shared references are expanded (tensors stay the same objects, so tied tensors stay tied).
    A first pass computes the expanded size over the unique objects only, so a tree that would
    expand past ``limits.max_nodes`` nodes or ``limits.max_depth`` levels is refused
    (``convert-limit``) before anything is built. Cycles and values the tree cannot hold raise
    :class:`~distillgan.errors.InputError` with code ``convert-value`` and the path.
    """
    plain = _Plain(limits)
    plain.measure(obj, 0)
    return plain.convert(obj)


_RESERVED_KEYS = ("__class__", "__global__")
_NATIVE_ORDER = "<" if sys.byteorder == "little" else ">"
_LEAVES = frozenset(
    {type(None), bool, int, float, str, bytes, bytearray, complex, torch.dtype, torch.device, PurePosixPath, PureWindowsPath}
)


def _value(message: str) -> InputError:
    return InputError(message, code="convert-value")


def _children(obj: Any) -> list[tuple[str, Any]] | None:
    """The (path step, child) pairs :func:`to_plain_tree` descends into; None for a leaf."""
    kind = type(obj)
    if kind in _LEAVES or isinstance(obj, (type, torch.Tensor)):
        return None
    if kind in (list, tuple, torch.Size):
        return [(f"[{i}]", v) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        return [(_step(k), v) for k, v in obj.items()]
    if kind in (set, frozenset):
        return [("{}", v) for v in obj]
    if isinstance(obj, PickledObject) and not obj.is_enum_like():
        out = [(f".__args__[{i}]", v) for i, v in enumerate(obj.args)]
        out += [(f".__kwargs__{_step(k)}", v) for k, v in obj.kwargs.items()]
        out += [(".__state__", obj.state)] if obj.built else []
        out += [(f".__items__[{i}]", v) for i, v in enumerate(obj.items)]
        out += [(f".__dictitems__{_step(k)}", v) for k, v in obj.dict_items]
        return out
    return None


class _Plain:
    def __init__(self, limits: PickleLimits) -> None:
        self.limits = limits
        self.sizes: dict[int, int] = {}
        self.active: set[int] = set()
        self.steps = ["$"]

    def where(self) -> str:
        return "".join(self.steps)

    def measure(self, obj: Any, depth: int) -> int:
        """Nodes of the expanded tree under ``obj``, each unique object measured once; refuses cycles."""
        children = _children(obj)
        if children is None:
            return 1
        key = id(obj)
        known = self.sizes.get(key)
        if known is not None:
            return known
        if key in self.active:
            raise _value(f"{self.where()}: a cycle (the value contains itself); the value tree has none")
        if depth >= self.limits.max_depth:
            raise _limit(f"{self.where()}: nested deeper than {self.limits.max_depth} levels (limit max_depth)")
        self.active.add(key)
        total = 1
        for step, child in children:
            self.steps.append(step)
            total += self.measure(child, depth + 1)
            if total > self.limits.max_nodes:
                raise _limit(
                    f"{self.where()}: the tree expands to more than {self.limits.max_nodes} nodes "
                    "(limit max_nodes; shared references count each time they occur)"
                )
            self.steps.pop()
        self.active.discard(key)
        self.sizes[key] = total
        return total

    def child(self, step: str, value: Any) -> Any:
        self.steps.append(step)
        out = self.convert(value)
        self.steps.pop()
        return out

    def convert(self, obj: Any) -> Any:
        kind = type(obj)
        if obj is None or kind in (bool, float, bytes):
            return obj
        if kind is int:
            if not -(1 << 63) <= obj < 1 << 64:
                raise _value(f"{self.where()}: integer of {obj.bit_length()} bits; the value tree holds 64-bit integers")
            return obj
        if kind is str:
            return self.text(obj)
        if kind is dict or kind is OrderedDict or isinstance(obj, dict):
            return self.pairs(obj.items(), "")
        if kind is list:
            return [self.child(f"[{i}]", v) for i, v in enumerate(obj)]
        if kind is tuple or kind is torch.Size:
            return tuple(self.child(f"[{i}]", v) for i, v in enumerate(obj))
        if isinstance(obj, torch.Tensor):
            return obj.resolve_conj().resolve_neg() if (obj.is_conj() or obj.is_neg()) else obj
        if isinstance(obj, PickledObject):
            return self.stand_in(obj)
        if kind is bytearray:
            return bytes(obj)
        if kind in (torch.device, PurePosixPath, PureWindowsPath):
            return str(obj)
        if kind is torch.dtype:
            return {"__global__": str(obj)}
        if isinstance(obj, type):
            name = obj.__dict__.get("pickle_name") if isinstance(obj, _FrozenType) else None
            if not name:
                raise _value(f"{self.where()}: class {obj!r} is not a value read from a file")
            return {"__global__": name}
        if kind is complex:
            return {"__class__": "builtins.complex", "__args__": [obj.real, obj.imag]}
        if kind in (set, frozenset):
            return self.set_(obj)
        if kind is _StorageType:
            return {"__global__": f"torch.{obj.name}"}
        if isinstance(obj, torch.UntypedStorage):
            raise _value(
                f"{self.where()}: a bare torch storage (torch.save of a storage, not a tensor) has no place in the value tree"
            )
        module = type(obj).__module__
        if module == "numpy" or module.startswith("numpy."):
            return self.numpy(obj)
        raise _value(f"{self.where()}: {module}.{type(obj).__qualname__} has no place in the value tree")

    def text(self, s: str) -> str:
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as e:
            raise _value(f"{self.where()}: string {_show(s)} is not valid Unicode (lone surrogate)") from e
        return s

    def key(self, k: Any) -> str | int:
        if isinstance(k, PickledObject) and k.is_enum_like():
            k = k.args[0]
        if type(k) is str:
            if k in _RESERVED_KEYS:
                raise _value(f"{self.where()}: the key {k!r} is reserved by the conversion rule for classes")
            return self.text(k)
        if type(k) is int and -(1 << 63) <= k < 1 << 64:
            return k
        raise _value(f"{self.where()}: key {_show(k)} is a {type(k).__name__}; keys must be str or 64-bit int")

    def pairs(self, pairs: Any, prefix: str) -> dict[str | int, Any]:
        out: dict[str | int, Any] = {}
        for k, v in pairs:
            key = self.key(k)
            if key in out:
                raise _value(f"{self.where()}{prefix}: two keys become {_show(key)}")
            out[key] = self.child(prefix + _step(key), v)
        return out

    def set_(self, obj: set[Any] | frozenset[Any]) -> dict[str, Any]:
        items = [self.child("{}", v) for v in obj]
        try:
            items.sort()
        except TypeError as e:
            raise _value(f"{self.where()}: a set of mixed types has no order for the value tree") from e
        return {"__class__": f"builtins.{type(obj).__name__}", "__args__": items}

    def stand_in(self, obj: PickledObject) -> Any:
        if obj.is_enum_like():
            return self.convert(obj.args[0])
        out: dict[str, Any] = {"__class__": obj.full_name}
        if obj.args:
            out["__args__"] = [self.child(f".__args__[{i}]", v) for i, v in enumerate(obj.args)]
        if obj.kwargs:
            out["__kwargs__"] = self.pairs(obj.kwargs.items(), ".__kwargs__")
        if obj.built:
            out["__state__"] = self.child(".__state__", obj.state)
        if obj.items:
            out["__items__"] = [self.child(f".__items__[{i}]", v) for i, v in enumerate(obj.items)]
        if obj.dict_items:
            out["__dictitems__"] = self.pairs(obj.dict_items, ".__dictitems__")
        return out

    def numpy(self, obj: Any) -> Any:
        np = _numpy()
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                raise _value(f"{self.where()}: a numpy array of object dtype")
            if obj.dtype.byteorder not in ("=", "|", _NATIVE_ORDER):
                return obj.astype(obj.dtype.newbyteorder("="))  # same values, this host's byte order
            return obj
        if isinstance(obj, np.generic):
            return self.convert(obj.item())
        if isinstance(obj, np.dtype):
            return {"__class__": "numpy.dtype", "__args__": [obj.str]}
        raise _value(f"{self.where()}: numpy {type(obj).__qualname__} has no place in the value tree")
