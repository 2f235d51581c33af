"""Storages: declared by persistent ids, filled from the file into buffers this package allocates."""

from __future__ import annotations

from typing import Any, BinaryIO

import torch

from .common import INT64_MAX, show, unreadable
from .records import LEGACY_STORAGES, StorageRecord, StorageType, kind_of
from .session import Session


def declare_storage(storages: dict[str, StorageRecord], stype: Any, key: Any, location: Any, numel: Any, room: int,
                     session: Session, where: str) -> StorageRecord:  # fmt: skip
    """The storage a persistent id names: one record per key, consistent across references."""
    if type(stype) is not StorageType:
        raise unreadable(f"{where}: storage type {kind_of(stype)} is not one of {', '.join(LEGACY_STORAGES)}, UntypedStorage")
    if type(key) is not str or type(location) is not str or type(numel) is not int or not 0 <= numel <= INT64_MAX:
        raise unreadable(
            f"{where}: storage id ({show(key)}, {show(location)}, {show(numel)}); expected str key, str location, int size"
        )
    nbytes = numel * stype.dtype.itemsize
    known = storages.get(key)
    if known is not None:
        if known.dtype != stype.dtype or known.untyped != stype.untyped or known.nbytes != nbytes:
            raise unreadable(
                f"{where}: storage {show(key)} is referenced as {known.dtype} x{known.nbytes} bytes and as {stype.dtype} x{nbytes}"
            )
        return known
    if nbytes > room:
        raise unreadable(f"{where}: storage {show(key)} declares {nbytes} bytes; the data holds at most {room}")
    record = StorageRecord(key, stype, nbytes, where)
    storages[key] = record
    session.add_storage(nbytes)
    return record


def read_exactly(f: BinaryIO, offset: int, n: int, where: str) -> bytearray:
    """``n`` bytes at ``offset`` into a new bytearray (one copy, no intermediate bytes object)."""
    buf = bytearray(n)
    view = memoryview(buf)
    f.seek(offset)
    got = 0
    while got < n:
        k = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            raise unreadable(f"{where}: {n} bytes at byte {offset} run past the end of the file")
        got += k
    return buf


def byteswap(data: bytearray, dtype: torch.dtype) -> None:
    """Big-endian storage bytes to little-endian, in place (complex numbers swap each half)."""
    unit = dtype.itemsize // 2 if dtype.is_complex else dtype.itemsize
    if unit > 1 and data:
        lanes = torch.frombuffer(data, dtype=torch.uint8).view(-1, unit)
        lanes.copy_(lanes.flip(1))
