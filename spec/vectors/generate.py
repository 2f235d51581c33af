#!/usr/bin/env python3
"""Generate the conformance vectors of spec/FORMAT.md §10.

    python spec/vectors/generate.py            # rewrite spec/vectors/{valid,invalid,index.json}
    python spec/vectors/generate.py --out DIR  # write them elsewhere (the tests compare the two)
    python spec/vectors/generate.py --check    # exit 1 unless the committed vectors are up to date
    python spec/vectors/generate.py --large DIR  # the large vectors (limits past 64 KiB, 4 GiB zip64 files), into DIR

The output is deterministic: no randomness, no clocks, no host paths; re-running
reproduces every byte. Valid vectors come from distillgan's own writer (plus a
few built by hand to show what a reader must accept beyond what we write);
invalid vectors are assembled byte by byte with ``struct.pack`` so that each
one carries exactly one defect and every layer above it is intact (CRCs,
sizes and padding are recomputed), which makes the reader reach the layer
under test. The legacy vectors are real ``torch.save`` and ``pickle`` output.

The zip and safetensors byte builders below do not use distillgan: they are
a second, independent reading of FORMAT.md, and the generator checks that
they reproduce the writer's bytes exactly.

Index (``index.json``): ``vectors`` is a list of objects with ``id``,
``file`` (relative to the index), ``sha256`` of the file, ``valid``,
``section``, ``description`` and ``expected``: for a valid vector
``{"manifest": <decoded manifest>, "digests": {member: {tensor: sha256 hex}}}``
(stored tensors only, not aliases), for an invalid one ``{"code": <error code>}``.
An invalid vector whose defect lies in tensor data (a member's CRC-32, bool
bytes) has ``"needs": "verify"``: headers and manifest are intact, so only a
reader that reads and checks the data rejects it. See README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import pickle
import re
import shutil
import struct
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import msgpack

HERE = Path(__file__).resolve().parent
INDEX_NAME = "index.json"
MAX_VECTOR_BYTES = 64 << 10
MAX_TOTAL_BYTES = 2 << 20

# --- the zip profile, written out independently of distillgan (FORMAT.md §3) ----------
LOCAL = struct.Struct("<4sHHHHHIIIHH")  # APPNOTE 4.3.7
CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")  # APPNOTE 4.3.12
EOCD = struct.Struct("<4sHHHHIIH")  # APPNOTE 4.3.16
ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")  # APPNOTE 4.3.14
ZIP64_LOCATOR = struct.Struct("<4sIQI")  # APPNOTE 4.3.15
LOCAL_SIG, CENTRAL_SIG, EOCD_SIG = b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"
ZIP64_EOCD_SIG, ZIP64_LOCATOR_SIG = b"PK\x06\x06", b"PK\x06\x07"
MADE_BY = (3 << 8) | 45  # Unix host, APPNOTE 4.5
VERSION = 20
DOS_DATE = (1 << 5) | 1  # 1980-01-01
XATTR_FILE = 0o100644 << 16
ALIGNMENT = 64  # FORMAT.md §3.4
PAD_ID = 0x6764  # FORMAT.md §3.4
U32 = 0xFFFFFFFF
MAX_HEADER_BYTES = 100_000_000  # FORMAT.md §8 / §5.1 H2
MAX_CENTRAL_DIRECTORY_BYTES = 64 << 10  # FORMAT.md §8 / §13.2 E8
U64_MAX = (1 << 64) - 1  # FORMAT.md §8 / §5.1 H10e: the largest data offset

MANIFEST, MODEL, VOCODER = "manifest.msgpack", "model.safetensors", "vocoder.safetensors"


def zip_archive(
    members: list[tuple[str | bytes, bytes]],
    *,
    local: dict[int, dict[str, Any]] | None = None,
    central: dict[int, dict[str, Any]] | None = None,
    order: list[int] | None = None,
    eocd: dict[str, Any] | None = None,
    zip64: dict[str, Any] | None = None,
    gaps: dict[int, bytes] | None = None,
    cd_suffix: bytes = b"",
    comment: bytes = b"",
) -> bytes:
    """Lay out ``members`` in the strict profile, then apply the given field overrides.

    ``local`` / ``central`` map a member index (for ``central``: a position in the
    directory) to field overrides; ``order`` lists the members the directory
    names, in order (repeats allowed); ``gaps`` inserts bytes after a member's
    data; ``zip64`` adds zip64 end records (``{"record": {...}, "locator": {...}}``
    overrides, ``"fake_record"`` to insert a second record in front).
    Unless overridden, CRCs, sizes, offsets and padding are correct.
    """
    local, central, gaps = local or {}, central or {}, gaps or {}
    out = bytearray()
    placed = []
    for i, (name, data) in enumerate(members):
        nb = name.encode("utf-8") if isinstance(name, str) else name
        lo: dict[str, Any] = {
            "sig": LOCAL_SIG, "version": VERSION, "flags": 0, "method": 0, "time": 0, "date": DOS_DATE,
            "crc": zlib.crc32(data), "csize": len(data), "usize": len(data), "name": nb, "extra": None,
        }
        lo.update(local.get(i, {}))
        offset = len(out)
        extra = lo["extra"]
        if extra is None:
            if i == 0:
                extra = b""
            else:
                pad = (-(offset + LOCAL.size + len(lo["name"]) + 4)) % ALIGNMENT
                extra = struct.pack("<HH", PAD_ID, pad) + bytes(pad)
        out += LOCAL.pack(
            lo["sig"], lo["version"], lo["flags"], lo["method"], lo["time"], lo["date"], lo["crc"], lo["csize"],
            lo["usize"], lo.get("nlen", len(lo["name"])), lo.get("xlen", len(extra)),
        )
        out += lo["name"] + extra + data + gaps.get(i, b"")
        placed.append({"name": nb, "crc": zlib.crc32(data), "size": len(data), "offset": offset})
    cd_start = len(out)
    cd = bytearray()
    for pos, i in enumerate(order if order is not None else range(len(members))):
        p = placed[i]
        ce: dict[str, Any] = {
            "sig": CENTRAL_SIG, "made_by": MADE_BY, "version": VERSION, "flags": 0, "method": 0, "time": 0,
            "date": DOS_DATE, "crc": p["crc"], "csize": p["size"], "usize": p["size"], "name": p["name"],
            "extra": b"", "comment": b"", "disk": 0, "iattr": 0, "xattr": XATTR_FILE, "offset": p["offset"],
        }
        ce.update(central.get(pos, {}))
        cd += CENTRAL.pack(
            ce["sig"], ce["made_by"], ce["version"], ce["flags"], ce["method"], ce["time"], ce["date"], ce["crc"],
            ce["csize"], ce["usize"], ce.get("nlen", len(ce["name"])), ce.get("xlen", len(ce["extra"])),
            len(ce["comment"]), ce["disk"], ce["iattr"], ce["xattr"], ce["offset"],
        )
        cd += ce["name"] + ce["extra"] + ce["comment"]
    cd += cd_suffix
    n = len(order) if order is not None else len(members)
    out += cd
    if zip64 is not None:
        if "fake_record" in zip64:
            out += zip64["fake_record"]
        rec_pos = len(out)
        rec = {"sig": ZIP64_EOCD_SIG, "size": ZIP64_EOCD.size - 12, "made_by": MADE_BY, "version": 45, "disk": 0,
               "cd_disk": 0, "n_disk": n, "n_total": n, "cd_size": len(cd), "cd_off": cd_start}
        rec.update(zip64.get("record", {}))
        out += ZIP64_EOCD.pack(*rec.values())
        loc = {"sig": ZIP64_LOCATOR_SIG, "disk": 0, "offset": rec_pos, "n_disks": 1}
        loc.update(zip64.get("locator", {}))
        out += ZIP64_LOCATOR.pack(*loc.values())
    end = {"sig": EOCD_SIG, "disk": 0, "cd_disk": 0, "n_disk": n, "n_total": n, "cd_size": len(cd),
           "cd_off": cd_start, "comment_len": len(comment)}
    end.update(eocd or {})
    out += EOCD.pack(*end.values()) + comment
    return bytes(out)


def zip64_record(n: int, cd_size: int, cd_off: int) -> bytes:
    return ZIP64_EOCD.pack(ZIP64_EOCD_SIG, ZIP64_EOCD.size - 12, MADE_BY, 45, 0, 0, n, n, cd_size, cd_off)


def dir_info(data: bytes) -> tuple[int, int, int]:
    """(entry count, directory size, directory offset) from a profile archive's end record."""
    _sig, _d, _cd, _nd, n, cd_size, cd_off, _c = EOCD.unpack_from(data, len(data) - EOCD.size)
    return n, cd_size, cd_off


def members_of(data: bytes) -> list[tuple[str, bytes]]:
    """Member names and bytes of a valid archive, read with Python's zipfile (an independent reader)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.testzip() is None
        return [(info.filename, z.read(info)) for info in z.infolist()]


# --- msgpack written by hand, for manifests a normal encoder cannot produce (FORMAT.md §4.2) --


class Pairs(list):
    """A msgpack map written as these (key, value) pairs, in this order, duplicates kept."""


class Raw(bytes):
    """Bytes placed verbatim into the msgpack stream."""


def mp(obj: Any) -> bytes:
    if isinstance(obj, Raw):
        return bytes(obj)
    if isinstance(obj, dict):
        obj = Pairs(obj.items())
    if isinstance(obj, Pairs):
        n = len(obj)
        head = bytes([0x80 | n]) if n < 16 else (b"\xde" + struct.pack(">H", n) if n < 1 << 16 else b"\xdf" + struct.pack(">I", n))
        return head + b"".join(mp(k) + mp(v) for k, v in obj)
    if isinstance(obj, list):
        n = len(obj)
        head = bytes([0x90 | n]) if n < 16 else (b"\xdc" + struct.pack(">H", n) if n < 1 << 16 else b"\xdd" + struct.pack(">I", n))
        return head + b"".join(mp(v) for v in obj)
    return msgpack.packb(obj, use_bin_type=True, use_single_float=False)


SCHEMA_MAPS = ("metadata", "members")  # FORMAT.md §4.2: maps whose keys a writer sorts; value slots keep their own order


def utf8_sorted(keys: Any) -> list[Any]:
    return sorted(keys, key=lambda k: k.encode("utf-8"))


def canonical(m: dict[str, Any]) -> Pairs:
    """FORMAT.md §4.2: ``format`` and ``version`` first, then the other top-level keys, ``metadata``,
    ``members`` and each member's ``aliases`` in UTF-8 byte order; value slots as given (their order is data)."""
    keys = ["format", "version"] + utf8_sorted(k for k in m if k not in ("format", "version"))
    out = Pairs()
    for k in keys:
        v = m[k]
        if k == "metadata" and isinstance(v, dict):
            v = Pairs((mk, v[mk]) for mk in utf8_sorted(v))
        elif k == "members" and isinstance(v, dict):
            v = Pairs(
                (name, Pairs([("aliases", Pairs((a, info["aliases"][a]) for a in utf8_sorted(info["aliases"]))), ("size", info["size"])])
                 if isinstance(info, dict) and set(info) == {"aliases", "size"} and isinstance(info["aliases"], dict) else info)
                for name, info in ((n, v[n]) for n in utf8_sorted(v))
            )
        out.append((k, v))
    return out


def manifest_bytes(m: dict[str, Any]) -> bytes:
    return mp(canonical(m))


# --- safetensors written by hand (FORMAT.md §5) -----------------------------------------

DTYPE_SIZE = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1,
    "C64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}


def st_canonical(tensors: list[tuple[str, str, list[int], bytes]]) -> bytes:
    """FORMAT.md §5.2: largest element size first, then UTF-8 name order; compact JSON padded with spaces to 64."""
    ordered = sorted(tensors, key=lambda t: (-DTYPE_SIZE[t[1]], t[0].encode("utf-8")))
    header, data, offset = {}, b"", 0
    for name, dtype, shape, raw in ordered:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((-(8 + len(text))) % ALIGNMENT)
    return struct.pack("<Q", len(text)) + text + data


def st_raw(header: bytes | dict[str, Any], data: bytes, *, length: int | None = None, pad: bool = True) -> bytes:
    """A safetensors member from a literal header (bytes, or a dict dumped compactly)."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if pad:
        header += b" " * ((-(8 + len(header))) % ALIGNMENT)
    return struct.pack("<Q", len(header) if length is None else length) + header + data


def parse_st(member: bytes) -> dict[str, bytes]:
    """Tensor name -> bytes of a safetensors member (independent, trusting parse of a valid vector)."""
    (n,) = struct.unpack_from("<Q", member, 0)
    header = json.loads(member[8 : 8 + n])
    header.pop("__metadata__", None)
    base = 8 + n
    return {k: member[base + v["data_offsets"][0] : base + v["data_offsets"][1]] for k, v in header.items()}


def f32(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


# --- the shared fixtures ----------------------------------------------------------------

MODEL_ID = "00000000-0000-4000-8000-000000000001"
SAVE_DATE = "2024-01-01T00:00:00+00:00"


def metadata(**changes: Any) -> dict[str, Any]:
    meta = {
        "model_id": MODEL_ID,
        "name": "Conformance vector",
        "description": "",
        "dataset_name": "",
        "dataset_file_count": 0,
        "dataset_total_duration_s": 0.0,
        "training_date": "",
        "save_date": SAVE_DATE,
        "training_epochs": 0,
        "final_train_loss": 0.0,
        "final_val_loss": 0.0,
        "tags": [],
        "has_analysis": False,
        "n_active_components": 0,
    }
    meta.update(changes)
    return meta


def st_names(member: bytes) -> list[str] | None:
    """Tensor names of a safetensors member in header order, or None if its header does not parse."""
    try:
        (n,) = struct.unpack_from("<Q", member, 0)
        header = json.loads(member[8 : 8 + n])
        return [k for k in header if k != "__metadata__"]
    except Exception:
        return None


def flat(prefix: str, names: list[str]) -> dict[str, Any]:
    """The 'tensors' placeholder (FORMAT.md §4.4) for tensors ``prefix + key``."""
    return {"$": "tensors", "prefix": prefix, "keys": [n[len(prefix):] for n in names]}


def state_dict_for(model: bytes) -> dict[str, Any]:
    """A state_dict slot claiming every tensor of ``model`` (names under 'state_dict/' keep that prefix)."""
    names = st_names(model)
    try:
        [n.encode("utf-8") for n in names or []]
    except UnicodeEncodeError:  # a vector whose defect is the name itself: the manifest is never reached
        names = None
    if names is None:
        names = [t[0] for t in BASE_TENSORS]
    prefix = "state_dict/" if all(n.startswith("state_dict/") for n in names) else ""
    return flat(prefix, names)


def base_manifest(**changes: Any) -> dict[str, Any]:
    """A v1 manifest without ``members`` and ``state_dict`` (full_manifest adds them), value slots in raw form."""
    m: dict[str, Any] = {
        "format": "distillgan_model",
        "version": 1,
        "latent_dim": 8,
        "spectrogram_config": {"sample_rate": 22050, "n_fft": 1024, "hop_length": 256, "n_mels": 80},
        "training_config": {"batch_size": 16, "epochs": 3, "learning_rate": 0.0002},
        "analysis": None,
        "metadata": metadata(),
        "vocoder_state": None,
        "extra": None,
    }
    m.update(changes)
    return m


# The tensors of every invalid vector's model member: "b" F32[2], "w" F32[2,2] (a state dict {"b", "w"}).
BASE_TENSORS = [("state_dict/w", "F32", [2, 2], f32(0.5, -1.0, 2.0, 0.25)), ("state_dict/b", "F32", [2], f32(1.0, -2.0))]
VOCODER_PREFIX = "vocoder_state/generator_state_dict/"
VOCODER_TENSORS = [(VOCODER_PREFIX + "conv.weight", "F32", [1, 1, 3], f32(0.25, 0.5, 0.25)), (VOCODER_PREFIX + "conv.bias", "F32", [1], f32(0.0))]


def vocoder_state_for(vocoder: bytes) -> dict[str, Any]:
    """The app's vocoder_state shape (FORMAT.md §4.3), claiming every tensor of ``vocoder``."""
    names = st_names(vocoder) or [t[0] for t in VOCODER_TENSORS]
    prefix = VOCODER_PREFIX if all(n.startswith(VOCODER_PREFIX) for n in names) else ""
    return {
        "type": "hifigan",
        "generator_state_dict": flat(prefix, names),
        "config": {"upsample_rates": {"$": "tuple", "items": [8, 8, 2, 2]}},
        "training_metadata": {"epochs": 5, "final_loss": 0.125},
    }


def full_manifest(model: bytes, vocoder: bytes | None = None, *, aliases: dict[str, str] | None = None, **changes: Any) -> dict[str, Any]:
    m = base_manifest(**changes)
    m.setdefault("state_dict", state_dict_for(model))
    m["members"] = {MODEL: {"aliases": aliases or {}, "size": len(model)}}
    if vocoder is not None:
        if m["vocoder_state"] is None:
            m["vocoder_state"] = vocoder_state_for(vocoder)
        m["members"][VOCODER] = {"aliases": {}, "size": len(vocoder)}
    return m


def archive_of(model: bytes | None = None, vocoder: bytes | None = None, *, manifest: bytes | dict[str, Any] | None = None,
               **zip_kw: Any) -> bytes:
    """A profile archive of the base model (and vocoder), with any member replaced."""
    model = st_canonical(BASE_TENSORS) if model is None else model
    if manifest is None:
        manifest = full_manifest(model, vocoder)
    mbytes = manifest_bytes(manifest) if isinstance(manifest, dict) else manifest
    members: list[tuple[str | bytes, bytes]] = [(MANIFEST, mbytes), (MODEL, model)]
    if vocoder is not None:
        members.append((VOCODER, vocoder))
    return zip_archive(members, **zip_kw)


def with_model(model: bytes, **changes: Any) -> bytes:
    """The base archive with this model member (manifest size kept right)."""
    return archive_of(model, manifest=full_manifest(model, **changes))


def manifest_variant(m: Any) -> bytes:
    """The base archive with the manifest ``m`` (a dict, Pairs or raw bytes) as its first member."""
    model = st_canonical(BASE_TENSORS)
    data = m if isinstance(m, bytes) else mp(m)
    return zip_archive([(MANIFEST, data), (MODEL, model)])


def base_pairs(**replace: Any) -> Pairs:
    """The canonical base manifest as Pairs with values replaced, keys dropped (value DROP) or appended."""
    model = st_canonical(BASE_TENSORS)
    return _replace(canonical(full_manifest(model)), replace)


def vocoder_pairs(**replace: Any) -> Pairs:
    """Like base_pairs, for the base archive with a vocoder (see vocoder_variant)."""
    return _replace(canonical(full_manifest(st_canonical(BASE_TENSORS), st_canonical(VOCODER_TENSORS))), replace)


def vocoder_variant(m: Any) -> bytes:
    """The base archive with a vocoder and the manifest ``m``."""
    data = m if isinstance(m, bytes) else mp(m)
    return zip_archive([(MANIFEST, data), (MODEL, st_canonical(BASE_TENSORS)), (VOCODER, st_canonical(VOCODER_TENSORS))])


def _replace(pairs: Pairs, replace: dict[str, Any]) -> Pairs:
    out = Pairs()
    for k, v in pairs:
        if k in replace:
            if replace[k] is DROP:
                continue
            v = replace[k]
        out.append((k, v))
    present = {k for k, _ in pairs}
    out.extend((k, v) for k, v in replace.items() if k not in present and v is not DROP)
    return out


DROP = object()


def meta_pairs(**replace: Any) -> Pairs:
    return _replace(Pairs((k, metadata()[k]) for k in utf8_sorted(metadata())), replace)


# --- valid vectors: distillgan's writer --------------------------------------------------


def py_manifest(state_dict: Any, **changes: Any) -> dict[str, Any]:
    """The Python values distillgan's writer takes for the base manifest (value slots as Python objects)."""
    m = {k: v for k, v in base_manifest(**changes).items() if k not in ("format", "version")}
    m["state_dict"] = state_dict
    return m


def write_with_distillgan(manifest: dict[str, Any], user_metadata: dict[str, str] | None = None) -> bytes:
    import distillgan

    f = io.BytesIO()
    distillgan.write_archive(f, manifest, user_metadata=user_metadata)
    return f.getvalue()


