#!/usr/bin/env python3
"""Write the converter fuzzer's seed corpus to fuzz/converter_seeds/ (small files, committed).

Each seed is one byte naming how fuzz_converter.py turns it into a file (0: as is; 1: data.pkl
of a torch zip; 2: the same, deflated) followed by the bytes: torch.save checkpoints (zip and
legacy), pickle.dump of tensors (nested streams), memo sharing, and small versions of the hostile
checkpoints of tests/support/hostile_checkpoints.py.
"""

from __future__ import annotations

import collections
import io
import pickle
import sys
import warnings
import zipfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests" / "support"))
import hostile_checkpoints as h


def saved(obj: object, **kw: object) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(obj, buf, **kw)
    return buf.getvalue()


def data_pkl(obj: object) -> bytes:
    with zipfile.ZipFile(io.BytesIO(saved(obj))) as zf:
        return zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))


def main() -> None:
    out = ROOT / "converter_seeds"
    out.mkdir(exist_ok=True)
    w = torch.arange(16, dtype=torch.float32)  # 64 bytes: the storage data/0 the harness adds
    shared = [1, "x", (2.5, None)]
    seeds = {
        "zip-state-dict": b"\0"
        + saved({"a.weight": torch.ones(2, 3), "b": torch.arange(4), "c": torch.zeros(2, dtype=torch.bool)}),
        "zip-tied-views": b"\0"
        + saved({"w": w, "v": w[2:6], "t": w.view(4, 4).t(), "cj": torch.ones(2, dtype=torch.complex64).conj()}),
        "legacy-stream": b"\0" + saved(collections.OrderedDict(w=torch.ones(3)), _use_new_zipfile_serialization=False),
        "pickle-tensors-p2": b"\0" + pickle.dumps({"w": torch.ones(3), "tied": [w, w]}, protocol=2),
        "pickle-memo-p4": b"\0"
        + pickle.dumps({"a": shared, "b": shared, "s": {1, 2}, "f": frozenset({3}), "b2": bytearray(b"ab")}, protocol=4),
        "pickle-p0": b"\0" + pickle.dumps({"k": [1, 2.0, "s", None, True], (1, 2): b"x"}, protocol=0),
        "datapkl-stored": b"\1" + data_pkl({"w": w, "w2": w, "meta": {"epoch": 3}}),
        "datapkl-deflated": b"\2" + data_pkl({"w": w, "opt": {"lr": 0.1, "betas": (0.9, 0.99)}}),
        "hostile-nested-shared": b"\0" + h.shared_nested_stream(16, 4),
        "hostile-enum-bomb": b"\0" + h.enum_tuple_bomb(3, 3),
        "hostile-conj-shared": b"\0" + h.shared_conj_tensors(8, 3),
        "hostile-deep-key": b"\0" + h.deep_tuple_key(100),
        "hostile-deep-set-item": b"\0" + h.deep_tuple_set_item(100),
        "hostile-colliding-keys": b"\0" + h.colliding_int_keys(40),
        "hostile-neg-bool": b"\0" + h.neg_bool_tensor(),
        "hostile-build-path": b"\0" + h.build_on_path(),
        "hostile-zip-comment": b"\0" + h.zip_with_comment(),
        "hostile-zip64": b"\0" + h.zip64_directory_claim(),
        "hostile-bytearray": b"\0" + h.shared_bytearray(64, 4),
    }
    for name, data in seeds.items():
        (out / name).write_bytes(data)
    print(f"{len(seeds)} seeds, {sum(len(d) for d in seeds.values())} bytes in {out}")


if __name__ == "__main__":
    main()
