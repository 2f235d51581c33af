"""Dicts and sets while unpickling: builders whose every key and item is checked before it is hashed.

The VM rewrites ``EMPTY_DICT``/``DICT``/``EMPTY_SET``/``FROZENSET`` (and the allowlist maps
``OrderedDict``, ``defaultdict``, ``set``, ``frozenset``) to these builders, so the C unpickler's
``SETITEM``/``SETITEMS``/``ADDITEMS`` call :meth:`DictBuilder.__setitem__` / :meth:`SetBuilder.add`
instead of inserting in C. Materialisation turns a builder into the real ``dict``,
``OrderedDict`` or ``set``, with the keys it has already checked.
"""

from __future__ import annotations

from typing import Any

from .common import show, unreadable, unsafe
from .keys import KeyGuard
from .records import Record
from .session import current_session


class DictBuilder(Record):
    """A dict being unpickled: an insertion-ordered dict whose keys went through a :class:`KeyGuard`."""

    __slots__ = ("attrs", "data", "guard", "ordered")
    __hash__ = None  # type: ignore[assignment]  # like a dict: never a key
    what = "dict"

    def __init__(self, ordered: bool = False) -> None:
        self.data: dict[Any, Any] = {}
        self.ordered = ordered
        self.attrs: dict[str, Any] | None = None
        self.guard = KeyGuard(current_session().budget)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.guard.admit(key, "a dict of the pickle")
        self.data[key] = value

    def __len__(self) -> int:
        return len(self.data)

    def __setstate__(self, state: Any) -> None:
        # OrderedDict.__reduce__ carries the instance's attributes (torch's state_dict: _metadata) as BUILD state
        if not self.ordered or self.attrs is not None:
            raise unsafe("the pickle applies BUILD state to a dict (or twice to an OrderedDict)")
        if type(state) is tuple and len(state) == 2 and state[1] is None:
            state = state[0]
        if type(state) is not DictBuilder:
            raise unreadable(f"OrderedDict BUILD state {show(state)}: expected a dict of attributes")
        self.attrs = state.data

    def __repr__(self) -> str:
        return f"<dict of {len(self.data)} keys>"


class SetBuilder(Record):
    """A set being unpickled (``EMPTY_SET`` + ``ADDITEMS``, or ``set(list)``)."""

    __slots__ = ("guard", "items")
    __hash__ = None  # type: ignore[assignment]
    what = "set"

    def __init__(self) -> None:
        self.items: set[Any] = set()
        self.guard = KeyGuard(current_session().budget)

    def add(self, item: Any) -> None:
        self.guard.admit(item, "a set of the pickle")
        self.items.add(item)

    def __repr__(self) -> str:
        return f"<set of {len(self.items)} items>"


def checked_frozenset(items: Any, where: str) -> frozenset[Any]:
    guard = KeyGuard(current_session().budget)
    for item in items:
        guard.admit(item, where)
    return frozenset(items)


def dict_from_pairs(pairs: Any, ordered: bool, where: str) -> DictBuilder:
    out = DictBuilder(ordered)
    for k, v in pairs:
        out.guard.admit(k, where)
        out.data[k] = v
    return out
