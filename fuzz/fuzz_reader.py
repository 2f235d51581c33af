#!/usr/bin/env python3
"""Coverage-guided fuzzing of the distillgan reader with atheris (libFuzzer).

Every input is written to a file and read the three ways a user reads one:
``inspect``, ``verify`` and ``open_archive(...).tensors(...)``. Success and
:class:`~distillgan.DistillganError` are fine; any other exception, any
warning, or an input that takes longer than ``DISTILLGAN_FUZZ_LIMIT_S``
(default 1 s) is a crash. Before that, the members of an input that is a
zip go through the fast readers and the reference readers of FORMAT.md
§4.2 and §5.1 (``manifest.unpack`` against ``manifest._scan``,
``tensors._fast_header`` against ``tensors._strict_header``); a different
verdict is a crash too. A custom mutator mixes libFuzzer's byte mutations
with structure-aware ones: it unpacks an archive, mutates one member and
repacks it with correct CRCs, sizes and padding, so that the manifest and
safetensors layers are reached instead of stopping at the CRC check.

See fuzz/README.md for how to run it.
"""

from __future__ import annotations

import atexit
import io
import os
import random
import shutil
import struct
import sys
import tempfile
import time
import warnings
import zipfile
import zlib

import atheris

with atheris.instrument_imports(include=["distillgan"]):
    import distillgan
    from distillgan import DistillganError, manifest, tensors
    from distillgan.container import ContainerWriter

import msgpack
import torch  # noqa: F401  loaded before fuzzing starts: tensors() must not pay for the import

