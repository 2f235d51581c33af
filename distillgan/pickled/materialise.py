"""Records to real tensors and arrays, once every bound has been checked."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Any

import torch

from ..errors import InputError
from .common import Budget, over_limit, show, unreadable
from .containers import DictBuilder, SetBuilder
from .records import (
    NdArray,
    NpDType,
    NpScalar,
    ParameterRecord,
    PathRecord,
    PickledObject,
    StorageRecord,
    StorageType,
    TensorRecord,
)

# --------------------------------------------------------------------------------------------
# Records to real tensors and arrays, once every bound has been checked


def import_numpy() -> Any:
    try:
        import numpy
    except ImportError as e:
        raise InputError("this file holds numpy arrays; install numpy to convert it", code="numpy-unavailable") from e
    return numpy


class Materialiser:
    """Replace records by tensors/arrays in one pass over the unique objects (lists and dicts in place)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.limits = budget.limits
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
            raise over_limit(f"{self.where()}: nested deeper than {self.limits.max_depth} levels (limit max_depth)")
        self.pinned.append(obj)
        self.budget.charge_work(1, self.where())
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
            nk = k if type(k) in _ATOMS else self.child(f"[key {show(k, 40)}]", k)
            nv = v if type(v) in _ATOMS else self.child(path_step(k), v)
            if nk is not k or nv is not v:
                items[i] = (nk, nv)
                changed = True
        if changed:
            obj.clear()
            obj.update(items)
        if type(obj) is OrderedDict:
            attrs = vars(obj)
            for k, v in list(attrs.items()):
                attrs[k] = self.child(path_step(k), v)
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
            raise unreadable(f"{self.where()}: a cycle passes through a {type(obj).__name__} that holds tensors or arrays")
        return tuple(items) if type(obj) is tuple else frozenset(items)

    def stand_in(self, obj: PickledObject) -> PickledObject:
        self.done[id(obj)] = obj
        obj.args = tuple(self.child(f".__args__[{i}]", v) for i, v in enumerate(obj.args))
        obj.kwargs = {k: self.child(f".__kwargs__{path_step(k)}", v) for k, v in obj.kwargs.items()}
        obj.state = self.child(".__state__", obj.state)
        obj.items = [self.child(f".__items__[{i}]", v) for i, v in enumerate(obj.items)]
        obj.dict_items = [
            (self.child(".__dictitems__[key]", k), self.child(f".__dictitems__{path_step(k)}", v)) for k, v in obj.dict_items
        ]
        return obj

    def tensor(self, rec: TensorRecord) -> torch.Tensor:
        if rec.dtype is torch.bool:
            rec.storage.check_bool()
        t = torch.empty((0,), dtype=rec.dtype).set_(rec.storage.storage(), rec.offset, rec.size, rec.stride)
        if rec.conj or rec.neg:
            flags = {name: True for name, on in (("conj", rec.conj), ("neg", rec.neg)) if on}
            torch._C._set_tensor_metadata(t, flags)  # type: ignore[attr-defined]  # what torch's _rebuild_tensor_v2 does with the metadata argument
        if rec.requires_grad:
            t.requires_grad_(True)
        return t

    def parameter(self, rec: ParameterRecord) -> torch.nn.Parameter:
        data = self.visit(rec.data)
        return torch.nn.Parameter(data.detach(), requires_grad=rec.requires_grad)

    def dict_builder(self, rec: DictBuilder) -> dict[Any, Any]:
        out: dict[Any, Any] = OrderedDict() if rec.ordered else {}
        self.done[id(rec)] = out  # before the items: a dict that contains itself stays one dict
        for k, v in rec.data.items():  # keys were checked (depth, hash collisions) as the pickle set them
            nk = k if type(k) in _ATOMS else self.child(f"[key {show(k, 40)}]", k)
            out[nk] = v if type(v) in _ATOMS else self.child(path_step(k), v)
        if rec.attrs:  # an OrderedDict's attributes (torch's _metadata): kept on the object, not part of the value tree
            vars(out).update({k: self.child(path_step(k), v) for k, v in rec.attrs.items()})
        return out

    def set_builder(self, rec: SetBuilder) -> set[Any]:
        out: set[Any] = set()
        self.done[id(rec)] = out
        out.update(self.child("{}", v) for v in rec.items)
        return out

    def path_(self, rec: PathRecord) -> PurePath:
        return (PureWindowsPath if rec.windows else PurePosixPath)(*rec.parts)  # string handling only, no filesystem access

    def storage(self, rec: StorageRecord) -> torch.UntypedStorage:
        return rec.storage()

    def ndarray(self, rec: NdArray) -> Any:
        np = import_numpy()
        if rec.data is None:
            raise unreadable(f"{self.where()}: a numpy array without its BUILD state")
        assert rec.dtype.str is not None
        dtype = np.dtype(rec.dtype.str)
        order = "F" if rec.fortran else "C"
        if not rec.data:
            return np.empty(rec.shape, dtype=dtype, order=order)
        if type(rec.data) is bytearray:
            data = rec.data
        else:
            self.budget.charge_bytes(len(rec.data), self.where())  # a writable copy of the pickle's bytes
            data = bytearray(rec.data)
        return np.frombuffer(data, dtype=dtype).reshape(rec.shape, order=order)

    def np_scalar(self, rec: NpScalar) -> Any:
        np = import_numpy()
        assert rec.dtype.str is not None
        return np.frombuffer(rec.data, dtype=np.dtype(rec.dtype.str))[0]

    def np_dtype(self, rec: NpDType) -> Any:
        if rec.str is None:
            raise unreadable(f"{self.where()}: a numpy dtype without its BUILD state")
        return import_numpy().dtype(rec.str)


_ATOMS = frozenset(
    {type(None), bool, int, float, complex, str, bytes, bytearray, torch.dtype, torch.device, torch.Size,
     PurePosixPath, PureWindowsPath, StorageType}
)  # fmt: skip
_MATERIALISE: dict[type, Callable[[Materialiser, Any], Any]] = {
    list: Materialiser.list_,
    dict: Materialiser.dict_,
    OrderedDict: Materialiser.dict_,
    set: Materialiser.set_,
    tuple: Materialiser.immutable,
    frozenset: Materialiser.immutable,
    TensorRecord: Materialiser.tensor,
    ParameterRecord: Materialiser.parameter,
    StorageRecord: Materialiser.storage,
    NdArray: Materialiser.ndarray,
    NpScalar: Materialiser.np_scalar,
    NpDType: Materialiser.np_dtype,
    DictBuilder: Materialiser.dict_builder,
    SetBuilder: Materialiser.set_builder,
    PathRecord: Materialiser.path_,
}


def path_step(key: Any) -> str:
    """One step of a ``$.a.b[3]["odd key"]`` path."""
    if type(key) is str:
        return f".{key}" if key.isidentifier() else f"[{show(key, 60)}]"
    return f"[{show(key, 60)}]"  # show: an int key of thousands of digits is never formatted in decimal
