"""The session: what one read_pickled call has seen (stand-in classes, storages, views)."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from .common import Budget, PickleLimits, over_limit, unsafe
from .records import FrozenType, PickledObject

if TYPE_CHECKING:
    from .records import StorageRecord


# --------------------------------------------------------------------------------------------
# The session: what one read_pickled call has seen (stand-in classes, storages, views)


class Session:
    def __init__(self, limits: PickleLimits, input_bytes: int) -> None:
        self.limits = limits
        self.budget = Budget(limits, input_bytes)
        self.nested: dict[int, tuple[bytes, Any]] = {}  # id of a nested stream's bytes -> (the bytes, kept alive; its storage)
        self.classes: dict[tuple[str, str], type[PickledObject]] = {}
        self.storage_bytes = 0
        self.views: set[tuple[int, torch.dtype, int, tuple[int, ...], tuple[int, ...]]] = set()
        self.view_bytes = 0
        self.nesting = 0
        self.read_nested: Callable[[bytes, str], Any] | None = None  # set by the reader: a nested legacy stream

    def stand_in_class(self, module: str, name: str) -> type[PickledObject]:
        """The inert class standing in for ``module.name`` (one per pair and session)."""
        key = (module, name)
        cls = self.classes.get(key)
        if cls is None:
            if len(self.classes) >= self.limits.max_classes:
                raise over_limit(
                    f"the file names more than {self.limits.max_classes} distinct unknown globals (limit max_classes)"
                )
            label = "".join(c if c.isascii() and c.isalnum() else "_" for c in f"{module}_{name}")[:60]
            attrs = {
                "__slots__": (),
                "module": module,
                "qualname": name,
                "pickle_name": f"{module}.{name}",
                "__module__": "distillgan.pickled",
            }
            made: Any = FrozenType(f"PickledObject_{label}", (PickledObject,), attrs)
            self.classes[key] = cls = made
        return cls

    def add_storage(self, nbytes: int) -> None:
        self.budget.charge_bytes(nbytes, "the file's storages")  # each storage once, however often it is referenced
        self.storage_bytes += nbytes

    def add_view(
        self,
        storage: StorageRecord,
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
            raise over_limit(
                f"the file's {len(self.views)} distinct tensor views span {self.view_bytes} bytes over {self.storage_bytes} "
                f"bytes of storage; at most {budget} (limits view_bytes_factor, view_bytes_extra)"
            )


SESSION: contextvars.ContextVar[Session] = contextvars.ContextVar("distillgan_pickled_session")


def current_session() -> Session:
    try:
        return SESSION.get()
    except LookupError:
        raise unsafe("allowlisted constructors run only inside read_pickled") from None
