"""CRC-32 helpers: the combine used to split verify across threads, and the fast CRC when present."""

from __future__ import annotations

import random
import zlib

from distillgan import crc as zcrc


def test_crc32_matches_zlib() -> None:
    data = random.Random(1).randbytes(3 << 20)
    assert zcrc.crc32(data) == zlib.crc32(data)
    assert zcrc.crc32(data[1000:], zcrc.crc32(data[:1000])) == zlib.crc32(data)


def test_crc32_combine_matches_zlib_on_random_splits() -> None:
    rng = random.Random(7)
    for _ in range(50):
        a = rng.randbytes(rng.randrange(0, 5000))
        b = rng.randbytes(rng.randrange(0, 70000))
        assert zcrc.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_parallel_crc_of_a_member_split_across_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    data = random.Random(3).randbytes((5 << 20) + 12345)  # above the split threshold, odd length
    seen = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        crc = zcrc.parallel_crc32(data, 17, len(data) - 17, pool, 2, seen.append)
    assert crc == zlib.crc32(data[17:])
    assert sum(seen) == len(data) - 17 and len(seen) >= 2
