"""The plain value tree the writer stores (rules: the package docstring)."""

from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

import torch

from ..errors import InputError
from .common import DEFAULT_LIMITS, Budget, PickleLimits, over_limit, show
from .keys import KeyGuard
from .materialise import import_numpy, path_step
from .records import EnumMembers, FrozenType, PickledObject, StorageType


def to_plain_tree(obj: Any, *, limits: PickleLimits = DEFAULT_LIMITS, budget: Budget | None = None) -> Any:
    """Turn :func:`read_pickled`'s result into the value tree the writer stores (rules: package docstring).

    Each distinct object is converted once and the result shared wherever the object occurs:
    tied tensors stay tied, and a shared bytearray, array or conj/neg tensor is copied once.
    A first pass computes the size of the tree as the writer will expand it (a shared value
    counted at every occurrence, Enum members included) over the unique objects only, so a tree
    past ``limits.max_nodes`` nodes, the work budget or ``limits.max_depth`` levels is refused
    (``convert-limit``) before anything is built. ``budget``: the conversion's budget when the
    tree came from :func:`read_pickled` (copies are charged to it); None sizes none by the input.
    Cycles and values the tree cannot hold raise :class:`~distillgan.errors.InputError` with
    code ``convert-value`` and the path.
    """
    plain = Plain(budget if budget is not None else Budget(limits, None))
    plain.measure(obj, 0)
    return plain.convert(obj)


_RESERVED_KEYS = ("__class__", "__global__")
_NATIVE_ORDER = "<" if sys.byteorder == "little" else ">"
_LEAVES = frozenset(
    {type(None), bool, int, float, str, bytes, bytearray, complex, torch.dtype, torch.device, PurePosixPath, PureWindowsPath}
)


_MISSING = object()
# values converted afresh at each occurrence (cheap, immutable); everything else -- containers, records, copies the
# rule makes (bytearray -> bytes, byteswapped arrays, resolved conj/neg views) -- once, the result shared
_NOT_SHARED = frozenset(
    {type(None), bool, int, float, str, bytes, complex, torch.dtype, torch.device, PurePosixPath, PureWindowsPath, StorageType}
)


def bad_value(message: str) -> InputError:
    return InputError(message, code="convert-value")