def valid_vectors() -> list[tuple[str, bytes, str, str]]:
    import enum

    import numpy as np
    import torch

    out = []

    def ar(n: int, dtype: Any, scale: float = 0.5) -> Any:
        return (torch.arange(n, dtype=torch.float64) * scale - 1.0).to(dtype)

    def vocoder_py(state: dict[str, Any]) -> dict[str, Any]:
        return {"type": "hifigan", "generator_state_dict": state, "config": {"upsample_rates": (8, 8, 2, 2)},
                "training_metadata": {"epochs": 5, "final_loss": 0.125}}

    # minimal: cross-checked against the independent builders
    model = {"b": torch.tensor([1.0, -2.0]), "w": torch.tensor([[0.5, -1.0], [2.0, 0.25]])}
    data = write_with_distillgan(py_manifest(model))
    by_hand = archive_of()
    if data != by_hand:
        raise SystemExit("distillgan's writer and the generator's builders disagree on the minimal archive (FORMAT.md §3, §4.2, §5.2)")
    out.append(("minimal", data, "§3", "Manifest and one model member with two F32 tensors; the byte layout of FORMAT.md §3–§5 exactly."))

    user = {"licence": "CC-BY-4.0", "format": "pt", "\u00e9t\u00e9": "\u00fc", "Z": ""}  # stored sorted by UTF-8 bytes
    data = write_with_distillgan(py_manifest(model), user_metadata=user)
    member = dict(members_of(data))["model.safetensors"]
    stored = json.dumps({k: user[k] for k in sorted(user, key=lambda k: k.encode("utf-8"))}, separators=(",", ":"), ensure_ascii=False)
    if not member[8:].startswith(b'{"__metadata__":' + stored.encode("utf-8") + b',"state_dict/b":'):
        raise SystemExit("distillgan's writer does not put user metadata first in model.safetensors, sorted (FORMAT.md §5.2)")
    out.append(("user-metadata", data, "§5.2",
                "User metadata (a map of str to str) as model.safetensors' __metadata__: the header's first key, its pairs in "
                "UTF-8 byte order of the keys, non-ASCII written as UTF-8."))

    vocoder = {"conv.bias": torch.tensor([0.0]), "conv.weight": torch.tensor([[[0.25, 0.5, 0.25]]])}
    data = write_with_distillgan(py_manifest(model, vocoder_state=vocoder_py(vocoder)))
    if data != archive_of(vocoder=st_canonical(VOCODER_TENSORS)):
        raise SystemExit("distillgan's writer and the generator's builders disagree on the archive with a vocoder")
    out.append(("with-vocoder", data, "§3.1",
                "Three members: manifest, model and a bundled vocoder whose vocoder_state holds its state dict, config and training metadata."))

    # analysis arrays, through the public save_model API with a fixed id and date
    import distillgan

    with tempfile.TemporaryDirectory() as tmp:
        meta = distillgan.ModelMetadata(model_id=MODEL_ID, save_date=SAVE_DATE, name="With analysis", tags=["vae", "test"])
        analysis = {
            "n_active_components": 2,
            "pca_components": np.arange(6, dtype=np.float32).reshape(2, 3) / 4,
            "explained_variance": np.array([0.75, 0.25]),
            "latent_mean": torch.linspace(-1, 1, 4),
            "feature_correlations": {"brightness": [0.5, math.nan]},
            "labels": ["a", "b"],
        }
        path = distillgan.save_model(model, {"sample_rate": 22050}, {"epochs": 1}, meta, tmp, analysis=analysis)
        data = Path(path).read_bytes()
    out.append(("analysis", data, "§4.4",
                ("Saved by save_model with an analysis holding numpy arrays, a tensor and a NaN: ndarray and tensor placeholders "
                 "naming analysis/… tensors of model.safetensors.")))

    all_dtypes = {}
    for code, tdtype in [
        ("F64", torch.float64), ("F32", torch.float32), ("F16", torch.float16), ("BF16", torch.bfloat16),
        ("F8_E4M3", torch.float8_e4m3fn), ("F8_E5M2", torch.float8_e5m2), ("F8_E4M3FNUZ", torch.float8_e4m3fnuz),
        ("F8_E5M2FNUZ", torch.float8_e5m2fnuz), ("I64", torch.int64), ("I32", torch.int32), ("I16", torch.int16),
        ("I8", torch.int8), ("U64", torch.uint64), ("U32", torch.uint32), ("U16", torch.uint16), ("U8", torch.uint8),
    ]:
        all_dtypes[code.lower()] = ar(5, tdtype) if tdtype.is_floating_point else torch.arange(5).to(tdtype)
    all_dtypes["c64"] = torch.complex(ar(3, torch.float32), ar(3, torch.float32, 0.25))
    all_dtypes["bool"] = torch.tensor([True, False, True, True, False])
    all_dtypes["f32_nonfinite"] = torch.tensor([math.nan, math.inf, -math.inf, -0.0])
    all_dtypes["f16_nonfinite"] = torch.tensor([math.nan, math.inf, -math.inf, 65504.0], dtype=torch.float16)
    data = write_with_distillgan(py_manifest(all_dtypes))
    out.append(("all-dtypes", data, "§5.3",
                ("One tensor of every dtype of FORMAT.md §5.3, including float8 variants, C64, BOOL and unsigned ints; "
                "NaN and infinities are data, not defects.")))

    shapes = {
        "empty_1d": torch.zeros(0),
        "empty_3d": torch.zeros(3, 0, 2, dtype=torch.int64),
        "empty_bool": torch.zeros(0, dtype=torch.bool),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "scalar_bool": torch.tensor(True),
        "scalar_u8": torch.tensor(7, dtype=torch.uint8),
        "w": torch.tensor([[1.0, 2.0]]),
    }
    data = write_with_distillgan(py_manifest(shapes))
    out.append(("zero-size-and-scalars", data, "§5.2",
                "Zero-size tensors (sharing offsets with their neighbours) and rank-0 tensors."))

    shared = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    tied = {"decoder.weight": shared, "encoder.weight": shared, "head.weight": shared, "bias": torch.tensor([0.5])}
    vshared = torch.tensor([0.25, 0.75])
    vtied = {"a.weight": vshared, "b.weight": vshared}
    data = write_with_distillgan(py_manifest(tied, vocoder_state=vocoder_py(vtied), extra={"ema": {"head": shared}}))
    out.append(("aliases", data, "§5.5",
                ("Tied weights stored once: $.members.*.aliases maps the later names (in UTF-8 order) to the first, in the model "
                 "and the vocoder; a tensor in extra tied to the state dict's is an alias too.")))

    names = {
        "层.权重": torch.tensor([1.0]),
        "café": torch.tensor([2.0]),
        "cafe\u0301": torch.tensor([3.0]),
        "emoji.😀": torch.tensor([4.0]),
        "with space/and/slashes": torch.tensor([5.0]),
        "quote\"back\\slash": torch.tensor([6.0]),
        "日本語": torch.tensor([7, 8], dtype=torch.int16),
    }
    meta = metadata(name="Ünïcødé 模型 🎵", description="línea\ttab and newline\n", tags=["ñ", "😀"])
    data = write_with_distillgan(py_manifest(names, metadata=meta))
    out.append(("unicode-names", data, "§5.4",
                "Tensor names in several scripts, NFC and NFD spellings, an emoji, quotes and backslashes; unicode metadata."))

    meta = metadata(final_train_loss=None, final_val_loss=None, dataset_file_count=2**64 - 1, training_epochs=2**63)
    data = write_with_distillgan(
        py_manifest(model, latent_dim=None, metadata=meta,
                    training_config={"i64_min": -(2**63), "u64_max": 2**64 - 1, "tiny": 5e-324, "big": 1.7976931348623157e308,
                                     "nested": {"list": [None, True, False, "", [], {}]}}),
    )
    out.append(("nulls-and-extremes", data, "§4.3",
                "Nullable fields as nil, integers at the ends of the 64-bit ranges, the smallest and largest doubles, empty containers."))

    class Preset(enum.Enum):
        BALANCED = "balanced"

    payload_nan = struct.unpack("<d", bytes.fromhex("0100000000f8ffff"))[0]  # a negative NaN with a payload
    values = {
        "preset": Preset.BALANCED,
        "betas": (0.8, 0.99),
        "nested_tuple": ((1, "a"), (), [(None,)]),
        "int_keys": {0: "zero", -1: "minus one", 2**64 - 1: "u64 max", "0": "the string zero"},
        "bytes": b"\x00\xffbinary",
        "empty_bytes": b"",
        "nan": math.nan,
        "nan_payload": payload_nan,
        "inf": math.inf,
        "minus_inf": -math.inf,
        "minus_zero": -0.0,
        "dollar": {"$": "a user key that looks like a tag", "x": 1},
        "order": {"z": 1, "a": 2, "m": 3},
    }
    meta = metadata(final_train_loss=math.nan, final_val_loss=math.inf)
    data = write_with_distillgan(py_manifest(model, training_config=values, metadata=meta))
    out.append(("value-kinds", data, "§4.4",
                ("Every value kind of FORMAT.md §4.4 in training_config: tuples (nested, empty), int keys beside str keys, bytes, "
                 "NaN (with a payload), ±inf, -0.0, a user map with a '$' key (the map tag), map order that is not sorted; "
                 "NaN and inf losses in metadata.")))

    param = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    grad = torch.tensor([0.5], requires_grad=True)
    opt_state = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.tensor([0.1, 0.2]), "exp_avg_sq": torch.tensor([0.01, 0.04])}},
        "param_groups": [{"lr": 0.0002, "betas": (0.8, 0.99), "eps": 1e-08, "foreach": None, "params": [0]}],
    }
    anywhere = {
        "scale": torch.tensor(2.0),
        "window": np.hanning(4).astype(np.float32),
        "stack": [torch.tensor([1, 2], dtype=torch.int32), (np.array([True, False]), torch.tensor([0.5], dtype=torch.float16))],
        "param": param,
        "grad": grad,
    }
    data_anywhere = write_with_distillgan(py_manifest(model, training_config={"filters": anywhere},
                                             vocoder_state={**vocoder_py(vocoder), "checkpoint": {"optim_g": opt_state, "epoch": 3}},
                                             extra={"param_again": param}))
    deep: Any = 0
    for _ in range(62):  # training_config is depth 1, "deep" depth 2: the innermost 0 sits at depth 64, the limit
        deep = [deep]
    data = write_with_distillgan(py_manifest(model, training_config={"deep": deep}))
    out.append(("depth-at-limit", data, "§8",
                "training_config.deep nests 62 arrays: the innermost value is at depth 64, the deepest a reader accepts "
                "(manifest-too-deep is one level more)."))
    out.append(("tensors-anywhere", data_anywhere, "§4.4",
                ("Tensors, a Parameter (requires_grad) and a tensor requiring grad, numpy arrays and 0-d tensors inside configs, "
                 "lists and tuples, an optimizer state with int keys and a tuple in the vocoder_state, and a Parameter named twice "
                 "(an alias with the same placeholder kind).")))
    return out