LIMIT_S = float(os.environ.get("DISTILLGAN_FUZZ_LIMIT_S", "1.0"))
# Substrings of messages of already-reported bugs, separated by '|': such exceptions are not crashes,
# so a long run goes on past them. Empty by default: every unexpected exception is a crash.
KNOWN = [k for k in os.environ.get("DISTILLGAN_FUZZ_KNOWN", "").split("|") if k]
MEMBER_NAMES = ("manifest.msgpack", "model.safetensors", "vocoder.safetensors")
_SCRATCH_DIR = tempfile.mkdtemp(prefix="distillgan-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
_SCRATCH = os.path.join(_SCRATCH_DIR, "input.distillgan")
atexit.register(shutil.rmtree, _SCRATCH_DIR, True)


class SlowInput(Exception):
    """An input that took longer than LIMIT_S in one reader entry point."""


def _load_tensors(path: str) -> None:
    with distillgan.open_archive(path) as archive:
        for member in archive.manifest["members"]:
            archive.tensors(member)


ENTRY_POINTS = (distillgan.inspect, distillgan.verify, _load_tensors)


class Disagreement(Exception):
    """The fast and the reference reading of a manifest or safetensors header gave different verdicts."""


def check_differentials(data: bytes) -> None:
    """Fast readers against reference readers (FORMAT.md §4.2, §5.1) on the members of ``data``, when it is a zip."""
    members = _members(data, strict=False)
    for name, body in members or []:
        if name == "manifest.msgpack":
            try:
                manifest.unpack(body)
                fast = None
            except DistillganError as e:
                fast = e.code
            ref = manifest._scan(body)
            if fast != (ref.code if ref is not None else None):
                raise Disagreement(f"manifest: unpack says {fast}, the byte scan says {ref and ref.code}")
        elif name.endswith(".safetensors") and len(body) >= 8:
            (n,) = struct.unpack_from("<Q", body, 0)
            if 8 + n > len(body) or n > 1 << 20:
                continue
            raw, size = body[8 : 8 + n], len(body) - 8 - n
            fast_table = tensors._fast_header(raw, size)
            if fast_table is None:
                continue
            try:
                strict = tensors._strict_header(raw, size, name)
            except DistillganError as e:
                raise Disagreement(f"{name}: the fast parser accepts what the strict one refuses with {e.code}") from e
            if (sorted(fast_table[0]), fast_table[1]) != (sorted(strict[0]), strict[1]):
                raise Disagreement(f"{name}: the fast and strict parsers read different tables")


def TestOneInput(data: bytes) -> None:
    check_differentials(data)
    with open(_SCRATCH, "wb") as f:
        f.write(data)
    for entry in ENTRY_POINTS:
        start = time.monotonic()
        try:
            entry(_SCRATCH)
        except DistillganError as e:
            if not (isinstance(e.code, str) and e.code):
                raise AssertionError(f"DistillganError without a code: {e!r}") from e
        except Exception as e:  # re-raised unless it is a known, reported bug
            if not any(k in f"{type(e).__name__}: {e}" for k in KNOWN):
                raise
        elapsed = time.monotonic() - start
        if elapsed > LIMIT_S:
            raise SlowInput(f"{getattr(entry, '__name__', entry)} took {elapsed:.2f} s on {len(data)} bytes")


# --- structure-aware mutation ---------------------------------------------------------------


def _members(data: bytes, *, strict: bool = True) -> list[tuple[str, bytes]] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            out = [(i.filename, z.read(i)) for i in z.infolist() if i.file_size <= 1 << 22]
    except Exception:  # noqa: BLE001 - zipfile raises many types on mutated input; the mutator then works on bytes
        return None
    names = [n for n, _ in out]
    return out if not strict or (2 <= len(out) <= 3 and names == list(MEMBER_NAMES[: len(out)])) else None


def _repack(members: list[tuple[str, bytes]]) -> bytes:
    f = io.BytesIO()
    writer = ContainerWriter(f)
    for name, body in members:
        writer.write_member(name, len(body), [body])
    writer.finish()
    return f.getvalue()


def _fix_sizes(members: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    try:
        manifest = msgpack.unpackb(members[0][1], raw=False, strict_map_key=False)
        for name, body in members[1:]:
            manifest["members"][name]["size"] = len(body)
        return [(members[0][0], msgpack.packb(manifest, use_bin_type=True))] + members[1:]
    except (ValueError, KeyError, TypeError, IndexError):
        return members


def CustomMutator(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    members = _members(data) if rng.random() < 0.6 else None
    if members is None:
        return atheris.Mutate(data, max_size)
    i = rng.randrange(len(members))
    name, body = members[i]
    if i > 0 and rng.random() < 0.5 and len(body) >= 8:
        # mutate only the safetensors header, keeping the data, and fix the length prefix
        (n,) = struct.unpack_from("<Q", body, 0)
        n = min(n, len(body) - 8)
        header = atheris.Mutate(body[8 : 8 + n], max(n * 2, 64))
        body = struct.pack("<Q", len(header)) + header + body[8 + n :]
    else:
        body = atheris.Mutate(body, max(len(body) * 2, 64))
    members[i] = (name, body)
    if rng.random() < 0.7:
        members = _fix_sizes(members)
    try:
        out = _repack(members)
    except (RuntimeError, UnicodeEncodeError):  # names or sizes the writer refuses
        return atheris.Mutate(data, max_size)
    if len(out) > max_size:
        return atheris.Mutate(data, max_size)
    return out


def CustomCrossOver(data1: bytes, data2: bytes, max_out_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    a, b = _members(data1), _members(data2)
    if a and b and rng.random() < 0.5:
        i = rng.randrange(min(len(a), len(b)))
        a[i] = b[i]
        try:
            out = _repack(_fix_sizes(a))
        except (RuntimeError, UnicodeEncodeError):
            out = b""
        if out and len(out) <= max_out_size:
            return out
    cut1, cut2 = rng.randrange(len(data1) + 1), rng.randrange(len(data2) + 1)
    return (data1[:cut1] + data2[cut2:])[:max_out_size]


def main() -> None:
    warnings.simplefilter("error")  # as in the test suite: a warning from the reader is a defect
    zlib.crc32(b"")  # warm the C paths before timing
    atheris.Setup(sys.argv, TestOneInput, custom_mutator=CustomMutator, custom_crossover=CustomCrossOver)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
