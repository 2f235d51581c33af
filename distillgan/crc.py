"""The CRC-32 of the zip format (APPNOTE §4.4.7): of a buffer, in chunks, split across threads, and of a concatenation.

A leaf: the zip reader and writer (container.py) and the remote source (source.py) both use it.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

try:  # zlib-ng computes the same CRC-32 about 3x faster than CPython's zlib (pip install distillgan[fast])
    from zlib_ng.zlib_ng import crc32 as _crc32
except ImportError:  # pragma: no cover - depends on the environment
    from zlib import crc32 as _crc32

crc32 = _crc32  # the CRC-32 of the zip format (APPNOTE §4.4.7); both release the GIL on large buffers

CHUNK = 8 << 20  # bytes handed to one write / one CRC step
SPLIT = 2 << 20  # members at least twice this size are CRC'd on two threads


def crc32_of(buf: mmap.mmap | bytes | memoryview, offset: int, size: int, tick: Callable[[int], None] | None = None) -> int:
    """CRC-32 of ``size`` bytes at ``offset``, in chunks (zlib releases the GIL); ``tick(n)`` after each."""
    view = memoryview(buf)
    crc = 0
    try:
        for start in range(offset, offset + size, CHUNK):
            chunk = view[start : min(start + CHUNK, offset + size)]
            crc = crc32(chunk, crc)
            if tick is not None:
                tick(chunk.nbytes)
            chunk.release()
    finally:
        view.release()
    return crc


# --- CRC-32 of a concatenation (zlib's crc32_combine, which Python does not expose) ---

_POLY = 0xEDB88320  # reflected CRC-32 polynomial


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the CRC polynomial, in the reflected bit order zlib uses."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                break
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return p


def _x2n_table() -> list[int]:
    table, p = [], 1 << 30  # x^1
    for _ in range(32):
        table.append(p)  # x^(2^n) mod P
        p = _multmodp(p, p)
    return table


_X2N = _x2n_table()


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of A+B from crc32(A), crc32(B) and len(B) (zlib 1.2.12's algorithm)."""
    p, k, n = 1 << 31, 3, len2  # x^0; len2 bytes = 8 * len2 bits = 2^3 * len2
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return _multmodp(p, crc1) ^ crc2


def parallel_crc32(
    buf: mmap.mmap | bytes, offset: int, size: int, pool: ThreadPoolExecutor, parts: int, tick: Callable[[int], None] | None = None
) -> int:
    """CRC-32 of a byte range split across ``parts`` threads, then combined."""
    if parts <= 1 or size < 2 * SPLIT:
        return crc32_of(buf, offset, size, tick)
    step = -(-size // parts)
    bounds = [(offset + i * step, min(step, size - i * step)) for i in range(parts) if i * step < size]
    futures = [pool.submit(crc32_of, buf, o, n, tick) for o, n in bounds]
    crc = futures[0].result()
    for fut, (_, n) in zip(futures[1:], bounds[1:], strict=True):
        crc = crc32_combine(crc, fut.result(), n)
    return crc