def valid_by_hand() -> list[tuple[str, bytes, str, str]]:
    out = []
    # A safetensors member as another writer might make it (FORMAT.md §5.1 accepts it; §5.2 is what we write).
    header = (
        b'{"__metadata__": {"format": "pt", "written_by": "hand"}, '
        b'"b": {"shape": [3], "dtype": "U8", "data_offsets": [0, 3]}, '
        b'"caf\\u00e9": {"data_offsets": [3, 11], "dtype": "F32", "shape": [2]}, '
        b'"z": {"dtype": "I16", "shape": [1, 1], "data_offsets": [11, 13]}}'
    )
    model = st_raw(header, bytes([1, 2, 3]) + f32(1.5, -2.5) + struct.pack("<h", -7), pad=False)
    out.append(("foreign-safetensors", archive_of(model), "§5.1",
                ("model.safetensors not in canonical layout: __metadata__, spaced JSON in another key order, a \\u escape in a name, "
                "header length not a multiple of 8, an F32 tensor at a misaligned offset 3. Accepted (copied on load).")))

    model = st_canonical(BASE_TENSORS)
    flags = {i: {"flags": 0x0800} for i in range(2)}
    out.append(("utf8-flag", archive_of(model, local=flags, central=flags), "§3.2",
                "General purpose flag bit 11 (UTF-8 names) set in every local and central header: the one allowed flag."))

    m = full_manifest(model)
    noncanon = Pairs([
        ("format", Raw(b"\xd9\x10distillgan_model")),  # str8 where fixstr would do
        ("version", Raw(b"\xce\x00\x00\x00\x01")),  # uint32 where a fixint would do
        ("training_config", Raw(b"\xde\x00\x01" + mp("learning_rate") + b"\xca" + struct.pack(">f", 0.5))),  # map16, float32
        ("metadata", m["metadata"]),
        ("latent_dim", Raw(b"\xd3" + struct.pack(">q", 8))),  # int64 for a small non-negative int
        ("members", m["members"]),
        ("analysis", None),
        ("state_dict", m["state_dict"]),
        ("spectrogram_config", m["spectrogram_config"]),
        ("extra", None),
        ("vocoder_state", None),
    ])
    out.append(("manifest-noncanonical", zip_archive([(MANIFEST, mp(noncanon)), (MODEL, model)]), "§4.2",
                ("A manifest in valid but non-canonical msgpack: str8/uint32/int64/map16 where shorter forms exist, a float32, "
                "keys after format/version in unsorted order. Readers accept any valid encoding.")))

    empty = st_raw(b"{}", b"")
    out.append(("no-tensors", with_model(empty), "§5.1", "A model member whose safetensors header is {} and holds no tensors."))

    tensors = [("weights", "F32", [2], f32(1.0, 2.0)), ("Z", "F32", [1], f32(3.0)), ("the same Z", "F32", [1], f32(3.0))]
    member = st_canonical(tensors[:2])
    hand = full_manifest(member, aliases={"the same Z": "Z"})
    hand["state_dict"] = Pairs([("$", "map"), ("items", [["weights", Pairs([("name", "weights"), ("$", "tensor")])]])])
    hand["training_config"] = Pairs([
        ("z", Pairs([("requires_grad", False), ("name", "Z"), ("$", "tensor")])),
        ("same_z", {"$": "tensor", "name": "the same Z", "requires_grad": False}),
        ("pair", Pairs([("items", [Raw(b"\xca" + struct.pack(">f", 0.5)), []]), ("$", "tuple")])),
    ])
    out.append(("placeholders-by-hand", archive_of(member, manifest=hand), "§4.4",
                ("Placeholders as another writer may write them: tensor names outside the writer's naming rule, keys of tagged maps "
                 "in another order, an explicit requires_grad false, the map tag for str keys, a float32 inside a tuple, and an "
                 "alias named by its own placeholder.")))

    # boundaries at the limit (FORMAT.md §8); the one-past vectors are invalid/*
    for id_, header, raw, desc in [
        ("rank-32", {"w": {"dtype": "F32", "shape": [1] * 31 + [2], "data_offsets": [0, 8]}}, f32(1.0, 2.0),
         "A tensor of rank 32, MAX_RANK (invalid/st-rank-33 is one past)."),
        ("dim-int64-max", {"w": {"dtype": "U8", "shape": [0, 2**63 - 1], "data_offsets": [0, 0]}}, b"",
         "A zero-size tensor with a dimension of 2^63-1, MAX_DIM (invalid/st-dim-over-int64 is one past)."),
        ("numel-int64-max", {"w": {"dtype": "U8", "shape": [0, 7, (2**63 - 1) // 7], "data_offsets": [0, 0]}}, b"",
         "A zero-size tensor of shape [0, 7, (2^63-1)/7]: the element count with the zero dimension counted as 1 is exactly "
         "2^63-1, MAX_DIM (invalid/st-numel-over-int64 is one past)."),
        ("name-1024-bytes", {"n" * 1024: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, f32(1.0),
         "A tensor name of 1024 bytes, MAX_NAME_BYTES (invalid/st-name-too-long is one past)."),
        ("name-1024-bytes-escaped", None, f32(1.0),
         "A name of 512 characters written as \\u00e9 escapes (3072 bytes of JSON, 1024 UTF-8 bytes decoded): "
         "the limit applies to the decoded name (invalid/st-name-too-long-escaped is one past)."),
    ]:
        if header is None:
            text = json.dumps({"é" * 512: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
            member = st_raw(text, raw)
        else:
            member = st_raw(header, raw)
        names = st_names(member) or []
        man = full_manifest(member, state_dict={"$": "tensors", "prefix": "", "keys": names})
        out.append((id_, archive_of(member, manifest=man), "§8", desc))
    out.append(("depth-64-maps", archive_of(model, manifest=full_manifest(model, training_config={"d": _nest_maps(62)})), "§8",
                "Maps nested so that the innermost value sits at depth 64, MAX_DEPTH (invalid/manifest-depth-65-map is one past)."))
    meta_null = st_raw({"__metadata__": None, "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, f32(1.0, -2.0))
    out.append(("metadata-null", archive_of(meta_null, manifest=full_manifest(meta_null, state_dict={"$": "tensors", "prefix": "", "keys": ["b"]})),
                "§5.1", "__metadata__: null in the safetensors header (accepted as no metadata)."))
    return out


def _nest_arrays(n: int, inner: Any) -> Any:
    """``n`` arrays each holding the next, the innermost holding ``inner``."""
    value = inner
    for _ in range(n):
        value = [value]
    return value


def valid_readings() -> list[tuple[str, bytes, str, str]]:
    """Valid vectors that pin a reading of FORMAT.md another careful reader could take (§14 lists them)."""
    out = []
    model = st_canonical(BASE_TENSORS)
    w_tensors = flat("state_dict/", ["state_dict/b", "state_dict/w"])
    m = full_manifest(model, aliases={"tied/w": "state_dict/w"}, state_dict=w_tensors,
                      training_config={"tied": {"$": "tensor", "name": "tied/w"}})
    out.append(("alias-tensors-key-and-tensor", archive_of(model, manifest=m), "§4.4",
                ("state_dict/w is claimed by a key of a 'tensors' map and its alias tied/w by a 'tensor' placeholder without "
                "requires_grad: a key of a 'tensors' map is a 'tensor' placeholder without requires_grad, so the two agree (X2).")))
    m = full_manifest(model, aliases={"tied/w": "state_dict/w"},
                      state_dict=Pairs([("b", {"$": "tensor", "name": "state_dict/b"}),
                                        ("w", Pairs([("$", "tensor"), ("name", "state_dict/w"), ("requires_grad", False)]))]),
                      training_config={"tied": {"$": "tensor", "name": "tied/w"}})
    out.append(("alias-requires-grad-false-and-absent", archive_of(model, manifest=m), "§4.4",
                ("A stored tensor claimed by a 'tensor' placeholder with requires_grad false and its alias by one without the "
                "key: a missing requires_grad is false, so the two agree (X2).")))
    floats = Pairs([
        ("snan32", Raw(b"\xca\x7f\x80\x00\x01")),  # float32 signalling NaN, payload 1
        ("neg_nan32_payload", Raw(b"\xca\xff\xa0\x00\x05")),  # float32 quiet NaN, sign set, payload 0x200005
        ("snan64", Raw(b"\xcb\x7f\xf0\x00\x00\x00\x00\x00\x01")),  # float64 signalling NaN: kept bit for bit
        ("tenth32", Raw(b"\xca" + struct.pack(">f", 0.1))),
        ("neg_zero32", Raw(b"\xca\x80\x00\x00\x00")),
        ("neg_zero", -0.0),
        ("inf32", Raw(b"\xca\xff\x80\x00\x00")),
    ])
    out.append(("float32-widened", archive_of(model, manifest=full_manifest(model, training_config=floats)), "§4.6",
                ("float32 values in a value tree: a signalling NaN (7f800001) projects as the float64 an IEEE 754 conversion "
                "gives, quiet bit set and payload kept (7ff8000020000000), a negative NaN with a payload likewise "
                "(fffc0000a0000000); a float64 signalling NaN keeps its bits; 0.1f prints as 0.10000000149011612; -0.0 "
                "(float32 and float64) keeps its sign; -inf32 is -inf.")))
    zs = [("state_dict/a0", "F32", [0], b""), ("state_dict/w", "F32", [2, 2], f32(0.5, -1.0, 2.0, 0.25)),
          ("state_dict/m0", "F32", [0, 3], b""), ("state_dict/m1", "U8", [0], b""), ("state_dict/b", "F32", [2], f32(1.0, -2.0)),
          ("state_dict/z0", "F64", [4, 0], b"")]
    offsets, header, data = 0, {}, b""
    for name, dtype, shape, raw in zs:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offsets, offsets + len(raw)]}
        offsets += len(raw)
        data += raw
    zmodel = st_raw(header, data)
    out.append(("zero-size-at-boundaries", with_model(zmodel), "§5.1",
                ("Zero-size tensors at offset 0, two at the boundary between two tensors, and one at the end of the data section: "
                "each begins where the previous tensor (sorted by begin, end) ends, so the layout is contiguous (H11).")))
    out.append(("depth-64-empty", archive_of(model, manifest=full_manifest(model, training_config={"d": _nest_arrays(62, [])})), "§8",
                ("An empty array at depth 64: an empty container is an item like any other and sits at the limit "
                "(invalid/manifest-depth-65-empty-array is one past).")))
    return out


# --- invalid vectors --------------------------------------------------------------------


def invalid_vectors() -> list[tuple[str, bytes, str, str, str, str | None]]:
    """(id, bytes, code, section, description, needs)."""
    V: list[tuple[str, bytes, str, str, str, str | None]] = []

    def add(id_: str, data: bytes, code: str, section: str, description: str, needs: str | None = None) -> None:
        V.append((id_, data, code, section, description, needs))

    model = st_canonical(BASE_TENSORS)
    vocoder = st_canonical(VOCODER_TENSORS)
    base = archive_of(model)
    mbytes = manifest_bytes(full_manifest(model))
    n, cd_size, cd_off = dir_info(base)
    eocd_pos = len(base) - EOCD.size
    members = [(MANIFEST, mbytes), (MODEL, model)]
    members3 = [(MANIFEST, manifest_bytes(full_manifest(model, vocoder))), (MODEL, model), (VOCODER, vocoder)]

    # ---- §2 magic and §3 container ----
    add("empty", b"", "not-zip", "§2", "An empty file.")
    add("not-zip-text", b"This is not a zip archive, just some text.\n" * 4, "not-zip", "§2", "Plain text.")
    add("prepended-data", b"JUNKJUNKJUNKJUNK" + base, "not-zip", "§2",
        "16 bytes before a valid archive (zip readers that search for the end record accept it).")
    add("spanning-marker", b"PK\x07\x08" + base, "not-zip", "§2", "A split-archive marker PK\\x07\\x08 before the first local header.")
    add("truncated-short", base[:40], "truncated", "§3.5", "The first 40 bytes of a valid archive.")
    add("truncated-half", base[: len(base) // 2], "zip-eocd", "§3.5", "A valid archive cut in half: no end record.")
    add("truncated-one-byte", base[:-1], "zip-eocd", "§3.5", "A valid archive missing its last byte.")
    add("trailing-bytes", base + bytes(8), "zip-eocd", "§3.5", "Eight zero bytes after the end record.")
    add("concatenated-archives", base + base, "zip-layout", "§3.5",
        "Two valid archives back to back: the last end record's directory offset is relative to the second one.")
    tiny = zipfile.ZipInfo("a.txt", (1980, 1, 1, 0, 0, 0))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(tiny, b"hello")
    add("prepended-zip", buf.getvalue() + base, "zip-layout", "§3.5",
        "Another small zip in front of a valid archive: the file starts with a local header that is not ours.")
    add("archive-comment", zip_archive(members, comment=b"comment"), "zip-eocd", "§3.5",
        "A 7-byte archive comment: the end record is not the last 22 bytes.")
    add("comment-length-only", zip_archive(members, eocd={"comment_len": 7}), "zip-comment", "§3.5",
        "The end record's comment length is 7 but no comment follows.")
    fake = EOCD.pack(EOCD_SIG, 0, 0, n, n, cd_size, cd_off, 0)
    add("fake-eocd-in-comment", zip_archive(members, comment=fake), "zip-layout", "§3.5",
        "The archive comment holds a second end record, so the last 22 bytes look like an end record with no comment.")
    add("two-end-records", base + base[eocd_pos:], "zip-layout", "§3.5", "The end record repeated after itself.")
    add("eocd-disk-number", zip_archive(members, eocd={"disk": 1}), "zip-eocd", "§3.5", "End record: number of this disk 1.")
    add("eocd-cd-disk-number", zip_archive(members, eocd={"cd_disk": 1}), "zip-eocd", "§3.5",
        "End record: disk where the central directory starts 1.")
    add("eocd-count-disk-vs-total", zip_archive(members, eocd={"n_disk": 1}), "zip-eocd", "§3.5",
        "End record: 1 entry on this disk, 2 in total.")
    add("eocd-count-one", zip_archive(members, eocd={"n_disk": 1, "n_total": 1}), "zip-entry-count", "§3.5",
        "End record counts 1 entry; the directory holds 2.")
    add("eocd-count-three", zip_archive(members, eocd={"n_disk": 3, "n_total": 3}), "zip-layout", "§3.5",
        "End record counts 3 entries; the directory holds 2.")
    add("eocd-count-fewer", zip_archive(members3, eocd={"n_disk": 2, "n_total": 2}), "zip-layout", "§3.5",
        "End record counts 2 entries; the directory holds 3 (the vocoder is hidden from readers that trust the count).")
    add("eocd-count-four", zip_archive(members, eocd={"n_disk": 4, "n_total": 4}), "zip-layout", "§3.5",
        "End record counts 4 entries; the directory holds 2.")
    add("eocd-count-over-limit", zip_archive(members, eocd={"n_disk": 1000, "n_total": 1000}), "zip-entry-count", "§8",
        "End record counts 1000 entries (more than a reader parses before it knows the format version).")
    add("eocd-cd-offset-low", zip_archive(members, eocd={"cd_off": cd_off - 1}), "zip-layout", "§3.5",
        "End record: directory offset one byte early.")
    add("eocd-cd-size-high", zip_archive(members, eocd={"cd_size": cd_size + 1}), "zip-layout", "§3.5",
        "End record: directory size one byte too large.")
    add("eocd-cd-offset-past-end", zip_archive(members, eocd={"cd_off": 0x7FFFFFF0}), "zip-layout", "§3.5",
        "End record: directory offset past the end of the file.")
    add("cd-trailing-bytes", zip_archive(members, cd_suffix=bytes(4)), "zip-layout", "§3.5",
        "Four bytes after the last directory entry, counted in the directory size.")
    add("cd-bad-signature", zip_archive(members, central={1: {"sig": b"PK\x01\x03"}}), "zip-layout", "§3.5",
        "The second directory entry's signature is PK\\x01\\x03.")
    add("cd-name-past-directory", zip_archive(members, central={1: {"nlen": 0x4000}}), "zip-layout", "§3.5",
        "A directory entry's name length runs past the directory.")
    add("local-bad-signature", zip_archive(members, local={1: {"sig": b"PK\x03\x05"}}), "zip-layout", "§3.2",
        "The model member's local header signature is PK\\x03\\x05.")
    add("local-extra-into-directory", zip_archive(members, local={1: {"xlen": 0xF000}}), "zip-layout", "§3.2",
        "The model member's local extra length runs into the central directory.")

    # ---- §3.3 zip64 ----
    z64 = {"record": {}, "locator": {}}
    add("zip64-unneeded", zip_archive(members, zip64=z64, eocd={"n_disk": 0xFFFF, "n_total": 0xFFFF, "cd_size": U32, "cd_off": U32}),
        "zip64", "§3.3", "Zip64 end records for an archive whose values all fit in 32 bits, the end record holding 0xFFFF…")
    add("zip64-records-without-sentinels", zip_archive(members, zip64=z64), "zip-layout", "§3.3",
        "Zip64 end record and locator between the directory and an end record that does not ask for them.")
    add("zip64-locator-offset", zip_archive(members, zip64={"locator": {"offset": 0}}, eocd={"cd_off": U32}), "zip64", "§3.5",
        "The zip64 locator points at offset 0, not at the record just before it.")
    fake_rec = zip64_record(2, cd_size, cd_off)
    add("zip64-locator-second-record",
        zip_archive(members, zip64={"fake_record": fake_rec, "locator": {"offset": len(mbytes) + len(model) + 64 + cd_size}},
                    eocd={"cd_off": U32}),
        "zip64", "§3.5",
        "Two zip64 end records; the locator points at the first one rather than the one that precedes it (CVE-2025-8291).")
    add("zip64-sizes-disagree", zip_archive(members, zip64={"record": {"cd_size": U32 + 1}}, eocd={"cd_size": U32, "cd_off": cd_off + 1}),
        "zip64", "§3.5", "End record and zip64 record give different directory offsets.")
    add("zip64-locator-missing", zip_archive(members, eocd={"cd_off": U32}), "zip64", "§3.5",
        "The end record's directory offset is 0xFFFFFFFF but no zip64 locator precedes it.")
    add("zip64-record-malformed", zip_archive(members, zip64={"record": {"size": 40}}, eocd={"cd_off": U32}), "zip64", "§3.5",
        "The zip64 end record's size field is 40; the profile's record has 44.")
    size1 = len(model)
    add("zip64-extra-unneeded",
        zip_archive(members, central={1: {"usize": U32, "csize": U32, "version": 45, "extra": struct.pack("<HHQQ", 1, 16, size1, size1)}}),
        "zip64", "§3.3", "The model's directory entry carries its 32-bit sizes in a zip64 extra field.")
    add("zip64-offset-unneeded",
        zip_archive(members, central={1: {"offset": U32, "version": 45, "extra": struct.pack("<HHQ", 1, 8, 0x40)}}),
        "zip64", "§3.3", "The model's directory entry carries its 32-bit local header offset in a zip64 extra field.")
    add("zip64-extra-trailing",
        zip_archive(members, central={1: {"usize": U32, "csize": U32, "version": 45,
                                          "extra": struct.pack("<HHQQ", 1, 16, 2**32, 2**32) + b"\x00" * 4}}),
        "zip-extra-field", "§3.3", "A zip64 extra field followed by four more bytes in the model's directory entry.")
    add("zip64-one-size",
        zip_archive(members, central={1: {"usize": U32, "version": 45, "extra": struct.pack("<HHQ", 1, 8, 2**32)}}),
        "zip64", "§3.3", "Only the uncompressed size in the zip64 extra field; the compressed size stays 32-bit.")
    add("zip64-extra-wrong-id",
        zip_archive(members, central={1: {"usize": U32, "csize": U32, "version": 45, "extra": struct.pack("<HHQQ", 7, 16, size1, size1)}}),
        "zip64", "§3.3", "Sizes of 0xFFFFFFFF with an extra field of id 0x0007 instead of zip64.")

    # ---- §3.1 member names, order, count ----
    add("duplicate-manifest", zip_archive([(MANIFEST, mbytes), (MANIFEST, model)]), "zip-member-name", "§3.1",
        "manifest.msgpack twice.")
    add("duplicate-model", zip_archive([members[0], members[1], (MODEL, vocoder)]), "zip-member-name", "§3.1",
        "model.safetensors twice (readers that keep the last would see the second).")
    add("member-order-swapped", zip_archive([(MODEL, model), (MANIFEST, mbytes)]), "zip-member-name", "§3.1",
        "model.safetensors before manifest.msgpack.")
    add("vocoder-before-model", zip_archive([members3[0], members3[2], members3[1]]), "zip-member-name", "§3.1",
        "vocoder.safetensors before model.safetensors.")
    add("extra-member", zip_archive(members3 + [("notes.txt", b"hello")]), "zip-entry-count", "§3.1",
        "A fourth member notes.txt.")
    add("unknown-third-member", zip_archive(members + [("data.pkl", pickle.dumps({"a": 1}, protocol=4))]), "zip-member-name", "§3.1",
        "A pickle named data.pkl as the third member.")
    add("only-manifest", zip_archive([(MANIFEST, mbytes)]), "zip-entry-count", "§3.1", "The manifest alone.")
    for id_, name, desc in [
        ("name-misspelt", b"model.safetensor", "model.safetensor (no s)."),
        ("name-case", b"Model.safetensors", "Model.safetensors (capital M)."),
        ("name-dotdot", b"../model.safetensors", "../model.safetensors (path traversal)."),
        ("name-absolute", b"/model.safetensors", "/model.safetensors (absolute path)."),
        ("name-subdirectory", b"x/model.safetensors", "x/model.safetensors."),
        ("name-backslash", b"x\\model.safetensors", "x\\model.safetensors (a Windows path)."),
        ("name-nul", b"model.safetensors\x00.pkl", "model.safetensors\\0.pkl: readers that cut names at NUL see model.safetensors."),
        ("name-control", b"model.safetensors\n", "model.safetensors followed by a newline."),
        ("name-directory", b"model.safetensors/", "model.safetensors/ (a directory name)."),
        ("name-homoglyph", "model.safetensоrs".encode(), "model.safetensоrs with a Cyrillic о."),
    ]:
        add(id_, zip_archive([members[0], (name, model)]), "zip-member-name", "§3.1", f"The second member is named {desc}")
    add("name-nul-local-only", zip_archive(members, local={1: {"name": b"model.safetensors\x00"}}), "zip-header-mismatch", "§3.2",
        "The local header names model.safetensors\\0; the directory names model.safetensors.")

    # ---- §3.2 header fields ----
    for id_, xattr, made_by, desc in [
        ("attr-directory", (0o040755 << 16) | 0x10, MADE_BY, "Unix directory mode and the MS-DOS directory bit."),
        ("attr-dos-directory", 0x10, 0x0014, "MS-DOS host with the directory attribute bit."),
        ("attr-symlink", 0o120777 << 16, MADE_BY, "Unix symlink mode (a link named model.safetensors)."),
        ("attr-device", 0o020644 << 16, MADE_BY, "Unix character-device mode."),
        ("attr-fifo", 0o010644 << 16, MADE_BY, "Unix FIFO mode."),
        ("attr-host-ntfs", XATTR_FILE, (10 << 8) | 45, "Made by host 10 (NTFS), whose attributes we do not interpret."),
        ("attr-host-msdos", XATTR_FILE, 45, "Made by host 0 (MS-DOS) with the writer's attributes: the host is pinned to 3 (Unix)."),
        ("attr-volume-label", XATTR_FILE | 0x08, MADE_BY, "The MS-DOS volume-label bit 0x08 beside a regular file mode (unzip skips such an entry)."),
        ("attr-setuid-world-writable", 0o106777 << 16, MADE_BY, "Mode 06777: setuid, setgid, world-writable (bsdtar as root restores it)."),
        ("attr-mode-0600", 0o100600 << 16, MADE_BY, "Regular file of mode 0600: any value but 0x81A40000 is refused."),
        ("attr-zero", 0, MADE_BY, "External attributes 0 (no file type)."),
    ]:
        add(id_, zip_archive(members, central={1: {"xattr": xattr, "made_by": made_by}}), "zip-attributes", "§3.2",
            f"The model's directory entry: {desc}")
    add("attr-internal", zip_archive(members, central={1: {"iattr": 1}}), "zip-attributes", "§3.2", "Internal attributes 1 (text file).")
    add("attr-disk-start", zip_archive(members, central={1: {"disk": 1}}), "zip-attributes", "§3.2", "Member starts on disk 1.")
    add("cd-file-comment", zip_archive(members, central={1: {"comment": b"hi"}}), "zip-comment", "§3.2",
        "A 2-byte file comment in the model's directory entry.")
    for flag, what in [(0x1, "encryption"), (0x8, "data descriptor"), (0x20, "patched data"), (0x40, "strong encryption"),
                       (0x2, "compression option bit 1"), (0x2000, "masked local header")]:
        f = {1: {"flags": flag}}
        add(f"flag-{flag:04x}", zip_archive(members, local=f, central=f), "zip-flags", "§3.2",
            f"Flag 0x{flag:04x} ({what}) in both headers of the model member.")
    f0 = {0: {"flags": 0x8}}
    add("flag-0008-manifest", zip_archive(members, local=f0, central=f0), "zip-flags", "§3.2",
        "Data descriptor flag on the manifest member.")
    deflated = zlib.compressobj(9, zlib.DEFLATED, -15)
    dmodel = deflated.compress(model) + deflated.flush()
    dm = {"method": 8, "csize": len(dmodel), "usize": len(model), "crc": zlib.crc32(model)}
    arch = zip_archive([members[0], (MODEL, dmodel)], local={1: dm}, central={1: dm})
    add("method-deflate", arch, "zip-method", "§3.2", "The model member DEFLATE-compressed (method 8) with correct sizes and CRC.")
    add("method-bzip2", zip_archive(members, local={1: {"method": 12}}, central={1: {"method": 12}}), "zip-method", "§3.2",
        "Method 12 (bzip2) on stored bytes.")
    add("stored-sizes-differ", zip_archive(members, local={1: {"usize": size1 + 1}}, central={1: {"usize": size1 + 1}}), "zip-method",
        "§3.2", "STORED member whose compressed and uncompressed sizes differ by one.")
    add("version-needed-45", zip_archive(members, local={1: {"version": 45}}, central={1: {"version": 45}}), "zip-version", "§3.2",
        "Version needed 4.5 (zip64) on a member that uses no zip64 field.")
    add("version-needed-10", zip_archive(members, local={0: {"version": 10}}, central={0: {"version": 10}}), "zip-version", "§3.2",
        "Version needed 1.0 on the manifest; the profile writes 2.0.")
    for field, value, desc in [
        ("name", b"model.safetensorz", "name model.safetensorz"),
        ("method", 8, "method 8"),
        ("flags", 0x8, "flags 0x0008 (data descriptor) in the local header only"),
        ("crc", 0, "CRC-32 0"),
        ("csize", size1 - 1, "compressed size one less"),
        ("usize", size1 + 1, "uncompressed size one more"),
        ("version", 45, "version needed 45"),
        ("time", 1, "modification time 00:00:02"),
        ("date", 0x5821, "modification date 2024-01-01"),
    ]:
        add(f"local-central-{field}", zip_archive(members, local={1: {field: value}}), "zip-header-mismatch", "§3.2",
            f"The model's local header differs from its directory entry: {desc}.")
    add("local-central-manifest-name", zip_archive(members, local={0: {"name": b"manifest.msgpacK"}}), "zip-header-mismatch", "§3.2",
        "The manifest's local header names manifest.msgpacK (CVE-2025-1944: scanners and loaders read different names).")
    add("local-central-manifest-size", zip_archive(members, local={0: {"usize": len(mbytes) - 1, "csize": len(mbytes) - 1}}),
        "zip-header-mismatch", "§3.2", "The manifest's local sizes are one less than the directory's.")

    # ---- §3.1 layout: gaps, overlaps ----
    add("gap-between-members", zip_archive(members, gaps={0: bytes(64)}), "zip-layout", "§3.1",
        "64 unreferenced bytes between the manifest and the model member.")
    add("gap-before-directory", zip_archive(members, gaps={1: b"hidden payload"}), "zip-layout", "§3.1",
        "Bytes between the last member and the central directory.")
    model_lho = 30 + len(MANIFEST) + len(members3[0][1])
    add("two-entries-one-header", zip_archive(members3, central={2: {"offset": model_lho}}), "zip-layout", "§3.1",
        "The vocoder's directory entry points at the model's local header (an overlap zip bomb's building block).")
    add("overlap-into-manifest", zip_archive(members, central={1: {"offset": 30 + len(MANIFEST) + 2}}), "zip-layout", "§3.1",
        "The model's directory entry points inside the manifest's data.")
    add("entry-offset-zero", zip_archive(members, central={1: {"offset": 0}}), "zip-layout", "§3.1",
        "The model's directory entry points at the manifest's local header.")
    add("size-past-end", zip_archive(members, local={1: {"usize": 0x7FFFFFF0, "csize": 0x7FFFFFF0}},
                                     central={1: {"usize": 0x7FFFFFF0, "csize": 0x7FFFFFF0}}), "zip-layout", "§3.1",
        "The model member declares 2 GiB in both headers; the file is tiny.")
    add("offset-past-end", zip_archive(members, central={1: {"offset": 0x7FFFFFF0}}), "zip-layout", "§3.1",
        "The model's local header offset is past the end of the file.")

    # ---- §3.4 alignment and padding ----
    pad_len = (-(len(mbytes) + 30 + len(MANIFEST) + 30 + len(MODEL) + 4)) % ALIGNMENT
    add("padding-missing", zip_archive(members, local={1: {"extra": b""}}), "zip-alignment", "§3.4",
        "No padding extra field: the model's data is not 64-byte aligned.")
    add("padding-short", zip_archive(members, local={1: {"extra": struct.pack("<HH", PAD_ID, (pad_len - 1) % 64) + bytes((pad_len - 1) % 64)}}),
        "zip-alignment", "§3.4", "Padding one byte short of alignment.")
    add("padding-non-minimal", zip_archive(members, local={1: {"extra": struct.pack("<HH", PAD_ID, pad_len + 64) + bytes(pad_len + 64)}}),
        "zip-alignment", "§3.4", "Aligned, but with 64 more padding bytes than needed.")
    add("padding-nonzero", zip_archive(members, local={1: {"extra": struct.pack("<HH", PAD_ID, pad_len) + b"\xaa" * pad_len}}),
        "zip-alignment", "§3.4", "Padding bytes of 0xAA instead of zeros (a hiding place).")
    add("padding-wrong-id", zip_archive(members, local={1: {"extra": struct.pack("<HH", 0xD935, pad_len) + bytes(pad_len)}}),
        "zip-alignment", "§3.4", "Alignment done with extra field id 0xD935 (Android zipalign) instead of 0x6764.")
    add("padding-length-field", zip_archive(members, local={1: {"extra": struct.pack("<HH", PAD_ID, pad_len - 4) + bytes(pad_len)}}),
        "zip-alignment", "§3.4", "The padding record's length field is 4 less than the bytes it occupies.")
    add("padding-two-records",
        zip_archive(members, local={1: {"extra": struct.pack("<HH", PAD_ID, 0) + struct.pack("<HH", PAD_ID, pad_len - 4) + bytes(pad_len - 4)}}),
        "zip-alignment", "§3.4", "Padding split across two extra records.")
    add("manifest-local-extra", zip_archive(members, local={0: {"extra": struct.pack("<HH", PAD_ID, 2) + bytes(2)}}), "zip-extra-field",
        "§3.4", "A padding extra field on the manifest's local header.")
    add("central-extra-field", zip_archive(members, central={1: {"extra": struct.pack("<HH", PAD_ID, 0)}}), "zip-extra-field", "§3.4",
        "An empty padding record in the model's directory entry (directory entries carry no extra fields).")
    add("central-extra-unix", zip_archive(members, central={0: {"extra": struct.pack("<HHBII", 0x5455, 5, 1, 0, 0)[:9]}}),
        "zip-extra-field", "§3.4", "An extended-timestamp extra field (0x5455) in the manifest's directory entry.")

    # ---- §6 CRC-32 ----
    flipped = bytearray(mbytes)
    pos = mbytes.index(b"Conformance vector")
    flipped[pos] ^= 0x20
    add("crc-manifest", zip_archive([(MANIFEST, bytes(flipped)), (MODEL, model)],
                                    local={0: {"crc": zlib.crc32(mbytes)}}, central={0: {"crc": zlib.crc32(mbytes)}}),
        "crc-mismatch", "§6", "One manifest byte changed after the CRC-32 was computed ('C' became 'c'); still a valid manifest.")
    bad = bytearray(model)
    bad[-1] ^= 0x01
    crc = {1: {"crc": zlib.crc32(model)}}
    add("crc-model-data", zip_archive([(MANIFEST, mbytes), (MODEL, bytes(bad))], local=crc, central=crc), "crc-mismatch", "§6",
        "One bit of tensor data flipped after the CRC-32 was computed. Headers are intact: only a reader that checks "
        "member CRCs (verify) rejects it.", "verify")
    padded = bytearray(model)
    sp = padded.index(b" ", 8)
    padded[sp] = 0x09
    add("crc-model-header-padding", zip_archive([(MANIFEST, mbytes), (MODEL, bytes(padded))], local=crc, central=crc), "crc-mismatch",
        "§6", "A space of the safetensors header padding became a tab after the CRC-32 was computed: the JSON still parses.", "verify")
    vbad = bytearray(vocoder)
    vbad[-2] ^= 0x80
    vcrc = {2: {"crc": zlib.crc32(vocoder)}}
    add("crc-vocoder-data", zip_archive([members3[0], members3[1], (VOCODER, bytes(vbad))], local=vcrc, central=vcrc), "crc-mismatch",
        "§6", "One bit of vocoder tensor data flipped after the CRC-32 was computed.", "verify")

    # ---- §4 manifest ----
    P = base_pairs
    add("manifest-empty", manifest_variant(b""), "manifest-msgpack", "§4.2", "A zero-byte manifest.")
    add("manifest-not-msgpack", manifest_variant(b"\xc1"), "manifest-msgpack", "§4.2", "0xC1, the byte msgpack never uses.")
    add("manifest-json", manifest_variant(b'{"format": "distillgan_model", "version": 1}'), "manifest-msgpack", "§4.2",
        "JSON instead of msgpack.")
    add("manifest-truncated", manifest_variant(mbytes[: len(mbytes) // 2]), "manifest-msgpack", "§4.2", "The first half of a valid manifest.")
    add("manifest-trailing-bytes", manifest_variant(mbytes + b"\xc0"), "manifest-msgpack", "§4.2", "A nil after the manifest map.")
    add("manifest-two-maps", manifest_variant(mbytes + mbytes), "manifest-msgpack", "§4.2", "The manifest map twice.")
    add("manifest-pickle", manifest_variant(pickle.dumps({"format": "distillgan_model", "version": 1}, protocol=4)),
        "manifest-msgpack", "§7", "A pickle stored as manifest.msgpack (0x80 reads as an empty map followed by extra bytes).")
    add("manifest-array", manifest_variant(mp(["distillgan_model", 1])), "manifest-not-map", "§4.2", "A msgpack array.")
    add("manifest-nil", manifest_variant(b"\xc0"), "manifest-not-map", "§4.2", "A msgpack nil.")
    add("manifest-str", manifest_variant(mp("distillgan_model")), "manifest-not-map", "§4.2", "A msgpack string.")
    add("manifest-int-key", manifest_variant(Pairs(list(P()) + [(1, "x")])), "manifest-type", "§4.2", "A top-level key 1 (int).")
    add("manifest-nested-bool-key", manifest_variant(P(training_config=Pairs([(True, 2)]))), "manifest-type", "§4.2",
        "training_config has the key true (bool keys are not int keys).")
    add("manifest-nested-float-key", manifest_variant(P(training_config=Pairs([(1.5, 2)]))), "manifest-type", "§4.2",
        "training_config has the key 1.5.")
    add("manifest-nested-nil-key", manifest_variant(P(training_config=Pairs([(None, 2)]))), "manifest-type", "§4.2",
        "training_config has the key nil.")
    add("manifest-metadata-int-key", manifest_variant(P(metadata=Pairs(list(meta_pairs()) + [(7, "x")]))), "manifest-type", "§4.3",
        "metadata has an int key 7 (int keys are for value trees, not schema maps).")
    add("manifest-array-key", manifest_variant(P(training_config=Pairs([([1], 2)]))), "manifest-type", "§4.2",
        "training_config has an array as a key.")
    add("manifest-bin-key", manifest_variant(Pairs([(k if k != "analysis" else b"analysis", v) for k, v in P()])), "manifest-type",
        "§4.2", "The key analysis as a binary string.")
    add("manifest-duplicate-key", manifest_variant(Pairs(list(P()) + [("latent_dim", 9)])), "manifest-duplicate-key", "§4.2",
        "latent_dim twice (8 then 9); msgpack decoders keep the last silently.")
    add("manifest-duplicate-format", manifest_variant(Pairs(list(P()) + [("format", "distillgan_model")])), "manifest-duplicate-key",
        "§4.2", "format twice, same value.")
    add("manifest-nested-duplicate-key", manifest_variant(P(metadata=Pairs(list(meta_pairs()) + [("name", "other")]))),
        "manifest-duplicate-key", "§4.2", "metadata.name twice.")
    add("manifest-ext-type", manifest_variant(P(training_config={"x": Raw(b"\xd4\x05\x00")})), "manifest-ext-type", "§4.2",
        "A fixext1 of type 5 inside training_config.")
    add("manifest-timestamp", manifest_variant(P(metadata=meta_pairs(save_date=Raw(b"\xd6\xff" + struct.pack(">I", 1704067200))))),
        "manifest-ext-type", "§4.2", "metadata.save_date as a msgpack timestamp (ext -1).")
    add("manifest-bin-value", manifest_variant(P(metadata=meta_pairs(description=b"bytes"))), "manifest-type", "§4.2",
        "metadata.description as a binary string.")
    deep: Any = 0
    for _ in range(63):
        deep = [deep]
    add("manifest-too-deep", manifest_variant(P(training_config={"deep": deep})), "manifest-depth", "§8",
        "training_config.deep nests 63 arrays: the innermost value is at depth 65 (the limit is 64; the manifest map is depth 0).")
    deep_tuple: Any = 0
    for _ in range(32):
        deep_tuple = {"$": "tuple", "items": [deep_tuple]}
    add("manifest-too-deep-tuples", manifest_variant(P(training_config={"deep": deep_tuple})), "manifest-depth", "§8",
        "training_config.deep nests 32 tuples; each tagged map and its items array count as two levels: depth 66.")
    add("manifest-too-deep-for-decoder", manifest_variant(P(training_config={"deep": Raw(b"\x91" * 3000 + b"\x90")})),
        "manifest-depth", "§8", "training_config nests 3000 arrays, deeper than msgpack decoders' own stacks.")
    for id_, raw, desc in [
        ("manifest-huge-str", b"\xdb\xff\xff\xff\xff" + b"x" * 8, "a str32 declaring 4 GiB"),
        ("manifest-huge-array", b"\xdd\xff\xff\xff\xff\xc0", "an array32 declaring 2^32-1 elements"),
        ("manifest-huge-map", b"\xdf\xff\xff\xff\xff", "a map32 declaring 2^32-1 pairs"),
        ("manifest-huge-bin", b"\xc6\xff\xff\xff\xff", "a bin32 declaring 4 GiB"),
    ]:
        add(id_, manifest_variant(P(training_config={"x": Raw(raw)})), "manifest-msgpack", "§4.2",
            f"training_config.x is {desc} in a small manifest (decoders that preallocate run out of memory).")
    add("manifest-invalid-utf8", manifest_variant(P(metadata=meta_pairs(name=Raw(b"\xa2\xff\xfe")))), "manifest-msgpack", "§4.2",
        "metadata.name is a str holding bytes FF FE (not UTF-8).")
    add("manifest-surrogate", manifest_variant(P(metadata=meta_pairs(name=Raw(b"\xa3\xed\xa0\x80")))), "manifest-msgpack", "§4.2",
        "metadata.name is a str holding an encoded UTF-16 surrogate (not valid UTF-8).")
    add("format-missing", manifest_variant(P(format=DROP)), "manifest-format", "§4.1", "No format key.")
    add("format-wrong", manifest_variant(P(format="distill_model")), "manifest-format", "§4.1",
        "format is 'distill_model' (the legacy marker).")
    add("format-bytes", manifest_variant(P(format=b"distillgan_model")), "manifest-format", "§4.1",
        "format as a binary string holding the marker's bytes (a bin is not a str).")
    add("format-int", manifest_variant(P(format=1)), "manifest-format", "§4.1", "format is 1.")
    add("format-not-first", manifest_variant(Pairs([p for p in P() if p[0] == "version"] + [p for p in P() if p[0] != "version"])),
        "manifest-format", "§4.1", "version before format.")
    for id_, value, code, desc in [
        ("version-missing", DROP, "manifest-version", "No version key."),
        ("version-true", True, "manifest-version", "version is true (True == 1 in Python)."),
        ("version-float", 1.0, "manifest-version", "version is 1.0."),
        ("version-zero", 0, "manifest-version", "version is 0."),
        ("version-negative", -1, "manifest-version", "version is -1."),
        ("version-string", "1", "manifest-version", "version is '1'."),
        ("version-nil", None, "manifest-version", "version is nil."),
        ("version-2", 2, "version-newer", "version is 2: newer than this reader."),
        ("version-max", 2**64 - 1, "version-newer", "version is 2^64-1."),
    ]:
        add(id_, manifest_variant(P(version=value)), code, "§4.1" if code != "version-newer" else "§4.5", desc)
    add("unknown-key", manifest_variant(Pairs(list(P()) + [("zz_future", 1)])), "manifest-unknown-key", "§4.5",
        "A top-level key zz_future.")
    add("unknown-key-metadata", manifest_variant(P(metadata=Pairs(list(meta_pairs()) + [("author", "x")]))), "manifest-unknown-key",
        "§4.5", "metadata.author.")
    add("unknown-key-member", manifest_variant(P(members={MODEL: {"aliases": {}, "compression": "none", "size": len(model)}})),
        "manifest-unknown-key", "§4.5", "$.members.model.safetensors.compression.")
    add("members-int-key", manifest_variant(P(members=Pairs([(MODEL, {"aliases": {}, "size": len(model)}), (1, {"aliases": {}, "size": 0})]))),
        "manifest-type", "§4.3", "members has an int key 1 beside model.safetensors (found by a review: it used to crash a reader "
        "that sorts the member names).")
    add("missing-latent-dim", manifest_variant(P(latent_dim=DROP)), "manifest-missing-key", "§4.3", "No latent_dim key.")
    add("missing-members", manifest_variant(P(members=DROP)), "manifest-missing-key", "§4.3", "No members key.")
    add("missing-metadata-field", manifest_variant(P(metadata=meta_pairs(save_date=DROP))), "manifest-missing-key", "§4.3",
        "No metadata.save_date.")
    add("missing-aliases", manifest_variant(P(members={MODEL: {"size": len(model)}})), "manifest-missing-key", "§4.3",
        "No $.members.model.safetensors.aliases.")
    for id_, where, value, desc in [
        ("type-name-int", "name", 5, "metadata.name is 5."),
        ("type-name-nil", "name", None, "metadata.name is nil (not nullable)."),
        ("type-tags-str", "tags", "a,b", "metadata.tags is a string."),
        ("type-tags-item-int", "tags", ["a", 1], "metadata.tags holds an int."),
        ("type-epochs-negative", "training_epochs", -1, "metadata.training_epochs is -1."),
        ("type-epochs-float", "training_epochs", 3.0, "metadata.training_epochs is 3.0."),
        ("type-epochs-bool", "training_epochs", True, "metadata.training_epochs is true."),
        ("type-has-analysis-int", "has_analysis", 1, "metadata.has_analysis is 1."),
        ("type-duration-str", "dataset_total_duration_s", "1.5", "metadata.dataset_total_duration_s is '1.5'."),
        ("type-loss-bool", "final_train_loss", False, "metadata.final_train_loss is false."),
    ]:
        add(id_, manifest_variant(P(metadata=meta_pairs(**{where: value}))), "manifest-type", "§4.3", desc)
    for id_, key, value, desc in [
        ("type-latent-dim-str", "latent_dim", "8", "latent_dim is '8'."),
        ("type-latent-dim-bool", "latent_dim", True, "latent_dim is true."),
        ("type-latent-dim-negative", "latent_dim", -8, "latent_dim is -8."),
        ("type-spectrogram-config-list", "spectrogram_config", [1, 2], "spectrogram_config is an array."),
        ("type-training-config-nil", "training_config", None, "training_config is nil."),
        ("type-analysis-list", "analysis", [], "analysis is an array."),
        ("type-metadata-list", "metadata", [], "metadata is an array."),
        ("type-members-list", "members", [], "members is an array."),
        ("type-member-size-str", "members", {MODEL: {"aliases": {}, "size": str(len(model))}}, "members.model.safetensors.size is a string."),
        ("type-alias-target-int", "members", {MODEL: {"aliases": {"t": 1}, "size": len(model)}}, "An alias target is 1."),
        ("type-aliases-list", "members", {MODEL: {"aliases": [], "size": len(model)}}, "members.model.safetensors.aliases is an array."),
    ]:
        add(id_, manifest_variant(P(**{key: value})), "manifest-type", "§4.3", desc)
    add("value-inf", manifest_variant(P(metadata=meta_pairs(dataset_total_duration_s=math.inf))), "manifest-value", "§4.3",
        "metadata.dataset_total_duration_s is +Infinity (only the two losses may be non-finite).")
    add("value-nan-float32-duration", manifest_variant(P(metadata=meta_pairs(dataset_total_duration_s=Raw(b"\xca\x7f\xc0\x00\x00")))),
        "manifest-value", "§4.3", "metadata.dataset_total_duration_s is a float32 NaN.")
    m3 = full_manifest(model, vocoder)
    add("vocoder-state-without-member", manifest_variant(P(vocoder_state={"type": "hifigan"})), "manifest-mismatch", "§4.3",
        "vocoder_state is a map but members lists only the model.")
    add("member-without-vocoder-state", manifest_variant(P(members=m3["members"])), "manifest-mismatch", "§4.3",
        "members lists vocoder.safetensors but vocoder_state is nil.")
    add("vocoder-declared-not-present", manifest_variant(mp(canonical(m3))), "manifest-mismatch", "§6",
        "The manifest declares a vocoder member; the archive has two members.")
    add("vocoder-present-not-declared", zip_archive([(MANIFEST, mbytes), (MODEL, model), (VOCODER, vocoder)]), "manifest-mismatch", "§6",
        "The archive holds vocoder.safetensors; the manifest declares none.")
    add("type-vocoder-state-list", vocoder_variant(vocoder_pairs(vocoder_state=[])), "manifest-type", "§4.3",
        "vocoder_state is an array (it is a map or nil).")
    add("type-state-dict-nil", manifest_variant(P(state_dict=None)), "manifest-type", "§4.3", "state_dict is nil (it is a map).")
    add("type-state-dict-tuple", manifest_variant(P(state_dict={"$": "tuple", "items": []})), "manifest-type", "§4.3",
        "state_dict is a tuple (it must decode to a map).")
    add("missing-extra", manifest_variant(P(extra=DROP)), "manifest-missing-key", "§4.3", "No extra key (nil when unused).")
    add("missing-vocoder-state", manifest_variant(P(vocoder_state=DROP)), "manifest-missing-key", "§4.3",
        "No vocoder_state key (nil when no vocoder is bundled).")
    add("member-size-mismatch", manifest_variant(P(members={MODEL: {"aliases": {}, "size": len(model) + 1}})), "manifest-mismatch", "§6",
        "members.model.safetensors.size is one more than the member.")

    # ---- §4.4 value trees and placeholders, §6 claims, §5.5 aliases ----
    for id_, tc, code, desc in [
        ("tag-unknown", {"x": {"$": "set", "items": [1]}}, "manifest-tag", "A tagged map with the unknown tag 'set'."),
        ("tag-not-str", {"x": {"$": 1, "items": []}}, "manifest-tag", "A '$' key whose value is 1."),
        ("tag-extra-key", {"x": {"$": "tuple", "items": [], "len": 0}}, "manifest-tag", "A tuple tag with a third key."),
        ("tag-missing-key", {"x": {"$": "tuple"}}, "manifest-tag", "A tuple tag without items."),
        ("tag-tuple-items-map", {"x": {"$": "tuple", "items": {}}}, "manifest-tag", "A tuple whose items is a map."),
        ("tag-map-item-not-pair", {"x": {"$": "map", "items": [["a", 1, 2]]}}, "manifest-tag", "A map item of three elements."),
        ("tag-map-item-float-key", {"x": {"$": "map", "items": [[1.5, 1]]}}, "manifest-tag", "A map item whose key is 1.5."),
        ("tag-map-duplicate-key", {"x": {"$": "map", "items": [[1, "a"], [1, "b"]]}}, "manifest-duplicate-key",
         "The map tag with the key 1 twice."),
        ("tag-tensors-key-int", {"x": {"$": "tensors", "prefix": "", "keys": [0]}}, "manifest-tag", "A tensors tag with an int key."),
        ("tag-tensors-duplicate-key", {"x": {"$": "tensors", "prefix": "state_dict/", "keys": ["w", "w"]}}, "manifest-duplicate-key",
         "A tensors tag listing the key w twice."),
        ("tag-name-int", {"x": {"$": "tensor", "name": 0}}, "manifest-tag", "A tensor placeholder whose name is 0."),
        ("tag-requires-grad-int", {"x": {"$": "parameter", "name": "state_dict/w", "requires_grad": 1}}, "manifest-tag",
         "A parameter placeholder whose requires_grad is 1."),
        ("tag-parameter-no-grad-flag", {"x": {"$": "parameter", "name": "state_dict/w"}}, "manifest-tag",
         "A parameter placeholder without requires_grad."),
    ]:
        add(id_, manifest_variant(P(training_config=tc)), code, "§4.4", desc)
    add("placeholder-in-metadata", manifest_variant(P(metadata=meta_pairs(description={"$": "tensor", "name": "state_dict/w"}))),
        "manifest-type", "§4.3", "metadata.description is a tensor placeholder: metadata holds typed fields only.")
    w_only = flat("state_dict/", ["state_dict/w"])
    extra_tensors = {"bf": ("bf", "BF16", [1], b"\x80\x3f"), "i": ("i", "I32", [1], b"\x01\x00\x00\x00"), "z": ("z", "F64", [0, 2**61], b"")}
    for id_, slots, extra_names, code, desc in [
        ("placeholder-missing-tensor", {"training_config": {"x": {"$": "tensor", "name": "state_dict/nope"}}}, [], "manifest-mismatch",
         "A placeholder names a tensor model.safetensors does not hold."),
        ("placeholder-claims-twice", {"training_config": {"x": {"$": "tensor", "name": "state_dict/w"}}}, [], "manifest-mismatch",
         "A placeholder in training_config names state_dict/w, which the state_dict placeholder names too (not an alias)."),
        ("tensor-unclaimed", {"state_dict": w_only}, [], "manifest-mismatch", "model.safetensors holds state_dict/b, which no placeholder names."),
        ("placeholder-vocoder-tensor-in-model", {"training_config": {"x": {"$": "tensor", "name": VOCODER_TENSORS[0][0]}}}, [],
         "manifest-mismatch", "A placeholder outside vocoder_state names a vocoder tensor (it is looked up in model.safetensors)."),
        ("ndarray-bf16", {"training_config": {"x": {"$": "ndarray", "name": "bf"}}}, ["bf"], "manifest-mismatch",
         "An ndarray placeholder names a BF16 tensor (numpy has no bfloat16)."),
        ("ndarray-too-big-for-numpy", {"training_config": {"x": {"$": "ndarray", "name": "z"}}}, ["z"], "manifest-mismatch",
         "An ndarray placeholder names an F64 tensor of shape [0, 2^61]: no element, but numpy computes 2^64 bytes and refuses it."),
        ("requires-grad-int-tensor", {"training_config": {"x": {"$": "tensor", "name": "i", "requires_grad": True}}}, ["i"],
         "manifest-mismatch", "requires_grad true on an I32 tensor (only floating point and complex tensors can require gradients)."),
    ]:
        mm = st_canonical(BASE_TENSORS + [extra_tensors[n] for n in extra_names])
        slots = {**slots, "state_dict": state_dict_for(st_canonical(BASE_TENSORS))} if "state_dict" not in slots else slots
        add(id_, archive_of(mm, manifest=full_manifest(mm, **slots)), code, "§6", desc)
    mm = st_canonical(BASE_TENSORS)
    add("alias-kind-mismatch", archive_of(mm, manifest=full_manifest(mm, aliases={"tied": "state_dict/w"},
                                                                    training_config={"t": {"$": "ndarray", "name": "tied"}})),
        "manifest-mismatch", "§5.5",
        "An alias and its target are named by placeholders of different kinds (ndarray and tensor): they cannot be one object.")
    add("alias-unclaimed", archive_of(mm, manifest=full_manifest(mm, aliases={"tied": "state_dict/w"})), "manifest-mismatch", "§6",
        "An alias that no placeholder names.")
    for id_, aliases, code, desc in [
        ("alias-to-missing", {"tied": "nonexistent"}, "manifest-mismatch", "An alias to a tensor that is not stored."),
        ("alias-shadows-stored", {"state_dict/w": "state_dict/b"}, "manifest-mismatch", "An alias named like a stored tensor."),
        ("alias-to-alias", {"t1": "state_dict/w", "t2": "t1"}, "manifest-mismatch", "An alias whose target is another alias."),
        ("alias-bad-name", {"t\x1b[2J": "state_dict/w"}, "st-name", "An alias name with an escape sequence."),
        ("alias-empty-name", {"": "state_dict/w"}, "st-name", "An empty alias name."),
    ]:
        add(id_, archive_of(model, manifest=full_manifest(model, aliases=aliases)), code, "§5.5", desc)

    # ---- §5 safetensors ----
    w, b = BASE_TENSORS[0][3], BASE_TENSORS[1][3]
    data = w + b

    def hdr(**over: Any) -> dict[str, Any]:
        h = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}}
        for k, v in over.items():
            if v is DROP:
                h.pop(k)
            else:
                h[k] = v
        return h

    def st(id_: str, member: bytes, code: str, section: str, desc: str, needs: str | None = None) -> None:
        add(id_, with_model(member), code, section, desc, needs)

    st("st-empty-member", b"", "st-header-size", "§5.1", "model.safetensors of 0 bytes.")
    st("st-too-short", b"\x02\x00\x00\x00", "st-header-size", "§5.1", "model.safetensors of 4 bytes.")
    st("st-header-past-member", st_raw(hdr(), data, length=4096), "st-header-size", "§5.1",
       "Header length 4096 in a member of a few hundred bytes.")
    st("st-header-too-large", st_raw(hdr(), data, length=MAX_HEADER_BYTES + 1), "st-header-size", "§8",
       "Header length 100 000 001 (MAX_HEADER_BYTES + 1) in a member of a few hundred bytes: H2 (the size limit) is checked "
       "before H3 (past the member), both st-header-size. The at-limit half, a header of exactly 100 000 000 bytes, is the "
       "large vector st-header-100000000.")
    st("st-header-length-max", st_raw(hdr(), data, length=2**64 - 1), "st-header-size", "§8",
       "Header length 2^64-1 (wraps to a small number when added to 8 in 64-bit arithmetic).")
    st("st-header-not-utf8", st_raw(b'{"w\xff": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', b"\x00" * 8), "st-header-json",
       "§5.1", "A tensor name with byte 0xFF in the header.")
    st("st-header-not-json", st_raw(b"{not json}", b""), "st-header-json", "§5.1", "Header {not json}.")
    st("st-header-array", st_raw(b"[]", b""), "st-header-json", "§5.1", "Header [] (not an object).")
    st("st-header-leading-space", st_raw(b" {}", b""), "st-header-json", "§5.1", "Header ' {}' (must start with '{').")
    st("st-header-nan", st_raw(b'{"w": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 0]}}', b""), "st-header-json", "§5.1",
       "NaN (not JSON) in a shape.")
    st("st-header-trailing", st_raw(b'{}{"w": 1}', b""), "st-header-json", "§5.1", "A second JSON value after the header object.")
    st("st-header-nul-padding", st_raw(b"{}" + bytes(54), b"", pad=False), "st-header-json", "§5.1",
       "Header padded with NUL bytes instead of spaces.")
    st("st-header-too-deep", st_raw(b'{"__metadata__": ' + b"[" * 5000 + b"]" * 5000 + b"}", b""), "st-header-json", "§5.1",
       "5000 nested arrays in the header (recursive JSON parsers overflow their stack).")
    dup = b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}'
    st("st-duplicate-tensor", st_raw(dup, b"\x00" * 8), "st-duplicate-key", "§5.1",
       "Tensor w twice with the same offsets (safetensors keeps the last silently).")
    dup2 = b'{"w": {"dtype": "F32", "dtype": "I32", "shape": [2], "data_offsets": [0, 8]}}'
    st("st-duplicate-field", st_raw(dup2, b"\x00" * 8), "st-duplicate-key", "§5.1", "dtype twice in one tensor entry.")
    for id_, spec, desc in [
        ("st-dtype-unknown", {"dtype": "F128", "shape": [2], "data_offsets": [16, 24]}, "dtype F128."),
        ("st-dtype-lowercase", {"dtype": "f32", "shape": [2], "data_offsets": [16, 24]}, "dtype f32 (codes are upper case)."),
        ("st-dtype-int", {"dtype": 4, "shape": [2], "data_offsets": [16, 24]}, "dtype 4."),
    ]:
        st(id_, st_raw(hdr(b=spec), data), "st-dtype", "§5.3", desc)
    for id_, spec, desc in [
        ("st-shape-bytes-mismatch", {"dtype": "F32", "shape": [3], "data_offsets": [16, 24]}, "shape [3] of F32 over 8 bytes."),
        ("st-shape-dtype-mismatch", {"dtype": "F64", "shape": [2], "data_offsets": [16, 24]}, "shape [2] of F64 over 8 bytes."),
        ("st-shape-negative", {"dtype": "F32", "shape": [-2], "data_offsets": [16, 24]}, "shape [-2]."),
        ("st-shape-negative-pair", {"dtype": "F32", "shape": [-1, -2], "data_offsets": [16, 24]},
         "shape [-1, -2] (product 2 matches the bytes)."),
        ("st-shape-float", {"dtype": "F32", "shape": [2.0], "data_offsets": [16, 24]}, "shape [2.0]."),
        ("st-shape-bool", {"dtype": "F32", "shape": [True, 2], "data_offsets": [16, 24]}, "shape [true, 2]."),
        ("st-shape-not-list", {"dtype": "F32", "shape": 2, "data_offsets": [16, 24]}, "shape 2 (not an array)."),
        ("st-shape-wraps-64", {"dtype": "F32", "shape": [2, 2**62 + 1], "data_offsets": [16, 24]},
         "shape [2, 2^62+1] of F32: 2^65+8 bytes, which is 8 modulo 2^64."),
        ("st-shape-rank-33", {"dtype": "F32", "shape": [1] * 31 + [2, 1], "data_offsets": [16, 24]}, "rank 33 (the limit is 32)."),
    ]:
        st(id_, st_raw(hdr(b=spec), data), "st-shape", "§5.1", desc)
    for id_, spec, desc in [
        ("st-shape-huge-zero-numel", {"dtype": "F32", "shape": [0, 2**63], "data_offsets": [24, 24]},
         "shape [0, 2^63]: zero elements, but a dimension no int64 can hold."),
        ("st-shape-overflow-zero-numel", {"dtype": "F32", "shape": [0, 2**62, 2**62], "data_offsets": [24, 24]},
         "shape [0, 2^62, 2^62]: zero elements, but strides overflow int64."),
    ]:
        st(id_, st_raw(hdr(z=spec), data), "st-shape", "§8", desc + " A reader that builds the tensor fails outside its error model.")
    for id_, h, d, desc in [
        ("st-offsets-not-from-zero", hdr(w={"dtype": "F32", "shape": [2, 2], "data_offsets": [4, 20]}, b={"dtype": "F32", "shape": [2], "data_offsets": [20, 28]}),
         b"\x00" * 4 + data, "Tensors start at 4; four unreferenced bytes at the start of the data."),
        ("st-offsets-overlap", hdr(b={"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}), w, "b lies inside w."),
        ("st-offsets-gap", hdr(b={"dtype": "F32", "shape": [2], "data_offsets": [20, 28]}), w + b"\x00" * 4 + b, "Four bytes between w and b."),
        ("st-offsets-past-end", hdr(b={"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}), w + b[:4], "b ends past the member."),
        ("st-offsets-reversed", hdr(b={"dtype": "F32", "shape": [2], "data_offsets": [24, 16]}), data, "b's offsets are [24, 16]."),
        ("st-offsets-three", hdr(b={"dtype": "F32", "shape": [2], "data_offsets": [16, 24, 24]}), data, "Three data offsets."),
        ("st-offsets-negative", hdr(w={"dtype": "F32", "shape": [2, 2], "data_offsets": [-8, 8]}), data, "Offsets [-8, 8] (16 bytes)."),
        ("st-offsets-float", hdr(b={"dtype": "F32", "shape": [2], "data_offsets": [16.0, 24]}), data, "An offset of 16.0."),
        ("st-trailing-bytes", hdr(), data + b"hidden", "Six bytes after the last tensor."),
        ("st-offsets-same-tensor", {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
         b, "Two tensors over the same 8 bytes."),
    ]:
        st(id_, st_raw(h, d), "st-offsets", "§5.1", desc)
    for id_, name, desc in [
        ("st-name-empty", "", "an empty name"),
        ("st-name-nul", "w\x00.pkl", "a NUL byte"),
        ("st-name-escape", "w\x1b[31m", "an ANSI escape sequence"),
        ("st-name-newline", "w\nb", "a newline"),
        ("st-name-del", "w\x7f", "DEL"),
        ("st-name-c1", "w\x85", "the C1 control NEL (U+0085)"),
        ("st-name-too-long", "n" * 1025, "1025 bytes (the limit is 1024)"),
    ]:
        text = json.dumps({name: {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, ensure_ascii=True).encode()
        st(id_, st_raw(text, b), "st-name", "§5.4", f"A tensor name with {desc}.")
    st("st-metadata-non-str", st_raw(hdr(__metadata__={"format": 1}), data), "st-metadata", "§5.1", "__metadata__ maps a key to 1.")
    st("st-metadata-as-tensor", st_raw(hdr(__metadata__={"dtype": "F32", "shape": [0], "data_offsets": [24, 24]}), data), "st-metadata",
       "§5.1", "__metadata__ written as a tensor entry.")
    st("st-metadata-list", st_raw(hdr(__metadata__=["a"]), data), "st-metadata", "§5.1", "__metadata__ is an array.")
    st("st-tensor-extra-field", st_raw(hdr(b={"dtype": "F32", "shape": [2], "data_offsets": [16, 24], "strides": [1]}), data),
       "st-header-json", "§5.1", "A tensor entry with a strides field.")
    st("st-tensor-missing-field", st_raw(hdr(b={"dtype": "F32", "data_offsets": [16, 24]}), data), "st-header-json", "§5.1",
       "A tensor entry without shape.")
    st("st-tensor-not-object", st_raw(hdr(b=[16, 24]), data), "st-header-json", "§5.1", "A tensor entry that is an array.")
    bools = {"w": {"dtype": "BOOL", "shape": [4], "data_offsets": [0, 4]}}
    st("st-bool-value", st_raw(bools, b"\x00\x01\x02\x01"), "st-bool", "§5.3",
       "A BOOL tensor holding the byte 2. Headers are intact: only a reader that reads the data rejects it.", "verify")
    add("st-vocoder-offsets", archive_of(model, st_raw({"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, f32(1.0, 2.0))),
        "st-offsets", "§5.1", "The vocoder member's only tensor starts at 4.")
    add("st-vocoder-bool", archive_of(model, st_raw(bools, b"\x01\x01\xff\x00")), "st-bool", "§5.3",
        "A vocoder BOOL tensor holding 0xFF.", "verify")

    for id_, text, desc in [
        ("st-header-lone-surrogate", b'{"w\\ud800": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}',
         "A tensor name with a lone UTF-16 surrogate escape (\\ud800): not valid Unicode, so not valid JSON text here."),
        ("st-metadata-lone-surrogate", b'{"__metadata__": {"k": "\\udc00"}, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}',
         "A lone low surrogate escape in a __metadata__ value."),
    ]:
        st(id_, st_raw(text, b), "st-header-json", "§5.1", desc)
    st("st-shape-negative-zero", st_raw(b'{"w": {"dtype": "F32", "shape": [-0, 2], "data_offsets": [0, 0]}}', b""), "st-shape", "§5.1",
       "A shape [-0, 2]: -0 is not a uint token (safetensors reads it as the float -0.0 and refuses it).")
    st("st-offsets-negative-zero", st_raw(b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [-0, 8]}}', b"\x00" * 8), "st-offsets",
       "§5.1", "data_offsets [-0, 8].")
    st("st-shape-exponent", st_raw(b'{"w": {"dtype": "F32", "shape": [2E0], "data_offsets": [0, 8]}}', b"\x00" * 8), "st-shape", "§5.1",
       "A shape [2E0]: a number token with an exponent is not an int.")
    st("st-offsets-exponent", st_raw(b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8e0]}}', b"\x00" * 8), "st-offsets",
       "§5.1", "data_offsets [0, 8e0].")
    st("st-shape-huge-token", st_raw(b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 8]}}', b"\x00" * 8),
       "st-shape", "§5.1", "A dimension of 5000 digits: a uint beyond 2^63-1, not a JSON error.")
    st("st-header-depth-4", st_raw(b'{"__metadata__": {"k": [["v"]]}, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', b"\x00" * 8),
       "st-header-json", "§8", "An array in an array in __metadata__: nesting depth 4 (MAX_HEADER_DEPTH is 3), a JSON-level refusal.")
    st("st-header-depth-3-metadata", st_raw(b'{"__metadata__": {"k": ["v"]}, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', b"\x00" * 8),
       "st-metadata", "§8", "An array in __metadata__: depth 3 is within MAX_HEADER_DEPTH, so the metadata rule decides.")
    st("st-shape-nested", st_raw(b'{"w": {"dtype": "F32", "shape": [[2]], "data_offsets": [0, 8]}}', b"\x00" * 8), "st-header-json", "§8",
       "A shape [[2]]: depth 4, refused as JSON before the shape rule.")
    st("st-name-too-long-escaped", st_raw(json.dumps({"é" * 512 + "n": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode(), b),
       "st-name", "§5.4", "A name of 513 characters written as \\u00e9 escapes: 1025 UTF-8 bytes once decoded (the limit applies after unescaping).")
    add("alias-named-metadata", archive_of(model, manifest=full_manifest(model, aliases={"__metadata__": "state_dict/w"})), "st-name",
        "§5.5", "An alias named __metadata__ (refused like a tensor of that name).")
    st("st-metadata-null", st_raw(hdr(__metadata__=None), data + b"x"), "st-offsets", "§5.1",
       "__metadata__ null is accepted as no metadata; the trailing byte after the data is the defect.")

    # ---- §7 legacy and pickles ----
    import torch

    legacy_obj = {
        "format": "distill_model",
        "version": 1,
        "model_state_dict": {"w": torch.tensor([0.5, -1.0])},
        "metadata": {"name": "old model"},
    }
    for id_, obj, kw, code, desc in [
        ("legacy-distill-v1-zip", legacy_obj, {}, "legacy-distill-v1",
         "A v1 .distill model: torch.save zip whose data.pkl holds 'distill_model'."),
        ("legacy-distill-v1-stream", legacy_obj, {"_use_new_zipfile_serialization": False}, "legacy-distill-v1",
         "A v1 .distill model saved with the pre-1.6 torch stream format."),
        ("torch-zip", {"state_dict": {"w": torch.tensor([1.0])}}, {}, "pickle", "A torch.save checkpoint (zip) without the v1 marker."),
        ("torch-stream-pre16", {"state_dict": {"w": torch.tensor([1.0])}}, {"_use_new_zipfile_serialization": False}, "pickle",
         "A pre-1.6 torch.save stream (magic 80 02 8a 0a 6c fc 9c 46 f9 20 6a a8 50 19)."),
    ]:
        f = io.BytesIO()
        torch.save(obj, f, **kw)
        add(id_, _fixed_storage_keys(f.getvalue()), code, "§7", desc)
    for proto in (2, 3, 4, 5):
        add(f"pickle-protocol-{proto}", pickle.dumps({"weights": [0.5, 1.5], "epochs": 3}, protocol=proto), "pickle", "§7",
            f"A raw pickle, protocol {proto}.")
    add("pickle-v1-marker", pickle.dumps({"format": "distill_model", "version": 1}, protocol=4), "legacy-distill-v1", "§7",
        "A raw pickle (protocol 4) holding the v1 marker.")
    add("pickle-protocol-0", pickle.dumps({"weights": [0.5]}, protocol=0), "not-zip", "§7",
        "A protocol 0 pickle has no magic: refused as not a zip.")
    add("safetensors-plain", st_canonical([("w", "F32", [2], f32(1.0, 2.0))]), "safetensors-file", "§7",
        "A plain safetensors file, not a .distillgan archive: recognised so that the message can point to `distillgan convert`.")
    # GLOBAL builtins.print + REDUCE: a reader that unpickles this prints a line (and the audit-hook test sees find_class).
    add("pickle-reduce-global", b"\x80\x02cbuiltins\nprint\nX\x2a\x00\x00\x00PICKLE EXECUTED: this reader unpickles files\x85R.",
        "pickle", "§7", "A protocol 2 pickle calling builtins.print through GLOBAL and REDUCE (never run by a conforming reader).")
    pkl = pickle.dumps({"format": "distill_model", "model_state_dict": {}}, protocol=2)
    add("torch-zip-short-zip64-extra",
        zip_archive([(b"archive/data.pkl", pkl), (b"archive/version", b"3\n")], central={1: {"extra": b"\x01\x00"}},
                    local={1: {"extra": b""}}),
        "legacy-distill-v1", "§7", "A torch-style zip (archive/data.pkl holding the v1 marker) whose second directory entry has a "
        "2-byte extra field 01 00 (a torn zip64 header): the legacy detector must neither crash nor give up on the file.")

    # ---- precedence: two defects, the first in FORMAT.md's order of checks decides (FORMAT.md §9) ----
    def two(id_: str, data: bytes, code: str, section: str, desc: str, needs: str | None = None) -> None:
        add("order-" + id_, data, code, section, "Two defects; the first check that fails decides: " + desc, needs)

    two("truncated-not-zip", b"PK\x03\x05" + bytes(100), "not-zip", "§3.1", "a 104-byte file (truncated) whose signature is not PK\\x03\\x04: not-zip.")
    two("eocd-comment-length-and-disk", zip_archive(members, eocd={"comment_len": 7, "disk": 1}), "zip-comment", "§3.5",
        "comment length 7 (checked first) and disk number 1.")
    two("eocd-disk-and-count", zip_archive(members, eocd={"disk": 1, "n_disk": 1, "n_total": 1}), "zip-eocd", "§3.5",
        "disk number 1 (zip-eocd) and 1 entry (zip-entry-count).")
    two("eocd-count-ffff-no-zip64", zip_archive(members, eocd={"n_disk": 0xFFFF, "n_total": 0xFFFF}), "zip64", "§3.5",
        "0xFFFF entries asks for zip64 records, which are missing: zip64, not zip-entry-count.")
    two("entry-count-and-cd-offset", zip_archive(members, eocd={"n_disk": 17, "n_total": 17, "cd_off": cd_off - 1}), "zip-entry-count", "§3.1",
        "17 entries (over MAX_MEMBERS) and a directory offset one byte early.")
    two("cd-offset-and-name", zip_archive(members, eocd={"cd_off": cd_off - 1}, central={1: {"name": b"x/y"}}), "zip-layout", "§3.5",
        "directory offset one byte early (checked before any entry) and an entry named x/y.")
    two("cd-name-and-comment", zip_archive([members[0], (b"x/model", model)], central={1: {"comment": b"hi"}}), "zip-member-name", "§3.2",
        "entry 1 is named x/model and has a file comment.")
    two("cd-comment-and-attributes", zip_archive(members, central={1: {"comment": b"hi", "xattr": 0}}), "zip-comment", "§3.2",
        "a file comment and external attributes 0.")
    two("cd-attributes-and-flags", zip_archive(members, central={1: {"xattr": 0, "flags": 1}}, local={1: {"flags": 1}}), "zip-attributes", "§3.2",
        "external attributes 0 and the encryption flag.")
    two("cd-flags-and-method", zip_archive(members, central={1: {"flags": 1, "method": 8}}, local={1: {"flags": 1, "method": 8}}),
        "zip-flags", "§3.2", "the encryption flag and method 8.")
    two("cd-method-and-extra", zip_archive(members, central={1: {"method": 8, "extra": struct.pack("<HH", PAD_ID, 0)}}, local={1: {"method": 8}}),
        "zip-method", "§3.2", "method 8 and an extra field in the directory entry.")
    two("cd-extra-and-version", zip_archive(members, central={1: {"version": 45, "extra": struct.pack("<HH", PAD_ID, 0)}}, local={1: {"version": 45}}),
        "zip-extra-field", "§3.3", "an extra field without sentinels and version needed 45.")
    two("cd-sizes-and-version", zip_archive(members, central={1: {"csize": size1 + 1, "version": 10}}, local={1: {"csize": size1 + 1, "version": 10}}),
        "zip-method", "§3.2", "compressed size differs from size (STORED) and version needed 10.")
    two("cd-entry0-before-entry1", zip_archive([members[0], (b"x/model", model)], central={0: {"flags": 1}}, local={0: {"flags": 1}}),
        "zip-flags", "§3.2", "the manifest's entry has the encryption flag; the model's entry has a bad name (entries are checked in order).")
    two("cd-before-local", zip_archive(members, central={1: {"xattr": 0}}, local={0: {"name": b"manifest.msgpacK"}}), "zip-attributes", "§3.2",
        "entry 1 has attributes 0 and local header 0 names manifest.msgpacK (every directory entry is checked before any local header).")
    two("local-fields-and-padding", zip_archive(members, local={1: {"crc": 0, "extra": b""}}), "zip-header-mismatch", "§3.2",
        "the model's local CRC-32 differs and its padding field is missing.")
    two("local-manifest-fields-and-extra", zip_archive(members, local={0: {"time": 1, "extra": struct.pack("<HH", PAD_ID, 0)}}),
        "zip-header-mismatch", "§3.4", "the manifest's local time differs and it has an extra field.")
    two("local-offset-and-signature", zip_archive(members, central={1: {"offset": 0x40}}, local={1: {"sig": b"PK\x03\x05"}}), "zip-layout", "§3.1",
        "the model's entry points at offset 64 and its local header signature is wrong (both zip-layout; the offset is checked first).")
    bad_manifest = b"\xc1" + mbytes[1:]
    two("crc-and-msgpack", zip_archive([(MANIFEST, bad_manifest), (MODEL, model)], local={0: {"crc": zlib.crc32(mbytes)}},
                                      central={0: {"crc": zlib.crc32(mbytes)}}),
        "crc-mismatch", "§6", "the manifest's CRC-32 does not match and its first byte is 0xC1.")
    two("container-and-manifest", zip_archive([(MANIFEST, b"\xc1"), (MODEL, model)], central={1: {"xattr": 0}}), "zip-attributes", "§3.2",
        "external attributes 0 and a manifest that is not msgpack (the container is checked first).")
    # decoding: the first defect in byte order (FORMAT.md §4.2)
    ext = Raw(b"\xd4\x05\x00")
    two("decode-ext-before-duplicate", manifest_variant(Pairs(list(P(training_config={"x": ext})) + [("latent_dim", 9)])), "manifest-ext-type", "§4.2",
        "an ext type in training_config, then a duplicate top-level key later in the bytes.")
    two("decode-duplicate-before-ext", manifest_variant(Pairs(list(P(extra=DROP)) + [("latent_dim", 9), ("extra", ext)])), "manifest-duplicate-key",
        "§4.2", "a duplicate key latent_dim, then an ext type later in the bytes.")
    deep: Any = 0
    for _ in range(63):
        deep = [deep]
    two("decode-depth-before-trailing", manifest_variant(mp(P(training_config={"deep": deep})) + b"\xc0"), "manifest-depth", "§4.2",
        "a value at depth 65 and a trailing nil.")
    two("decode-key-type-before-utf8", manifest_variant(P(analysis=Pairs([(1.5, 1)]), metadata=meta_pairs(name=Raw(b"\xa2\xff\xfe")))),
        "manifest-type", "§4.2", "a float key in analysis (earlier in the bytes: top-level keys are sorted) and a str that is not UTF-8 in metadata.")
    two("decode-utf8-before-key-type", manifest_variant(P(analysis=Raw(b"\xa2\xff\xfe"), training_config=Pairs([(1.5, 1)]))),
        "manifest-msgpack", "§4.2", "a str that is not UTF-8 in analysis, then a float key in training_config.")
    two("decode-duplicate-before-truncation", manifest_variant(mp(Pairs(list(P()) + [("latent_dim", 9)]))[:-1]), "manifest-duplicate-key", "§4.2",
        "a duplicate top-level key, then the member ends one byte early.")
    two("decode-duplicate-before-deep", manifest_variant(P(analysis=Pairs([("a", 1), ("a", 2)]), training_config={"deep": Raw(b"\x91" * 3000 + b"\x90")})),
        "manifest-duplicate-key", "§4.2", "a duplicate key in analysis, then 3000 nested arrays (deeper than decoders' own stacks).")
    two("decode-depth-before-c1", manifest_variant(P(analysis=Raw(b"\x91" * 3000 + b"\x90"), training_config=Raw(b"\xc1"))), "manifest-depth", "§4.2",
        "3000 nested arrays, then the byte 0xC1.")
    two("decode-before-not-map", manifest_variant(b"\x92\xc0\xc1"), "manifest-msgpack", "§4.2", "an array (not a map) holding the byte 0xC1.")
    two("format-before-version", manifest_variant(P(format="other", version=2)), "manifest-format", "§4.1", "format 'other' and version 2.")
    two("version-before-key-order", manifest_variant(Pairs([p for p in P(version=2) if p[0] == "version"] + [p for p in P(version=2) if p[0] != "version"])),
        "version-newer", "§4.1", "version 2 written before format: the version is checked before the key order.")
    two("version-before-v1-members", zip_archive([(MANIFEST, mp(P(version=2))), (MODEL, model), (VOCODER, vocoder), ("x", b"")]),
        "version-newer", "§4.5", "version 2 and a fourth member: the v1 member list is checked only for version 1.")
    two("schema-before-v1-members", zip_archive([(MANIFEST, mp(P(latent_dim="8"))), (MODEL, model), (VOCODER, vocoder), ("x", b"")]),
        "manifest-type", "§3.1", "latent_dim '8' and a fourth member: the whole manifest is checked before the v1 member list.")
    two("int-key-before-missing", manifest_variant(Pairs(list(P(latent_dim=DROP)) + [(1, "x")])), "manifest-type", "§4.3",
        "an int top-level key and no latent_dim.")
    two("missing-before-unknown", manifest_variant(Pairs(list(P(latent_dim=DROP)) + [("zz", 1)])), "manifest-missing-key", "§4.3",
        "no latent_dim and an unknown key zz.")
    two("unknown-before-type", manifest_variant(Pairs(list(P(latent_dim="8")) + [("zz", 1)])), "manifest-unknown-key", "§4.3",
        "an unknown key zz and latent_dim '8'.")
    two("latent-dim-before-metadata", manifest_variant(P(latent_dim="8", metadata=meta_pairs(name=DROP))), "manifest-type", "§4.3",
        "latent_dim '8' and metadata without name.")
    two("metadata-field-order", manifest_variant(P(metadata=meta_pairs(name=5, dataset_total_duration_s=math.inf))), "manifest-type", "§4.3",
        "metadata.name 5 and a non-finite dataset_total_duration_s: fields are checked in the order of the §4.3 table (name first), "
        "not in map order (dataset_total_duration_s first).")
    two("metadata-before-members", manifest_variant(P(metadata=meta_pairs(name=DROP), members=[])), "manifest-missing-key", "§4.3",
        "metadata without name and members an array.")
    two("members-before-slots", manifest_variant(P(members=[], training_config={"x": {"$": "set"}})), "manifest-type", "§4.3",
        "members an array and an unknown tag in training_config.")
    two("slots-before-slot-types", manifest_variant(P(training_config={"x": {"$": "set"}}, state_dict=None)), "manifest-tag", "§4.4",
        "an unknown tag in training_config and state_dict nil (every slot is decoded before the slot types are checked).")
    two("slot-order", manifest_variant(P(analysis={"x": {"$": "map", "items": [[1, 1], [1, 2]]}}, extra={"$": "set"})), "manifest-duplicate-key",
        "§4.4", "a duplicate key in a map tag in analysis and an unknown tag in extra (slots in the order analysis, extra, ...).")
    two("slot-types-before-member-set", manifest_variant(P(state_dict=None, vocoder_state={"type": "x"})), "manifest-type", "§4.3",
        "state_dict nil and a vocoder_state without a vocoder member.")
    two("v1-members-before-headers", zip_archive([(MANIFEST, mbytes), (MODEL, b""), (VOCODER, vocoder), ("x", b"")]), "zip-entry-count", "§3.1",
        "a fourth member named x, and an empty model member.")
    bad_voc = st_raw(b'{"x": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}', f32(1.0))
    two("header-before-cross-check", zip_archive([(MANIFEST, manifest_bytes(full_manifest(model, vocoder))), (MODEL, st_raw(hdr(b=DROP), w)),
                                                  (VOCODER, bad_voc)]),
        "st-dtype", "§5.1", "the model member's size differs from the manifest's and the vocoder header has dtype F99.")
    two("model-header-before-vocoder", archive_of(st_raw(hdr(b={"dtype": "F32", "shape": [3], "data_offsets": [16, 24]}), data), bad_voc),
        "st-shape", "§5.1", "the model header has a shape mismatch and the vocoder's dtype F99.")
    two("tensor-by-tensor", with_model(st_raw(b'{"w": {"dtype": "F99", "shape": [2, 2], "data_offsets": [0, 16]}, '
                                              b'"b\\u0000": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}}', data)),
        "st-dtype", "§5.1", "the first tensor's dtype is F99, the second's name holds NUL: tensors are checked one by one in header order.")
    two("tensor-header-order", with_model(st_raw(b'{"b\\u0000": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}, '
                                                 b'"w": {"dtype": "F99", "shape": [2, 2], "data_offsets": [0, 16]}}', data)),
        "st-name", "§5.1", "the same defects with the tensors in the other header order (offsets play no part).")
    st("order-name-before-fields", st_raw(b'{"\\u0007": {"dtype": "F32", "shape": [2]}}', b"\x00" * 8), "st-name", "§5.1",
       "Two defects: a name holding BEL and an entry without data_offsets.")
    st("order-fields-before-dtype", st_raw(b'{"w": {"dtype": "F99", "shape": [2]}}', b"\x00" * 8), "st-header-json", "§5.1",
       "Two defects: an entry without data_offsets and dtype F99.")
    st("order-dtype-before-shape", st_raw(hdr(b={"dtype": "F99", "shape": [-1], "data_offsets": [16, 24]}), data), "st-dtype", "§5.1",
       "Two defects: dtype F99 and shape [-1].")
    st("order-shape-before-offsets", st_raw(hdr(b={"dtype": "F32", "shape": [-1], "data_offsets": [24, 16]}), data), "st-shape", "§5.1",
       "Two defects: shape [-1] and data_offsets [24, 16].")
    st("order-offsets-before-size", st_raw(hdr(b={"dtype": "F32", "shape": [3], "data_offsets": [24, 16]}), data), "st-offsets", "§5.1",
       "Two defects: data_offsets [24, 16] and a shape [3] that does not match them.")
    st("order-tensor-before-contiguity", st_raw(hdr(w={"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]},
                                                    b={"dtype": "F32", "shape": [3], "data_offsets": [16, 24]}), data), "st-shape", "§5.1",
       "Two defects: w overlaps b, and b's shape [3] does not match its 8 bytes (every tensor is checked before contiguity).")
    st("order-metadata-before-tensors", st_raw(b'{"w": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": {"k": 1}}',
                                               b"\x00" * 8), "st-metadata", "§5.1",
       "Two defects: dtype F99, and a non-str value in __metadata__ written after it (metadata is checked before the tensors).")
    st("order-json-before-duplicate", st_raw(b'{"w": {"dtype": "F32", "dtype": "F32", "shape": [2], "data_offsets": [0, 8]}} x', b"\x00" * 8,
                                             pad=False), "st-header-json", "§5.1",
       "Two defects: a duplicate key and trailing text (the whole text must be JSON before duplicates are looked for).")
    st("order-duplicate-before-metadata", st_raw(b'{"__metadata__": {"k": 1}, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
                                                 b'"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', b"\x00" * 8), "st-duplicate-key",
       "§5.1", "Two defects: a non-str metadata value and a duplicate tensor.")
    st("order-size-before-json", st_raw(b"[]", b"", length=4096), "st-header-size", "§5.1",
       "Two defects: a header length past the member and a header that does not start with '{'.")
    two("cross-size-before-alias", archive_of(model, manifest=full_manifest(model, aliases={"t\x1b": "state_dict/w"}) | {
        "members": {MODEL: {"aliases": {"t\x1b": "state_dict/w"}, "size": len(model) + 1}}}),
        "manifest-mismatch", "§6", "the model's size is one more than the member and an alias name holds ESC (sizes, then aliases).")
    two("cross-alias-before-claims", archive_of(model, manifest=full_manifest(model, aliases={"t\x1b": "state_dict/w"}, state_dict=w_only)),
        "st-name", "§6", "an alias name holds ESC and state_dict/b is claimed by no placeholder.")
    both = bytearray(st_raw({"w": {"dtype": "BOOL", "shape": [4], "data_offsets": [0, 4]}}, b"\x00\x01\x02\x01"))
    good_crc = {1: {"crc": zlib.crc32(bytes(both))}}
    both[-4] = 0x01
    two("crc-before-bool", zip_archive([(MANIFEST, manifest_bytes(full_manifest(bytes(both)))), (MODEL, bytes(both))], local=good_crc, central=good_crc),
        "crc-mismatch", "§6", "a BOOL byte 2 and a CRC-32 that does not match (CRCs are checked before bool bytes).", "verify")
    # cross-checks (§13.8) before integrity (§13.9): a reader that reads tensor data still reports the manifest's defect
    base_model = st_canonical(BASE_TENSORS)
    flipped = base_model[:-1] + bytes([base_model[-1] ^ 0x01])
    crc_of_base = {1: {"crc": zlib.crc32(base_model)}}
    two("cross-before-crc", zip_archive([(MANIFEST, manifest_bytes(full_manifest(base_model, state_dict=w_only))), (MODEL, flipped)],
                                        local=crc_of_base, central=crc_of_base),
        "manifest-mismatch", "§6", "state_dict/b is claimed by no placeholder (X3) and a byte of tensor data differs from the member's "
        "CRC-32 (I1): cross-checks come before integrity checks.")
    bool_member = st_raw({"m": {"dtype": "BOOL", "shape": [4], "data_offsets": [0, 4]}}, b"\x00\x01\x02\x01")
    two("cross-before-bool", archive_of(bool_member, manifest=full_manifest(
        bool_member, state_dict={}, training_config={"mask": {"$": "tensor", "name": "m", "requires_grad": True}})),
        "manifest-mismatch", "§6", "requires_grad true on a BOOL tensor (X2) whose bytes hold a 2 (I3): cross-checks come before "
        "integrity checks, even when both concern one tensor.")
    two("claims-before-unclaimed", archive_of(base_model, manifest=full_manifest(base_model, state_dict=flat("state_dict/", ["state_dict/w",
                                                                                                                          "state_dict/x"]))),
        "manifest-mismatch", "§6", "a placeholder names state_dict/x, which is not stored (X2), and state_dict/b is claimed by no "
        "placeholder (X3). Both are manifest-mismatch, so the code cannot show the order; the reference reader's message names "
        "the X2 defect (tests/test_conformance.py).")

    # ---- boundaries: at each limit (valid vectors) and one past it (FORMAT.md §8) ----
    add("entries-17-version-2", zip_archive([(MANIFEST, mp(P(version=2)))] + [(f"m{i:02d}", b"") for i in range(16)]), "zip-entry-count", "§8",
        "17 entries with a version 2 manifest: one past MAX_MEMBERS (entries-16-version-2 is at the limit).")
    add("entries-16-version-2", zip_archive([(MANIFEST, mp(P(version=2)))] + [(f"m{i:02d}", b"") for i in range(15)]), "version-newer", "§8",
        "16 entries with a version 2 manifest: at MAX_MEMBERS, so the version decides.")
    add("truncated-173", b"PK\x03\x04" + bytes(169), "truncated", "§8", "173 bytes starting with a local header signature: one below MIN_ARCHIVE_BYTES.")
    add("not-truncated-174", b"PK\x03\x04" + bytes(170), "zip-eocd", "§8", "174 bytes (MIN_ARCHIVE_BYTES): the end record check decides.")
    add("st-rank-33", with_model(st_raw({"w": {"dtype": "F32", "shape": [1] * 32 + [2], "data_offsets": [0, 8]}}, b"\x00" * 8)), "st-shape", "§8",
        "Rank 33 (valid/rank-32 is at the limit).")
    add("st-dim-over-int64", with_model(st_raw({"w": {"dtype": "U8", "shape": [0, 2**63], "data_offsets": [0, 0]}}, b"")), "st-shape", "§8",
        "A dimension of 2^63, one past MAX_DIM (valid/dim-int64-max has 2^63-1).")
    add("st-numel-over-int64", with_model(st_raw({"w": {"dtype": "U8", "shape": [0, 2, 2**62], "data_offsets": [0, 0]}}, b"")), "st-shape",
        "§8", "A zero-size tensor of shape [0, 2, 2^62]: every dimension within MAX_DIM, but the element count with the zero dimension "
        "counted as 1 is 2^63, one past (valid/numel-int64-max is at the limit).")
    add("st-offsets-u64-max", with_model(st_raw({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, U64_MAX]}}, b"\x00")), "st-shape",
        "§8", "data_offsets [0, 2^64-1]: at the largest offset H10e accepts, so the size rule H10g decides (one byte of shape [1] is not "
        "2^64-1 bytes; invalid/st-offsets-u64-max-plus-1 is one past).")
    add("st-offsets-u64-max-plus-1", with_model(st_raw({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, U64_MAX + 1]}}, b"\x00")),
        "st-offsets", "§8", "data_offsets [0, 2^64]: one past the largest offset, refused by H10e before the size rule "
                            "(invalid/st-offsets-u64-max is at the limit).")
    add("eocd-count-fffe", zip_archive(members, eocd={"n_disk": 0xFFFE, "n_total": 0xFFFE}), "zip-entry-count", "§8",
        "End record counts 0xFFFE entries: one below the zip64 threshold U16_MAX, so no zip64 record is asked for and the entry "
        "count decides (invalid/order-eocd-count-ffff-no-zip64 is at the threshold).")
    add("manifest-depth-65-map", manifest_variant(P(training_config={"d": _nest_maps(63)})), "manifest-depth", "§8",
        "Maps nested so that the innermost value sits at depth 65.")
    legacy_boundaries(add)
    invalid_readings(add)
    return V


def invalid_readings(add: Any) -> None:
    """Invalid vectors that pin a reading of FORMAT.md another careful reader could take (§14 lists them)."""
    model = st_canonical(BASE_TENSORS)
    P = base_pairs
    # §4.2 B5: an array or map count is not a byte length; the item is truncated where the member ends
    add("manifest-array-count-past-end", manifest_variant(b"\xdd\xff\xff\xff\xff\xd4\x01\x00"), "manifest-ext-type", "§4.2",
        "An array32 declaring 2^32-1 items in an 8-byte member, its first item an ext: the count is checked where the member "
        "ends (B5 at the missing item), so the ext item before that decides (B3), not truncation at the array's header.")
    add("manifest-map-count-past-end", manifest_variant(b"\xdf\x7f\xff\xff\xff\xa1a\xc0\xa1a\xc0"), "manifest-duplicate-key", "§4.2",
        "A map32 declaring 2^31-1 entries in a 13-byte member, its first two keys equal: the duplicate (B7) comes before the "
        "missing entries (B5 where the member ends).")
    # §4.2 B1 before B5 for a missing item; empty containers count
    add("manifest-depth-65-missing-item", manifest_variant(b"\x81\xa1a" + b"\x91" * 64), "manifest-depth", "§4.2",
        "64 nested one-item arrays and the member ends: the missing item would sit at depth 65, and B1 (depth) comes before "
        "B5 (truncation) at its position.")
    add("manifest-depth-64-missing-item", manifest_variant(b"\x81\xa1a" + b"\x91" * 63), "manifest-msgpack", "§4.2",
        "63 nested one-item arrays and the member ends: the missing item would sit at depth 64, within the limit, so it is "
        "truncation (manifest-depth-65-missing-item is one deeper).")
    add("manifest-depth-65-empty-array", manifest_variant(P(training_config={"d": _nest_arrays(63, [])})), "manifest-depth", "§8",
        "An otherwise valid manifest with an empty array at depth 65: empty containers count (valid/depth-64-empty is at the limit).")
    # §4.3 members: entries in map order, the key type with its entry
    add("members-map-order", manifest_variant(P(members=Pairs([(MODEL, Pairs([("size", len(model))])), (7, {"aliases": {}, "size": 0})]))),
        "manifest-missing-key", "§4.3",
        "members holds model.safetensors without aliases, then an int key: entries are checked in map order (S8), so the "
        "missing key of the first decides, not the int key of the second (top level and metadata check all key types first).")
    # §5.1 H6: empty containers count towards MAX_HEADER_DEPTH; scalars add no level
    add("st-header-depth-4-empty", with_model(st_raw(b'{"w": {"dtype": "F32", "shape": [[]], "data_offsets": [0, 0]}}', b"")),
        "st-header-json", "§5.1", "A shape [[]]: the empty inner array is at depth 4 (H6), before the shape rule (H10d).")
    add("st-metadata-depth-4-empty", with_model(st_raw(b'{"__metadata__": {"k": [{}]}, ' + json.dumps(
        {n: {"dtype": d, "shape": s, "data_offsets": [o, o + len(r)]} for (n, d, s, r), o in zip(sorted(BASE_TENSORS, key=lambda t: t[0]), (0, 8))}
    ).encode()[1:], f32(1.0, -2.0) + f32(0.5, -1.0, 2.0, 0.25))), "st-header-json", "§5.1",
        "__metadata__ {\"k\": [{}]}: the empty object is at depth 4, so H6 refuses the header before H8 looks at the metadata.")
    # §5.1 H11: zero-size tensors take part in contiguity
    zin = st_raw({"state_dict/w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                  "state_dict/z": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},
                  "state_dict/b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}}, f32(0.5, -1.0, 2.0, 0.25, 1.0, -2.0))
    add("st-zero-size-inside", with_model(zin), "st-offsets", "§5.1",
        "A zero-size tensor at [4, 4], inside state_dict/w's bytes [0, 16]: sorted by (begin, end) it begins at 4 where the "
        "previous tensor ends at 16 (H11); zero-size tensors are not exempt.")
    zpast = st_raw({"state_dict/w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                    "state_dict/b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]},
                    "state_dict/z": {"dtype": "F32", "shape": [0], "data_offsets": [32, 32]}}, f32(0.5, -1.0, 2.0, 0.25, 1.0, -2.0))
    add("st-zero-size-past-end", with_model(zpast), "st-offsets", "§5.1",
        "A zero-size tensor at [32, 32], past the 24-byte data section: it begins where no tensor ends (H11).")
    # §7 step 5: the pickle is the first entry matching [^/]+/data\.pkl (one folder level), as the pattern says
    marker = pickle.dumps({"format": "distill_model", "model_state_dict": {}}, protocol=2)
    plain = pickle.dumps({"model_state_dict": {}}, protocol=2)
    add("torch-zip-data-pkl-two-levels", zip_archive([(b"archive/version", b"3\n"), (b"archive/sub/data.pkl", marker)]), "pickle", "§7",
        "A torch zip whose only data.pkl (holding the v1 marker) is two folders deep: archive/version makes it a torch "
        "checkpoint, but archive/sub/data.pkl does not match [^/]+/data\\.pkl, so no pickle is searched.")
    add("torch-zip-data-pkl-root", zip_archive([(b"archive/version", b"3\n"), (b"/data.pkl", marker)]), "pickle", "§7",
        "A torch zip whose data.pkl (holding the v1 marker) is named /data.pkl: an empty folder name does not match [^/]+.")
    add("torch-zip-data-pkl-first-match", zip_archive([(b"archive/sub/data.pkl", plain), (b"archive/data.pkl", marker)]),
        "legacy-distill-v1", "§7", "archive/sub/data.pkl (no marker) comes first but does not match the pattern; the first "
        "entry that does, archive/data.pkl, holds the marker.")
    # §13.1 Z1: a plain safetensors file is recognised at Z1, before the size check Z2
    add("order-safetensors-before-truncated", st_raw(b"{}", b"", pad=False), "safetensors-file", "§13.1",
        "A 10-byte safetensors file holding no tensor: Z1 names it [safetensors-file] before Z2 finds it shorter than 174 bytes.")


def _nest_maps(n: int) -> Any:
    """``n`` maps each holding the next under key "d", the innermost holding 0."""
    value: Any = 0
    for _ in range(n):
        value = {"d": value}
    return value


def _pickle_chain(n_before: int, marker_in: bool) -> bytes:
    """``n_before`` small pickles, then one holding the v1 marker (or not)."""
    out = pickle.dumps(None, protocol=2) * n_before
    return out + pickle.dumps({"format": "distill_model" if marker_in else "other"}, protocol=2)


def legacy_boundaries(add: Any) -> None:
    """The small limits of the v1 marker search (FORMAT.md §7); the 16 MiB and 200 000-opcode limits are in --large."""
    add("pickle-marker-in-8th", _pickle_chain(7, True), "legacy-distill-v1", "§7",
        "Seven pickles of None, then one holding the v1 marker: the 8th pickle is still searched (MAX_PICKLES).")
    add("pickle-marker-in-9th", _pickle_chain(8, True), "pickle", "§7",
        "Eight pickles of None, then one holding the v1 marker: the 9th is not searched.")
    add("pickle-marker-after-bad-opcode", b"\x80\x02\xff" + pickle.dumps({"format": "distill_model"}, protocol=2)[2:], "pickle", "§7",
        "An unknown opcode 0xFF before the marker ends the search: no marker.")
    add("pickle-marker-escaped", b"\x80\x02}S'distill\\x5fmodel'\n.", "legacy-distill-v1", "§7",
        "The marker as a STRING opcode argument written with a \\x5f escape: compared after decoding the escape.")
    add("pickle-marker-bytes", b"\x80\x03C\x0ddistill_model.", "legacy-distill-v1", "§7",
        "The marker as SHORT_BINBYTES: bytes arguments are compared as their ASCII text.")
    add("pickle-marker-global-not-string", b"\x80\x02cdistill_model\ndistill_model\n.", "pickle", "§7",
        "The marker only as GLOBAL's module and name: not a string opcode, so not a marker.")


def _fixed_storage_keys(data: bytes) -> bytes:
    """Make pre-1.6 torch.save output reproducible: its storage keys are memory addresses.

    The keys appear only as BINUNICODE strings (protocol 2 has no frames), so
    each is replaced, length prefix included, by its index.
    """
    if not data.startswith(b"\x80\x02\x8a\x0a"):
        return data  # the zip format names storages 0, 1, ... already
    pattern = re.compile(rb"X(.{4})(\d{6,20})", re.DOTALL)
    keys = sorted({m[2] for m in pattern.finditer(data) if struct.unpack("<I", m[1])[0] == len(m[2])})
    for i, key in enumerate(keys):
        new = str(i).encode()
        data = data.replace(b"X" + struct.pack("<I", len(key)) + key, b"X" + struct.pack("<I", len(new)) + new)
    return data


# --- writing ----------------------------------------------------------------------------


def decode_manifest_independently(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def json_projection(value: Any) -> Any:
    """FORMAT.md §4.6, written out independently: decoded msgpack -> loss-free JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        text = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return {"$": "float", "value": text, "bits": struct.pack(">d", value).hex()}
    if isinstance(value, bytes):
        import base64

        return {"$": "bytes", "base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list):
        return [json_projection(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: json_projection(v) for k, v in value.items()}
        return {"$": "map", "items": [[k, json_projection(v)] for k, v in value.items()]}
    return value


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build(out_dir: Path) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}

    for id_, data, section, desc in valid_vectors() + valid_by_hand() + valid_readings():
        mem = members_of(data)
        names = [n for n, _ in mem]
        manifest = json_projection(decode_manifest_independently(mem[0][1]))
        digests = {name: {t: sha256(raw) for t, raw in parse_st(body).items()} for name, body in mem[1:]}
        _check_with_safetensors(mem[1:])
        rel = f"valid/{id_}.distillgan"
        files[rel] = data
        entries.append({"id": f"valid/{id_}", "file": rel, "sha256": sha256(data), "valid": True, "section": section,
                        "description": desc, "members": names, "expected": {"manifest": manifest, "digests": digests}})
    seen = set()
    for id_, data, code, section, desc, needs in invalid_vectors():
        if id_ in seen:
            raise SystemExit(f"duplicate vector id {id_}")
        seen.add(id_)
        rel = f"invalid/{id_}.distillgan"
        files[rel] = data
        entry: dict[str, Any] = {"id": f"invalid/{id_}", "file": rel, "sha256": sha256(data), "valid": False, "section": section,
                                 "description": desc, "expected": {"code": code}}
        if needs:
            entry["needs"] = needs
        entries.append(entry)

    total = 0
    for rel, data in files.items():
        if len(data) >= MAX_VECTOR_BYTES:
            raise SystemExit(f"{rel} is {len(data)} bytes; vectors stay under {MAX_VECTOR_BYTES}")
        total += len(data)
    if total >= MAX_TOTAL_BYTES:
        raise SystemExit(f"vectors total {total} bytes; the budget is {MAX_TOTAL_BYTES}")

    index = {
        "format": "distillgan-conformance-vectors",
        "version": 1,
        "spec": "spec/FORMAT.md",
        "generator": "spec/vectors/generate.py",
        "contract": (  # FORMAT.md §10, in short; distillgan/conformance.py judges by it
            "Run the reader on each file (FORMAT.md §10). One process per file: valid: exit 0 and print on stdout one JSON "
            "object whose 'manifest' equals expected.manifest and whose 'digests' equals expected.digests. Invalid: exit "
            "with status 1 and write on stderr exactly one line containing 'error [CODE]', CODE being expected.code (free "
            "text may surround it on that line; other lines may be written). A signal, a timeout, another exit status, or "
            "no or several 'error [CODE]' lines is a crash. Batch (--batch): the reader, started once, reads one absolute "
            "path per line on stdin and answers each with one JSON line, {\"path\", \"manifest\", \"digests\"} or "
            "{\"path\", \"error\": CODE, \"message\"}. Vectors with needs='verify' have a defect in tensor data only "
            "(member CRC-32, bool bytes): a conforming reader that reads tensor data must reject them."
        ),
        "vectors": entries,
    }
    for sub in ("valid", "invalid"):
        d = out_dir / sub
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    for rel, data in files.items():
        (out_dir / rel).write_bytes(data)
    (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=1, ensure_ascii=True, allow_nan=False) + "\n", encoding="ascii")
    return index


def _check_with_safetensors(members: list[tuple[str, bytes]]) -> None:
    """Valid vectors must load with the safetensors library too (an independent reader)."""
    try:
        from safetensors.torch import load
    except ImportError:  # pragma: no cover - optional cross-check
        return
    for name, body in members:
        tensors = load(body)
        expected = parse_st(body)
        if set(tensors) != set(expected):
            raise SystemExit(f"safetensors reads {sorted(tensors)} from {name}; the generator wrote {sorted(expected)}")


# --- large vectors: limits no 64 KiB file reaches (FORMAT.md §8, §10) -----------------------------
#
# Written on demand (``--large DIR``), never committed. The zip64 vectors are 4 GiB files whose
# tensor data is zeros: they are written sparse (seek over the zeros) and their CRC-32 is computed
# with zlib's crc32_combine instead of reading 4 GiB.

def crc_zeros(n: int) -> int:
    """CRC-32 of ``n`` zero bytes, by squaring (zlib's crc32_combine)."""
    from distillgan.crc import crc32_combine

    block = 1 << 20
    q, r = divmod(n, block)
    acc, p, p_len = 0, zlib.crc32(bytes(block)), block
    while q:
        if q & 1:
            acc = crc32_combine(acc, p, p_len)
        p = crc32_combine(p, p, p_len)
        p_len *= 2
        q >>= 1
    return crc32_combine(acc, zlib.crc32(bytes(r)), r)


def sha256_zeros(n: int) -> str:
    h = hashlib.sha256()
    zeros = bytes(64 << 20)
    while n:
        k = min(n, len(zeros))
        h.update(memoryview(zeros)[:k])
        n -= k
    return h.hexdigest()


Part = bytes | int  # bytes, or a count of zero bytes (a hole in a sparse file)


def _parts_len(parts: list[Part]) -> int:
    return sum(len(p) if isinstance(p, bytes) else p for p in parts)


def _parts_crc(parts: list[Part]) -> int:
    from distillgan.crc import crc32_combine

    crc = 0
    for p in parts:
        crc = crc32_combine(crc, zlib.crc32(p), len(p)) if isinstance(p, bytes) else crc32_combine(crc, crc_zeros(p), p)
    return crc


def sparse_zip(path: Path, members: list[tuple[str, list[Part]]]) -> None:
    """Write ``members`` in the strict profile (FORMAT.md §3), zip64 exactly where needed, zeros as holes."""
    entries = []
    with open(path, "wb") as f:
        for i, (name, parts) in enumerate(members):
            nb = name.encode("ascii")
            size, crc, lho = _parts_len(parts), _parts_crc(parts), f.tell()
            need64 = size >= U32
            extra = struct.pack("<HHQQ", 1, 16, size, size) if need64 else b""
            if i:
                pad = (-(lho + LOCAL.size + len(nb) + len(extra) + 4)) % ALIGNMENT
                extra += struct.pack("<HH", PAD_ID, pad) + bytes(pad)
            version = 45 if need64 or lho >= U32 else VERSION
            f.write(LOCAL.pack(LOCAL_SIG, version, 0, 0, 0, DOS_DATE, crc, U32 if need64 else size, U32 if need64 else size,
                               len(nb), len(extra)) + nb + extra)
            for p in parts:
                if isinstance(p, bytes):
                    f.write(p)
                else:
                    f.seek(p, 1)
            entries.append((nb, crc, size, lho, version))
        cd_off = f.tell()
        cd = b""
        for nb, crc, size, lho, version in entries:
            vals = ([size, size] if size >= U32 else []) + ([lho] if lho >= U32 else [])
            extra = struct.pack(f"<HH{len(vals)}Q", 1, 8 * len(vals), *vals) if vals else b""
            cd += CENTRAL.pack(CENTRAL_SIG, MADE_BY, version, 0, 0, 0, DOS_DATE, crc, U32 if size >= U32 else size,
                               U32 if size >= U32 else size, len(nb), len(extra), 0, 0, 0, XATTR_FILE, U32 if lho >= U32 else lho)
            cd += nb + extra
        f.write(cd)
        n = len(entries)
        if cd_off >= U32:
            rec = f.tell()
            f.write(zip64_record(n, len(cd), cd_off) + ZIP64_LOCATOR.pack(ZIP64_LOCATOR_SIG, 0, rec, 1))
        f.write(EOCD.pack(EOCD_SIG, 0, 0, n, n, len(cd), min(cd_off, U32), 0))


def _large_manifest(model_size: int, state_dict: Any, vocoder: bytes | None = None, **changes: Any) -> bytes:
    m = base_manifest(**changes)
    m["state_dict"] = state_dict
    m["members"] = {MODEL: {"aliases": {}, "size": model_size}}
    if vocoder is not None:
        m["vocoder_state"] = vocoder_state_for(vocoder)
        m["members"][VOCODER] = {"aliases": {}, "size": len(vocoder)}
    return manifest_bytes(m)


def _zeros_model(size: int) -> tuple[list[Part], str]:
    """A safetensors member of exactly ``size`` bytes: one U8 tensor state_dict/z of zeros; (parts, tensor digest)."""
    n = 120  # 8 + n is a multiple of 64, and the JSON below fits
    body = size - 8 - n
    text = json.dumps({"state_dict/z": {"dtype": "U8", "shape": [body], "data_offsets": [0, body]}}, separators=(",", ":")).encode()
    assert len(text) <= n, text
    return [struct.pack("<Q", n) + text + b" " * (n - len(text)), body], sha256_zeros(body)


def large_vectors(out: Path) -> list[dict[str, Any]]:
    """Write the large vectors into ``out`` and return their index entries (without sha256, added by the caller)."""
    entries: list[dict[str, Any]] = []
    sd_z = {"$": "tensors", "prefix": "state_dict/", "keys": ["z"]}

    def valid(id_: str, path: Path, section: str, desc: str, digests: dict[str, dict[str, str]]) -> None:
        with open(path, "rb") as f:
            data = f.read(1 << 16)
        (mlen,) = struct.unpack_from("<I", data, 22)
        manifest = json_projection(decode_manifest_independently(data[46 : 46 + mlen] if mlen <= len(data) - 46 else _read_at(path, 46, mlen)))
        entries.append({"id": f"valid/{id_}", "file": f"valid/{id_}.distillgan", "valid": True, "section": section, "description": desc,
                        "expected": {"manifest": manifest, "digests": digests}})

    def invalid(id_: str, section: str, code: str, desc: str) -> None:
        entries.append({"id": f"invalid/{id_}", "file": f"invalid/{id_}.distillgan", "valid": False, "section": section,
                        "description": desc, "expected": {"code": code}})

    v, iv = out / "valid", out / "invalid"
    # zip64: the member size, the directory offset and a local header offset, each just below and at 0xFFFFFFFF
    mlen_guess = len(_large_manifest(U32, sd_z))
    data_off = 46 + mlen_guess + 30 + len(MODEL) + 4
    data_off += (-data_off) % ALIGNMENT
    for id_, size, desc in [
        ("zip64-member-size-fffffffe", U32 - 1, "model.safetensors of 0xFFFFFFFE bytes: its sizes fit in 32 bits; the directory offset needs zip64 end records."),
        ("zip64-member-size-ffffffff", U32, "model.safetensors of exactly 0xFFFFFFFF bytes: zip64 sizes in its local header and directory entry, and zip64 end records."),
        ("zip64-cd-offset-fffffffe", U32 - 1 - data_off, "The directory starts at 0xFFFFFFFE: the largest layout without any zip64 record."),
        ("zip64-cd-offset-ffffffff", U32 - data_off, "The directory starts at exactly 0xFFFFFFFF: zip64 end records, no zip64 extra field."),
    ]:
        parts, digest = _zeros_model(size)
        mbytes = _large_manifest(size, sd_z)
        assert len(mbytes) == mlen_guess
        sparse_zip(v / f"{id_}.distillgan", [(MANIFEST, [mbytes]), (MODEL, parts)])
        valid(id_, v / f"{id_}.distillgan", "§3.3", desc + " Sparse: the tensor is zeros.", {MODEL: {"state_dict/z": digest}})
    vocoder = st_canonical(VOCODER_TENSORS)
    mlen_voc = len(_large_manifest(U32, sd_z, vocoder))
    voc_data_off = 46 + mlen_voc + 30 + len(MODEL) + 4
    voc_data_off += (-voc_data_off) % ALIGNMENT
    for id_, lho, desc in [
        ("zip64-local-offset-fffffffe", U32 - 1, "vocoder.safetensors' local header at 0xFFFFFFFE: its offset fits in 32 bits."),
        ("zip64-local-offset-ffffffff", U32, "vocoder.safetensors' local header at exactly 0xFFFFFFFF: a zip64 offset in its directory entry."),
    ]:
        size = lho - voc_data_off
        parts, digest = _zeros_model(size)
        mbytes = _large_manifest(size, sd_z, vocoder)
        assert len(mbytes) == mlen_voc
        sparse_zip(v / f"{id_}.distillgan", [(MANIFEST, [mbytes]), (MODEL, parts), (VOCODER, [vocoder])])
        valid(id_, v / f"{id_}.distillgan", "§3.3", desc + " Sparse: the model tensor is zeros.",
              {MODEL: {"state_dict/z": digest}, VOCODER: {t: sha256(raw) for t, raw in parse_st(vocoder).items()}})

    # the safetensors header limit: exactly 100 000 000 bytes (valid) / one more (refused before reading)
    model = st_canonical(BASE_TENSORS)
    (n,) = struct.unpack_from("<Q", model, 0)
    text = model[8 : 8 + n].rstrip(b" ")
    big = struct.pack("<Q", MAX_HEADER_BYTES) + text + b" " * (MAX_HEADER_BYTES - len(text)) + model[8 + n :]
    (v / "st-header-100000000.distillgan").write_bytes(archive_of(big, manifest=full_manifest(big)))
    valid("st-header-100000000", v / "st-header-100000000.distillgan", "§8", "A safetensors header of exactly 100 000 000 bytes "
          "(MAX_HEADER_BYTES), JSON followed by spaces.", {MODEL: {t: sha256(raw) for t, raw in parse_st(model).items()}})
    over = struct.pack("<Q", MAX_HEADER_BYTES + 1) + text + b" " * (MAX_HEADER_BYTES + 1 - len(text)) + model[8 + n :]
    (iv / "st-header-100000001.distillgan").write_bytes(archive_of(over, manifest=full_manifest(over)))
    invalid("st-header-100000001", "§8", "st-header-size", "A safetensors header of 100 000 001 bytes, one past MAX_HEADER_BYTES.")

    # the central directory limit: exactly 64 KiB (read, then the entry's comment decides) / one byte more (refused unread)
    base_members = [(MANIFEST, manifest_bytes(full_manifest(model))), (MODEL, model)]
    fixed = 2 * CENTRAL.size + len(MANIFEST) + len(MODEL)
    for id_, cd_size, code in [("cd-65536", MAX_CENTRAL_DIRECTORY_BYTES, "zip-comment"),
                               ("cd-65537", MAX_CENTRAL_DIRECTORY_BYTES + 1, "zip-layout")]:
        data = zip_archive(base_members, central={1: {"comment": b"c" * (cd_size - fixed)}})
        assert dir_info(data)[1] == cd_size
        (iv / f"{id_}.distillgan").write_bytes(data)
        invalid(id_, "§8", code, f"A central directory of {cd_size} bytes (the model's entry carries a file comment): "
                + ("MAX_CENTRAL_DIRECTORY_BYTES, so the directory is read and its entry's comment decides (§13.3 D6)."
                   if code == "zip-comment" else "one past MAX_CENTRAL_DIRECTORY_BYTES, refused before the directory is read (§13.2 E8)."))

    # the tensor count limit: 1 048 576 tensors (valid) / one more
    for id_, count, ok in [("st-tensors-1048576", 1 << 20, True), ("st-tensors-1048577", (1 << 20) + 1, False)]:
        names = [f"t{i:07d}" for i in range(count)]
        header = b"{" + b",".join(b'"%s":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}' % nm.encode() for nm in names) + b"}"
        member = st_raw(header, b"")
        (v if ok else iv).joinpath(f"{id_}.distillgan").write_bytes(
            archive_of(member, manifest=full_manifest(member, state_dict={"$": "tensors", "prefix": "", "keys": names})))
        if ok:
            empty = hashlib.sha256(b"").hexdigest()
            valid(id_, v / f"{id_}.distillgan", "§8", "1 048 576 zero-size tensors in model.safetensors: MAX_TENSORS.",
                  {MODEL: dict.fromkeys(names, empty)})
        else:
            invalid(id_, "§8", "st-header-size", "1 048 577 tensors, one past MAX_TENSORS.")

    # the manifest limit: exactly 64 MiB (valid) / one more byte (refused on the member size)
    limit = 64 << 20
    base = manifest_bytes(full_manifest(model, training_config={"pad": b""}))
    for id_, target, ok in [("manifest-67108864", limit, True), ("manifest-67108865", limit + 1, False)]:
        pad = target - len(base) - 4  # bin8 (2-byte head) becomes bin32 (5-byte head): 3 more bytes, and the size grows
        mbytes = manifest_bytes(full_manifest(model, training_config={"pad": bytes(pad)}))
        mbytes = manifest_bytes(full_manifest(model, training_config={"pad": bytes(pad + target - len(mbytes))}))
        assert len(mbytes) == target, (len(mbytes), target)
        (v if ok else iv).joinpath(f"{id_}.distillgan").write_bytes(archive_of(model, manifest=mbytes))
        if ok:
            valid(id_, v / f"{id_}.distillgan", "§8", "A manifest of exactly 64 MiB (MAX_MANIFEST_BYTES): a 64 MiB bin in training_config.",
                  {MODEL: {t: sha256(raw) for t, raw in parse_st(model).items()}})
        else:
            invalid(id_, "§8", "manifest-too-large", "A manifest of 64 MiB + 1 byte, one past MAX_MANIFEST_BYTES.")

    # the pickle marker search: the marker ending at byte 16 MiB (found) / one byte later (cut: not found)
    marker = b"\x8c\x0ddistill_model"
    for id_, end, code in [("pickle-scan-16mib", 16 << 20, "legacy-distill-v1"), ("pickle-scan-16mib-plus-1", (16 << 20) + 1, "pickle")]:
        filler = end - 2 - 9 - len(marker)
        data = b"\x80\x04\x8e" + struct.pack("<Q", filler) + bytes(filler) + marker + b"."
        assert data.index(marker) + len(marker) == end
        (iv / f"{id_}.distillgan").write_bytes(data)
        invalid(id_, "§7", code, f"A raw pickle whose marker (SHORT_BINUNICODE) ends at byte {end}: "
                + ("the last byte the search reads (MAX_PICKLE_SCAN_BYTES)." if code != "pickle" else "one byte past the scan limit."))
    for id_, before, code in [("pickle-ops-200000", 199_998, "legacy-distill-v1"), ("pickle-ops-200001", 199_999, "pickle")]:
        (iv / f"{id_}.distillgan").write_bytes(b"\x80\x02" + b"N" * before + marker + b".")
        invalid(id_, "§7", code, f"PROTO, {before} NONE opcodes, then the marker as opcode {before + 2}: "
                + ("the last opcode examined (MAX_PICKLE_OPS)." if code != "pickle" else "one past MAX_PICKLE_OPS."))

    # the torch-zip probe: a directory of exactly 16 MiB is walked, one byte more is not
    pkl = pickle.dumps({"format": "distill_model"}, protocol=2)
    for id_, cd_size, code in [("torch-zip-cd-16mib", 16 << 20, "legacy-distill-v1"), ("torch-zip-cd-16mib-plus-1", (16 << 20) + 1, "zip-entry-count")]:
        first = CENTRAL.pack(CENTRAL_SIG, MADE_BY, VERSION, 0, 0, 0, DOS_DATE, zlib.crc32(pkl), len(pkl), len(pkl), 16, 0, 0, 0, 0,
                             XATTR_FILE, 0) + b"archive/data.pkl"
        rest, count = cd_size - len(first), 1
        fillers = []
        while rest:
            extra = min(rest - 46 - 1, 0xFFFF)
            if rest - (46 + 1 + extra) and rest - (46 + 1 + extra) < 47:
                extra -= 47
            fillers.append(CENTRAL.pack(CENTRAL_SIG, MADE_BY, VERSION, 0, 0, 0, DOS_DATE, 0, 0, 0, 1, extra, 0, 0, 0, XATTR_FILE, 0)
                           + b"x" + bytes(extra))
            rest -= 46 + 1 + extra
            count += 1
        local = LOCAL.pack(LOCAL_SIG, VERSION, 0, 0, 0, DOS_DATE, zlib.crc32(pkl), len(pkl), len(pkl), 16, 0) + b"archive/data.pkl" + pkl
        cd = first + b"".join(fillers)
        assert len(cd) == cd_size
        (iv / f"{id_}.distillgan").write_bytes(local + cd + EOCD.pack(EOCD_SIG, 0, 0, count, count, len(cd), len(local), 0))
        invalid(id_, "§7", code, f"A torch-style zip holding archive/data.pkl with the v1 marker, whose directory is {cd_size} bytes: "
                + ("walked by the probe (MAX_CD_SCAN_BYTES)." if code != "zip-entry-count"
                   else f"one byte past MAX_CD_SCAN_BYTES, so not identified: the strict reader refuses its {count} entries."))
    return entries


def _read_at(path: Path, offset: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(n)


def build_large(out_dir: Path) -> dict[str, Any]:
    for sub in ("valid", "invalid"):
        d = out_dir / sub
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    entries = large_vectors(out_dir)
    for e in entries:
        h = hashlib.sha256()
        with open(out_dir / e["file"], "rb") as f:
            while chunk := f.read(64 << 20):
                h.update(chunk)
        e["sha256"] = h.hexdigest()
    index = {
        "format": "distillgan-conformance-vectors", "version": 1, "spec": "spec/FORMAT.md", "generator": "spec/vectors/generate.py --large",
        "contract": "as in spec/vectors/index.json",
        "vectors": entries,
    }
    (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=None, ensure_ascii=True, allow_nan=False) + "\n", encoding="ascii")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: the folder of this script)")
    parser.add_argument("--check", action="store_true", help="regenerate into a temporary folder and compare with --out")
    parser.add_argument("--large", type=Path, metavar="DIR", help="write the large vectors (not committed) into DIR instead")
    parser.add_argument("--resign", action="store_true", help="make the randomised signature sidecars again (FORMAT.md §16)")
    args = parser.parse_args(argv)
    if args.large is None and check_signatures(args.out, check=args.check, resign=args.resign):
        return 1
    if args.large is not None:
        index = build_large(args.large)
        n_valid = sum(v["valid"] for v in index["vectors"])
        print(f"{n_valid} valid and {len(index['vectors']) - n_valid} invalid large vectors written to {args.large}")
        return 0
    if not args.check:
        index = build(args.out)
        n_valid = sum(v["valid"] for v in index["vectors"])
        print(f"{n_valid} valid and {len(index['vectors']) - n_valid} invalid vectors written to {args.out}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        differ = compare_trees(Path(tmp), args.out)
    for rel in differ:
        print(f"differs: {rel}")
    print("vectors are up to date" if not differ else f"{len(differ)} files differ: re-run spec/vectors/generate.py")
    return 1 if differ else 0


# --- signature vectors (FORMAT.md §16) -----------------------------------------------------------------
# ECDSA signatures are randomised, so the sidecars cannot be regenerated byte for byte: they were made once
# (``--resign``) and are kept. Everything else here is deterministic: the two model files, the test keys
# (derived from fixed labels: PUBLISHED TEST KEYS, never use them for anything else), the truncated bundle
# (cut from the kept one) and signatures/index.json. A normal run writes those again and checks every
# kept sidecar gives its expected verdict with distillgan's verifier.

SIGNATURES = "signatures"
SIGNATURE_CASES = [  # (id, model file, signature file, public key file, expected code or None, description)
    ("valid", "signed.distillgan", "signed.distillgan.sig", "signer.pub.pem", None,
     "the sidecar signed.distillgan.sig, made with model-signing's key method, signs the file's SHA-256"),
    ("another-file", "signed.distillgan", "other-file.sig", "signer.pub.pem", "signature-mismatch",
     "a valid signature by the same key of another file (other.distillgan): its digest is not this file's"),
    ("truncated", "signed.distillgan", "truncated.sig", "signer.pub.pem", "signature-malformed",
     "the first half of signed.distillgan.sig: not a bundle model-signing can read"),
    ("another-key", "signed.distillgan", "other-key.sig", "signer.pub.pem", "signature-invalid",
     "a signature of this file's SHA-256 by another key than signer.pub.pem"),
]
_RANDOM_SIGNATURES = ("signed.distillgan.sig", "other-file.sig", "other-key.sig")


def _signature_key(label: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # of P-256
    scalar = int.from_bytes(hashlib.sha256(b"distillgan signature vector key: " + label.encode()).digest(), "big") % (order - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _signature_files() -> dict[str, bytes]:
    """The deterministic files of the signature vectors: two models and two published test key pairs."""
    from cryptography.hazmat.primitives import serialization

    files = {
        "signed.distillgan": archive_of(),
        "other.distillgan": archive_of(manifest=full_manifest(st_canonical(BASE_TENSORS), metadata=metadata(name="Another model"))),
    }
    for name in ("signer", "other-signer"):
        key = _signature_key(name)
        files[f"{name}.key.pem"] = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption())
        files[f"{name}.pub.pem"] = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    return files


def build_signatures(out_dir: Path, *, resign: bool = False) -> list[str]:
    """Write out_dir/signatures; sign again only when asked (or when a kept sidecar is missing). Returns problems found."""
    import distillgan

    out = out_dir / SIGNATURES
    out.mkdir(parents=True, exist_ok=True)
    for rel, data in _signature_files().items():
        (out / rel).write_bytes(data)
    kept = HERE / SIGNATURES
    for name in _RANDOM_SIGNATURES:
        if not resign and (kept / name).is_file():
            if kept != out:
                shutil.copyfile(kept / name, out / name)
            continue
        from model_signing import signing as ms_signing

        model, key = {"signed.distillgan.sig": ("signed.distillgan", "signer"), "other-file.sig": ("other.distillgan", "signer"),
                      "other-key.sig": ("signed.distillgan", "other-signer")}[name]
        ms_signing.Config().use_elliptic_key_signer(private_key=out / f"{key}.key.pem").sign(out / model, out / name)
    good = (out / "signed.distillgan.sig").read_bytes()
    (out / "truncated.sig").write_bytes(good[: len(good) // 2])
    problems, entries = [], []
    for id_, model, sig, pub, code, desc in SIGNATURE_CASES:
        try:
            distillgan.verify(out / model, signature=out / sig, public_key=out / pub)
            got = None
        except distillgan.DistillganError as e:
            if e.code == "signing-unavailable":
                raise
            got = e.code
        if got != code:
            problems.append(f"{SIGNATURES}/{sig}: expected {code or 'valid'}, distillgan says {got or 'valid'}")
        entries.append({"id": f"{SIGNATURES}/{id_}", "file": model, "signature": sig, "public_key": pub, "section": "§16.3",
                        "description": desc, "expected": {"valid": True} if code is None else {"code": code},
                        "sha256": {n: sha256((out / n).read_bytes()) for n in (model, sig, pub)}})
    index = {
        "format": "distillgan-signature-vectors",
        "version": 1,
        "spec": "spec/FORMAT.md §16",
        "contract": (
            "For each vector, check that 'signature' signs 'file' by 'public_key' (all relative to this index). Valid: "
            "accept. Otherwise refuse with expected.code (FORMAT.md §9). `model_signing verify key FILE --public_key PUB "
            "--signature SIG` accepts exactly the valid ones. The .key.pem files are published test keys."
        ),
        "vectors": entries,
    }
    (out / INDEX_NAME).write_text(json.dumps(index, indent=1, ensure_ascii=True) + "\n", encoding="ascii")
    return problems


def check_signatures(out: Path, *, check: bool, resign: bool) -> list[str]:
    """Write (or with ``check`` compare) the signature vectors; print and return the problems."""
    import distillgan

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) if check else out
        try:
            problems = build_signatures(target, resign=resign)
        except distillgan.DistillganError as e:  # model-signing not installed: the kept sidecars cannot be checked here
            print(f"signature vectors not checked: {e}")
            return []
        if check:
            kept = out / SIGNATURES
            problems += [f"{SIGNATURES}/{p.name} differs: re-run spec/vectors/generate.py" for p in sorted((target / SIGNATURES).iterdir())
                         if not (kept / p.name).is_file() or (kept / p.name).read_bytes() != p.read_bytes()]
    for problem in problems:
        print(f"signature vector: {problem}")
    return problems


def compare_trees(a: Path, b: Path) -> list[str]:
    """Relative paths of vector files (and the index) that differ between two output folders."""
    def listing(root: Path) -> dict[str, bytes]:
        out = {INDEX_NAME: (root / INDEX_NAME).read_bytes() if (root / INDEX_NAME).exists() else b""}
        for sub in ("valid", "invalid"):
            if (root / sub).exists():
                for p in sorted((root / sub).iterdir()):
                    out[f"{sub}/{p.name}"] = p.read_bytes()
        return out

    la, lb = listing(a), listing(b)
    return sorted(k for k in set(la) | set(lb) if la.get(k) != lb.get(k))


if __name__ == "__main__":
    sys.exit(main())