def _children(obj: Any, members: EnumMembers) -> list[tuple[str, Any]] | None:
    """The (path step, child) pairs :func:`to_plain_tree` descends into; None for a leaf."""
    kind = type(obj)
    if kind in _LEAVES or isinstance(obj, (type, torch.Tensor)):
        return None
    if kind in (list, tuple, torch.Size):
        return [(f"[{i}]", v) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        return [(path_step(k), v) for k, v in obj.items()]
    if kind in (set, frozenset):
        return [("{}", v) for v in obj]
    if members.is_member(obj):
        return [(".value", obj.args[0])]  # converted to its value: counted like any other node
    if isinstance(obj, PickledObject):
        out = [(f".__args__[{i}]", v) for i, v in enumerate(obj.args)]
        out += [(f".__kwargs__{path_step(k)}", v) for k, v in obj.kwargs.items()]
        out += [(".__state__", obj.state)] if obj.built else []
        out += [(f".__items__[{i}]", v) for i, v in enumerate(obj.items)]
        out += [(f".__dictitems__{path_step(k)}", v) for k, v in obj.dict_items]
        return out
    return None


class Plain:
    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.limits = budget.limits
        self.members = EnumMembers(budget)  # each value looked at once, however many members share it
        self.sizes: dict[int, int] = {}
        self.active: set[int] = set()
        self.steps = ["$"]
        self.done: dict[int, Any] = {}  # id of a converted object -> its conversion, shared by every occurrence
        self.resolved: dict[tuple[Any, ...], torch.Tensor] = {}  # one copy per conj/neg view, however many tensors show it

    def where(self) -> str:
        return "".join(self.steps)

    def measure(self, obj: Any, depth: int) -> int:
        """Nodes of the expanded tree under ``obj``, each unique object measured once; refuses cycles."""
        children = _children(obj, self.members)
        if children is None:
            return 1
        key = id(obj)
        known = self.sizes.get(key)
        if known is not None:
            return known
        if key in self.active:
            raise bad_value(f"{self.where()}: a cycle (the value contains itself); the value tree has none")
        if depth >= self.limits.max_depth:
            raise over_limit(f"{self.where()}: nested deeper than {self.limits.max_depth} levels (limit max_depth)")
        self.active.add(key)
        self.budget.charge_work(1 + len(children), self.where())
        limit = min(self.limits.max_nodes, self.budget.work_left())
        total = 1
        for step, child in children:
            self.steps.append(step)
            total += self.measure(child, depth + 1)
            if total > limit:
                raise over_limit(
                    f"{self.where()}: the tree expands to more than {limit} nodes (limit max_nodes, or the work budget: "
                    "shared references count each time they occur, Enum members included; FORMAT.md §15)"
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
        if kind not in _NOT_SHARED and not isinstance(obj, type):
            key = id(obj)
            known = self.done.get(key, _MISSING)
            if known is _MISSING:
                known = self.done[key] = self.convert_once(obj)
            return known
        return self.convert_once(obj)

    def convert_once(self, obj: Any) -> Any:
        kind = type(obj)
        if obj is None or kind in (bool, float, bytes):
            return obj
        if kind is int:
            if not -(1 << 63) <= obj < 1 << 64:
                raise bad_value(f"{self.where()}: integer of {obj.bit_length()} bits; the value tree holds 64-bit integers")
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
            return self.tensor(obj)
        if isinstance(obj, PickledObject):
            return self.stand_in(obj)
        if kind is bytearray:
            self.budget.charge_bytes(len(obj), self.where())
            return bytes(obj)
        if kind in (torch.device, PurePosixPath, PureWindowsPath):
            return str(obj)
        if kind is torch.dtype:
            return {"__global__": str(obj)}
        if isinstance(obj, type):
            name = obj.__dict__.get("pickle_name") if isinstance(obj, FrozenType) else None
            if not name:
                raise bad_value(f"{self.where()}: class {obj!r} is not a value read from a file")
            return {"__global__": name}
        if kind is complex:
            return {"__class__": "builtins.complex", "__args__": [obj.real, obj.imag]}
        if kind in (set, frozenset):
            return self.set_(obj)
        if kind is StorageType:
            return {"__global__": f"torch.{obj.name}"}
        if isinstance(obj, torch.UntypedStorage):
            raise bad_value(
                f"{self.where()}: a bare torch storage (torch.save of a storage, not a tensor) has no place in the value tree"
            )
        module = type(obj).__module__
        if module == "numpy" or module.startswith("numpy."):
            return self.numpy(obj)
        raise bad_value(f"{self.where()}: {module}.{type(obj).__qualname__} has no place in the value tree")

    def tensor(self, t: torch.Tensor) -> torch.Tensor:
        if not (t.is_conj() or t.is_neg()):
            return t
        view = (t.untyped_storage().data_ptr(), t.dtype, t.storage_offset(), tuple(t.shape), t.stride(), t.is_conj(), t.is_neg())
        known = self.resolved.get(view)
        if known is None:
            self.budget.charge_bytes(t.numel() * t.element_size(), f"{self.where()}: resolving a conjugate or negative view")
            known = self.resolved[view] = t.resolve_conj().resolve_neg()
        return known

    def text(self, s: str) -> str:
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as e:
            raise bad_value(f"{self.where()}: string {show(s)} is not valid Unicode (lone surrogate)") from e
        return s

    def key(self, k: Any) -> str | int:
        if self.members.is_member(k):
            k = k.args[0]  # once: a member whose value is a member is no key, as save_model refuses it
        if type(k) is str:
            if k in _RESERVED_KEYS:
                raise bad_value(f"{self.where()}: the key {k!r} is reserved by the conversion rule for classes")
            return self.text(k)
        if type(k) is int and -(1 << 63) <= k < 1 << 64:
            return k
        raise bad_value(f"{self.where()}: key {show(k)} is a {type(k).__name__}; keys must be str or 64-bit int")

    def pairs(self, pairs: Any, prefix: str) -> dict[str | int, Any]:
        out: dict[str | int, Any] = {}
        guard = KeyGuard(self.budget)  # Enum members as keys become their values: collisions counted again
        for k, v in pairs:
            key = self.key(k)
            guard.admit(key, self.where() + prefix)
            if key in out:
                raise bad_value(f"{self.where()}{prefix}: two keys become {show(key)}")
            out[key] = self.child(prefix + path_step(key), v)
        return out

    def set_(self, obj: set[Any] | frozenset[Any]) -> dict[str, Any]:
        items = [self.child("{}", v) for v in obj]
        try:
            items.sort()
        except TypeError as e:
            raise bad_value(f"{self.where()}: a set of mixed types has no order for the value tree") from e
        return {"__class__": f"builtins.{type(obj).__name__}", "__args__": items}

    def stand_in(self, obj: PickledObject) -> Any:
        if self.members.is_member(obj):
            return self.convert(obj.args[0])  # a member, or a tuple of members, in it: converted again
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
        np = import_numpy()
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                raise bad_value(f"{self.where()}: a numpy array of object dtype")
            if obj.dtype.byteorder not in ("=", "|", _NATIVE_ORDER):
                self.budget.charge_bytes(obj.nbytes, f"{self.where()}: byteswapping an array")
                return obj.astype(obj.dtype.newbyteorder("="))  # same values, this host's byte order
            return obj
        if isinstance(obj, np.generic):
            return self.convert(obj.item())
        if isinstance(obj, np.dtype):
            return {"__class__": "numpy.dtype", "__args__": [obj.str]}
        raise bad_value(f"{self.where()}: numpy {type(obj).__qualname__} has no place in the value tree")
