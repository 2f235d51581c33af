"""Hostile checkpoints built byte by byte: each finding of the converter's budget review, as a file.

Shared by tests/test_converter_budget.py (each must now give a coded error within the budget, or the
right output with shared values tied), bench/converter_budget.py (time and RSS of `distillgan convert`
on each) and the converter fuzzer's seed corpus.
"""

from __future__ import annotations

import io
import struct
import warnings
import zipfile

import torch

HASH_MODULUS = (1 << 61) - 1  # CPython's int hash: k * HASH_MODULUS hashes to 0 for every k


def u(text: str) -> bytes:
    """BINUNICODE."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def binbytes(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def put(i: int) -> bytes:
    return b"r" + struct.pack("<I", i)  # LONG_BINPUT


def get(i: int) -> bytes:
    return b"j" + struct.pack("<I", i)  # LONG_BINGET


def long1(n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 8) // 8 or 1, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def torch_zip(data_pkl: bytes, storages: dict[str, bytes] | None = None, *, compress_pkl: bool = False) -> bytes:
    """A torch zip checkpoint laid out as torch.save does (data.pkl, byteorder, version, data/<key>)."""
    members = {"archive/data.pkl": data_pkl, "archive/byteorder": b"little", "archive/version": b"3\n"}
    members.update({f"archive/data/{k}": v for k, v in (storages or {}).items()})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            deflate = compress_pkl and name.endswith("data.pkl")
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
    return buf.getvalue()


def nested_stream(nbytes: int) -> bytes:
    """The bytes torch.storage._load_from_bytes reads: a legacy torch.save stream of one uint8 storage."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(torch.zeros(nbytes, dtype=torch.uint8).storage(), buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def shared_nested_stream(nbytes: int = 1 << 20, refs: int = 200) -> bytes:
    """One nested legacy stream, its bytes referenced ``refs`` times through the memo, each a tensor over it."""
    out = [b"\x80\x03ctorch._utils\n_rebuild_tensor_v2\n", put(0), b"ctorch.storage\n_load_from_bytes\n", put(1)]
    out += [binbytes(nested_stream(nbytes)), put(2), b"J" + struct.pack("<i", nbytes) + b"\x85", put(3), b"K\x01\x85", put(4)]
    out += [b"0000}("]  # pop the four setup values; a dict (a state dict), then a mark
    one = get(0) + b"(" + get(1) + get(2) + b"\x85RK\x00" + get(3) + get(4) + b"\x89}tR"
    out += [b"".join(u(f"t{i}") + one for i in range(refs)), b"u."]
    return b"".join(out)


def compressed_none_list(count: int) -> bytes:
    """A torch zip whose deflated data.pkl is a list of ``count`` Nones (one opcode per byte, inflating ~1000x)."""
    return torch_zip(b"\x80\x02(" + b"N" * count + b"l.", compress_pkl=True)


def shared_bytearray(nbytes: int = 8 << 20, refs: int = 12) -> bytes:
    """A torch zip (deflated data.pkl) holding one bytearray of ``nbytes`` referenced ``refs`` times."""
    pkl = b"\x80\x03c__builtin__\nbytearray\n" + binbytes(b"\x00" * nbytes) + b"\x85R" + put(0) + b"(" + get(0) * refs + b"l."
    return torch_zip(pkl, compress_pkl=True)


def enum_tuple_bomb(fanout: int = 12, levels: int = 7) -> bytes:
    """``Color(t)`` (an Enum-like call) where t is tuples of the same tuple, ``levels`` deep: fanout**levels leaves."""
    out = [b"\x80\x02cmymodule\nColor\nN"]
    for level in range(levels):
        out.append(put(level) + b"0(" + get(level) * fanout + b"t")
    out.append(b"\x85R.")
    return b"".join(out)


def enum_member_chain(levels: int) -> bytes:
    """``Chain(Chain(...Chain(7)))``, ``levels`` calls deep: an Enum-like call whose value is one, and so on (4 bytes a level)."""
    return b"\x80\x02cattacker\nChain\nq\x00" + b"h\x00" * (levels - 1) + b"K\x07" + b"\x85R" * levels + b"."


def enum_members_sharing_a_value(members: int, width: int) -> bytes:
    """A list of ``members`` calls ``Chain(t)``, t one tuple of ``width`` calls ``Chain(i)``: one value shared by all."""
    value = b"(" + b"".join(b"h\x00" + long1(i) + b"\x85R" for i in range(width)) + b"tq\x010"
    return b"\x80\x02cattacker\nChain\nq\x00" + value + b"(" + b"h\x00h\x01\x85R" * members + b"l."


