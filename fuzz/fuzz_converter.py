#!/usr/bin/env python3
"""Coverage-guided fuzzing of the converter's restricted pickle reader with atheris (libFuzzer).

The first byte of an input picks how the rest becomes a file:

- 0: the rest is the file (a plain pickle, a legacy torch stream, a zip, anything);
- 1: the rest is ``data.pkl`` of a torch zip, stored, beside a 64-byte storage ``data/0``;
- 2: the same with ``data.pkl`` deflated (the budget counts its stored bytes, not its inflated size).

Every file goes through ``read_plain_tree`` (what ``distillgan convert`` reads). A
``DistillganError`` with a code is the expected refusal; any other exception is a crash, and so
is an input that breaks its budget: more seconds than ``DISTILLGAN_FUZZ_LIMIT_S`` (default 1) +
5 µs per step of the input's work budget, or a process peak RSS above where it stood before the
first input + 2 x the file's bytes + 64 MiB + 256 bytes per step of the work budget (Python
objects). A custom mutator mutates ``data.pkl`` opcode-aware: it inserts memo references,
nested ``_load_from_bytes`` streams and ``TUPLE``/``SETITEM`` runs, so shared values and key
checks are reached instead of stopping at the first byte.

    python fuzz/fuzz_converter.py fuzz/corpus/converter fuzz/converter_seeds -max_total_time=1800 \\
        -timeout=30 -rss_limit_mb=4096 -max_len=65536 -artifact_prefix=fuzz/artifacts/

See fuzz/README.md.
"""

from __future__ import annotations

import atexit
import io
import os
import random
import resource
import shutil
import sys
import tempfile
import time
import zipfile

import atheris

with atheris.instrument_imports(include=["distillgan"]):
    from distillgan import DistillganError
    from distillgan.pickled import DEFAULT_LIMITS, read_plain_tree

import torch  # noqa: F401  imported before fuzzing starts

LIMIT_S = float(os.environ.get("DISTILLGAN_FUZZ_LIMIT_S", "1.0"))
_SCRATCH_DIR = tempfile.mkdtemp(prefix="distillgan-fuzz-conv-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
_SCRATCH = os.path.join(_SCRATCH_DIR, "input.pt")
atexit.register(shutil.rmtree, _SCRATCH_DIR, True)
_BASE_RSS_KIB = 0
_STORAGE = bytes(range(64))


class BudgetBroken(Exception):
    """An input that took more time or memory than its budget allows."""


def as_file(data: bytes) -> bytes:
    """The file an input stands for (see the module docstring)."""
    if not data:
        return b""
    mode, rest = data[0] % 3, data[1:]
    if mode == 0:
        return rest
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        method = zipfile.ZIP_DEFLATED if mode == 2 else zipfile.ZIP_STORED
        zf.writestr(zipfile.ZipInfo("archive/data.pkl"), rest, compress_type=method)
        zf.writestr(zipfile.ZipInfo("archive/byteorder"), b"little")
        zf.writestr(zipfile.ZipInfo("archive/data/0"), _STORAGE)
    return buf.getvalue()


def work_steps(size: int) -> int:
    return DEFAULT_LIMITS.work_per_byte * size + DEFAULT_LIMITS.work_extra


def test_one_input(data: bytes) -> None:
    global _BASE_RSS_KIB
    content = as_file(data)
    with open(_SCRATCH, "wb") as f:
        f.write(content)
    if not _BASE_RSS_KIB:
        _BASE_RSS_KIB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        read_plain_tree(_SCRATCH)
    except DistillganError as e:
        if not e.code:
            raise
    seconds = time.perf_counter() - start
    steps = work_steps(len(content))
    if seconds > LIMIT_S + 5e-6 * steps:
        raise BudgetBroken(f"{seconds:.2f} s for a {len(content)}-byte input (budget {LIMIT_S + 5e-6 * steps:.2f} s)")
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - _BASE_RSS_KIB) * 1024
    allowed = 2 * len(content) + (64 << 20) + 256 * steps
    if grown > allowed:
        raise BudgetBroken(f"peak RSS grew {grown >> 20} MiB over the first input's; budget {allowed >> 20} MiB")


# --- structure-aware mutation of the pickle ------------------------------------------------------

_SNIPPETS = [
    b"h\x00", b"h\x01", b"q\x00", b"q\x01", b"\x94", b"(", b"t", b"\x85", b"\x86", b"\x87", b"}", b"]", b"\x8f", b"\x91",
    b"s", b"u", b"a", b"e", b"\x90", b"N", b"K\x01", b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x1f", b"\x88", b"b", b"R", b"0",
    b"c__builtin__\nbytearray\n", b"ctorch.storage\n_load_from_bytes\n", b"ctorch._utils\n_rebuild_tensor_v2\n",
    b"ccollections\nOrderedDict\n", b"cmymodule\nColor\n", b"cpathlib\nPurePosixPath\n", b"c__builtin__\ngetattr\n",
    b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x10tQ",
]  # fmt: skip


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if len(data) > 1 and rng.random() < 0.5:
        body = bytearray(data[1:])
        for _ in range(rng.randint(1, 4)):
            at = rng.randint(0, len(body))
            snippet = rng.choice(_SNIPPETS) * rng.choice((1, 1, 2, 8, 64))
            body[at:at] = snippet
        out = bytes(data[:1]) + bytes(body)
        return out[:max_size]
    return atheris.Mutate(data, max_size)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
