"""Keys and set items: checked before CPython hashes them, collisions counted before a dict is built.

CPython hashes a tuple by hashing its items, recursively, in C: a tuple nested a million deep
crashes the interpreter. Hash values of ints, floats and tuples of them are not randomised:
keys ``k * (2**61 - 1)`` all hash to 0 and make each insertion compare with every earlier
key. So every value about to become a dict key or set item goes through :func:`check_hashable`
(its tuples walked iteratively, at most ``max_depth`` deep, every element charged to the
budget, unhashable values refused) and into a :class:`KeyGuard`, which counts the keys sharing
each hash value and refuses more than ``max_key_collisions`` (FORMAT.md §15).
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

import torch

from .common import Budget, over_limit, unreadable
from .records import (
    FrozenType,
    NpDType,
    NpScalar,
    ParameterRecord,
    PathRecord,
    PickledObject,
    StorageRecord,
    StorageType,
    TensorRecord,
    kind_of,
)

# values CPython hashes without recursing: by identity, or from a hash cached on the value
_FLAT_HASHABLE = frozenset(
    {type(None), bool, int, float, complex, str, bytes, frozenset, torch.dtype, torch.device, StorageType, TensorRecord,
     ParameterRecord, StorageRecord, NpDType, NpScalar, PathRecord}
)  # fmt: skip
_HASH_MODULUS = (1 << 61) - 1  # sys.hash_info.modulus on 64-bit builds: ints below it hash to themselves
_RANDOMISED = (str, bytes)  # their hashes are salted per process (PYTHONHASHSEED): not floodable from a file


def check_hashable(value: Any, budget: Budget, where: str) -> None:
    """Refuse a value that cannot be a key (unhashable, or tuples nested deeper than ``max_depth``)."""
    max_depth = budget.limits.max_depth
    todo: list[tuple[Any, int]] = [(value, 0)]
    seen = 0
    while todo:
        item, depth = todo.pop()
        seen += 1
        kind = type(item)
        if kind is tuple or kind is torch.Size:
            if depth >= max_depth:
                raise over_limit(
                    f"{where}: a key or set item holds tuples nested deeper than {max_depth} levels (limit max_depth)"
                )
            todo.extend((v, depth + 1) for v in item)
        elif not (kind in _FLAT_HASHABLE or isinstance(item, (PickledObject, FrozenType, PurePath))):
            budget.charge_work(seen, where)
            raise unreadable(f"{where}: {kind_of(item)} cannot be a dict key or set item (unhashable)")
    budget.charge_work(seen, where)


class KeyGuard:
    """Counts the keys of one container that share a hash value; refuses more than ``max_key_collisions``."""

    __slots__ = ("budget", "counts")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.counts: dict[int, int] | None = None

    def admit(self, key: Any, where: str) -> None:
        """Check ``key`` and count its hash; after this, hashing it and inserting it are cheap."""
        if type(key) in _RANDOMISED:
            self.budget.charge_work(1, where)
            return
        check_hashable(key, self.budget, where)
        try:
            h = hash(key)
        except TypeError as e:  # a frozenset or stand-in holding something unhashable cannot get here; belt and braces
            raise unreadable(f"{where}: {kind_of(key)} cannot be a dict key or set item: {e}") from None
        if self.counts is None:
            self.counts = {}
        h %= _HASH_MODULUS  # as a key here each residue hashes to itself: this dict cannot be flooded
        n = self.counts.get(h, 0) + 1
        if n > self.budget.limits.max_key_collisions:
            raise over_limit(
                f"{where}: more than {self.budget.limits.max_key_collisions} keys of one dict or set share one hash value "
                "(limit max_key_collisions: each such key costs a comparison with every other; FORMAT.md §15)"
            )
        self.counts[h] = n
