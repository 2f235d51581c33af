"""Signatures (FORMAT.md §16): what signing, checking and a signed load cost, against one SHA-256 pass.

    python bench/signing.py [--size 1G] [--load-size 256M] [--reps 3] [--tmp DIR] [--json]

One process, warm page cache (a first untimed round reads every file and imports model-signing),
contenders alternating inside each repetition; the figure is the median. Rows:

- ``hashlib.sha256 (file)``: the file read in 8 MiB chunks into hashlib, the floor for any signer
  or verifier of the whole file; ``hashlib.sha256 (memory)``: the same bytes already in memory.
- ``distillgan.sign``: the archive's structure checked, then model-signing hashes the file and signs.
- ``signing.verify``: the sidecar checked with the public key, then the file's SHA-256.
- ``distillgan.verify(public_key=)``: the same plus every CRC-32 and the structure, in one pass.
- ``model_signing verify (library)``: model-signing's own verifier over the same file and sidecar.
- ``load_model(copy=True)`` / ``load_model(public_key=)`` / ``load_model()`` (mapped) of the
  ``--load-size`` model until it returns (the first two have read every byte by then; the mapped
  one reads pages when tensors are touched, so its row is a reference, not a contender).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _size(text: str) -> int:
    return int(text[:-1]) * UNITS[text[-1].upper()] if text[-1].upper() in UNITS else int(text)


def _model(folder: str, name: str, nbytes: int) -> str:
    import torch

    from distillgan import ModelMetadata, save_model

    per = max(nbytes // 4 // 4, 1)  # four tensors of float32
    g = torch.Generator().manual_seed(len(name))
    sd = {f"layer{i}.weight": torch.rand(per, generator=g) for i in range(4)}
    return str(save_model(sd, {}, {}, ModelMetadata(name=name, model_id=name), folder))


def _keys(folder: str) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    priv, pub = os.path.join(folder, "key.pem"), os.path.join(folder, "pub.pem")
    with open(priv, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with open(pub, "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def _hash_file(path: str) -> str:
    h = hashlib.sha256()
    buf = bytearray(8 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _timed(contenders: dict[str, Callable[[], Any]], reps: int) -> dict[str, list[float]]:
    names = list(contenders)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        for n in names[r % len(names) :] + names[: r % len(names)]:  # the first contender rotates
            t = time.perf_counter()
            contenders[n]()
            samples[n].append(time.perf_counter() - t)
    return samples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1G", help="model size for sign / verify (default 1G)")
    ap.add_argument("--load-size", default="256M", help="model size for the loads (default 256M)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tmp", help="folder for the temporary models (default: the system's)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)

    import distillgan
    from distillgan import signing

    folder = tempfile.mkdtemp(prefix="distillgan-bench-signing-", dir=args.tmp)
    try:
        priv, pub = _keys(folder)
        big = _model(os.path.join(folder, "big"), "big", _size(args.size))
        small = _model(os.path.join(folder, "small"), "small", _size(args.load_size))
        for p in (big, small):
            signing.sign(p, private_key=priv)
        size = os.path.getsize(big)
        with open(big, "rb") as f:
            data = f.read()

        from model_signing import verifying

        def ms_verify() -> None:
            verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(big, big + ".sig")

        whole: dict[str, Callable[[], Any]] = {
            "hashlib.sha256 (file)": lambda: _hash_file(big),
            "hashlib.sha256 (memory)": lambda: hashlib.sha256(data).hexdigest(),
            "distillgan.sign": lambda: signing.sign(big, private_key=priv),
            "signing.verify": lambda: signing.verify(big, public_key=pub),
            "distillgan.verify(public_key=)": lambda: distillgan.verify(big, public_key=pub),
            "model_signing verify (library)": ms_verify,
        }
        loads: dict[str, Callable[[], Any]] = {
            "load_model(copy=True)": lambda: distillgan.load_model(small, copy=True),
            "load_model(public_key=)": lambda: distillgan.load_model(small, public_key=pub),
            "load_model() (mapped, untouched)": lambda: distillgan.load_model(small),
        }
        for fn in (*whole.values(), *loads.values()):  # warm: page cache, imports, first-call costs
            fn()
        del data  # the in-memory row is timed with its own copy below
        with open(big, "rb") as f:
            data = f.read()
        rows = []
        small_size = os.path.getsize(small)
        for group, contenders, nbytes in (("1", whole, size), ("2", loads, small_size)):
            samples = _timed(contenders, args.reps)
            base = statistics.median(samples[next(iter(contenders))])
            for name, s in samples.items():
                med = statistics.median(s)
                rows.append({"group": group, "contender": name, "bytes": nbytes, "median_s": med, "gb_per_s": nbytes / med / 1e9,
                             "ratio": med / base, "samples_s": s})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        print(f"{r['contender']:<34} {r['bytes'] / (1 << 20):>8.0f} MiB  {r['median_s'] * 1000:>9.1f} ms  "
              f"{r['gb_per_s']:>6.2f} GB/s  {r['ratio']:>5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