def shared_conj_tensors(numel: int = 1 << 19, refs: int = 12) -> bytes:
    """A torch zip: one complex64 storage; one conj tensor referenced ``refs`` times, plus ``refs`` more conj views of it."""
    head = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n" + put(0)
    pid = b"(X\x07\x00\x00\x00storagectorch\nComplexFloatStorage\n" + u("0") + u("cpu") + b"J" + struct.pack("<i", numel) + b"t"
    pid += b"Q" + put(1)  # BINPERSID, memoised
    size = b"J" + struct.pack("<i", numel) + b"\x85" + put(2) + b"K\x01\x85" + put(3) + b"000"
    meta = b"}" + u("conj") + b"\x88s"
    one = get(0) + b"(" + get(1) + b"K\x00" + get(2) + get(3) + b"\x89}" + meta + b"tR"
    keys = [u(f"t{i}") for i in range(2 * refs)]
    shared = keys[0] + one + put(4) + b"".join(k + get(4) for k in keys[1:refs])
    pkl = head + pid + b"0" + size + b"}(" + shared + b"".join(k + one for k in keys[refs:]) + b"u."
    return torch_zip(pkl, {"0": b"\x00" * (8 * numel)})


def deep_tuple_key(depth: int = 1_000_000, *, zipped: bool = False) -> bytes:
    """A dict whose key is a tuple nested ``depth`` deep (CPython hashes it recursively in C)."""
    pkl = b"\x80\x02}N" + b"\x85" * depth + b"Ns."
    return torch_zip(pkl, compress_pkl=True) if zipped else pkl


def deep_tuple_set_item(depth: int = 1_000_000) -> bytes:
    return b"\x80\x04\x8f(N" + b"\x85" * depth + b"\x90."  # EMPTY_SET, MARK, the tuple, ADDITEMS


def colliding_int_keys(count: int = 20_000) -> bytes:
    """A dict of ``count`` int keys k * (2**61 - 1): one hash value for all of them."""
    return b"\x80\x02}(" + b"".join(long1(k * HASH_MODULUS) + b"N" for k in range(1, count + 1)) + b"u."


def neg_bool_tensor() -> bytes:
    pid = b"(X\x07\x00\x00\x00storagectorch\nBoolStorage\n" + u("0") + u("cpu") + b"K\x04tQ"
    pkl = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(" + pid + b"K\x00K\x04\x85K\x01\x85\x89}}" + u("neg") + b"\x88stR."
    return torch_zip(pkl, {"0": b"\x01\x00\x01\x00"})


def build_on_path() -> bytes:
    """BUILD with slot state on a PurePosixPath: its internals rewritten from the file."""
    return b"\x80\x02cpathlib\nPurePosixPath\n" + u("a") + b"\x85RN}" + u("_raw_paths") + b"K\x05s\x86b."


def zip_with_comment() -> bytes:
    """A valid torch zip, then a comment holding a second end record (two readings of one zip)."""
    data = bytearray(torch_zip(b"\x80\x02}."))
    fake = b"PK\x05\x06" + b"\x00" * 16 + b"\x00\x00"
    data[-2:] = struct.pack("<H", len(fake))
    return bytes(data) + fake


def zip64_directory_claim(claimed: int = 1 << 30) -> bytes:
    """A torch.save zip whose zip64 end record claims a central directory of ``claimed`` bytes."""
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    data = bytearray(buf.getvalue())
    record = data.rfind(b"PK\x06\x06")
    data[record + 40 : record + 48] = struct.pack("<Q", claimed)
    eocd = len(data) - 22
    data[eocd + 12 : eocd + 16] = b"\xff\xff\xff\xff"
    return bytes(data)


FINDINGS = {  # name -> (builder, what it did before)
    "1-shared-nested-stream": (shared_nested_stream, "each memo reference re-read the nested stream: 200 x 1 MiB storages"),
    "2-compressed-data-pkl": (lambda: compressed_none_list(10_000_000), "10 M opcodes inflated from 10 KB, no opcode bound"),
    "3a-shared-bytearray": (shared_bytearray, "bytes() per reference: 12 copies of 8 MiB"),
    "3b-enum-tuple-bomb": (enum_tuple_bomb, "35 M tuple elements walked, not counted by max_nodes"),
    "3c-shared-conj-tensors": (shared_conj_tensors, "24 resolved copies of a 4 MiB conj tensor, untied"),
    "4-deep-tuple-key": (deep_tuple_key, "SIGSEGV: the key hashed recursively in C"),
    "5-colliding-int-keys": (colliding_int_keys, "quadratic dict insertion"),
    "6-zip-comment": (zip_with_comment, "two end records, two readings"),
    "6-zip64-directory": (zip64_directory_claim, "directory size read from one record, zipfile reading another"),
    "7-neg-bool": (neg_bool_tensor, "NotImplementedError traceback"),
    "7-build-on-path": (build_on_path, "TypeError traceback"),
}
