"""The converter's budget (FORMAT.md §15): every hostile checkpoint gets a coded error within it, or the right output, ties kept.

Each input is built here byte by byte (tests/hostile_checkpoints.py). `distillgan convert` runs in a
subprocess: exit status 1 and exactly one `error [CODE]` line, never a traceback or a signal.
"""

from __future__ import annotations

import enum
import importlib
import pickle
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hostile_checkpoints as h
import pytest
import torch

from distillgan.errors import InputError
from distillgan.pickled import STDLIB_ENUMS, PickledObject, read_pickled, read_plain_tree, to_plain_tree
from distillgan.pickled.enums import STDLIB_ENUM_MODULES


def _write(tmp_path: Path, data: bytes, name: str = "ck.pt") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _code(fn: Any, *args: Any) -> str:
    with pytest.raises(InputError) as info:
        fn(*args)
    return info.value.code


HOSTILE_CLI = {  # finding -> (builder, the code convert must answer with)
    "compressed-data-pkl": (lambda: h.compressed_none_list(3_000_000), "convert-limit"),
    "enum-tuple-bomb": (h.enum_tuple_bomb, "convert-limit"),
    "deep-tuple-key": (lambda: h.deep_tuple_key(200_000, zipped=True), "convert-limit"),
    "deep-tuple-set-item": (lambda: h.deep_tuple_set_item(200_000), "convert-limit"),
    "colliding-int-keys": (h.colliding_int_keys, "convert-limit"),
    "zip-comment": (h.zip_with_comment, "convert-unreadable"),
    "zip64-directory": (h.zip64_directory_claim, "convert-limit"),
    "neg-bool": (h.neg_bool_tensor, "convert-unreadable"),
    "build-on-path": (h.build_on_path, "convert-unsafe"),
}


def test_each_hostile_checkpoint_gets_one_coded_error_from_the_cli(tmp_path: Path) -> None:
    """One subprocess per input (run side by side): exit 1, one `error [CODE]` line, no traceback, no signal.

    The deep key used to kill the converter with SIGSEGV; the others gave tracebacks or ran for minutes.
    """
    procs = {}
    for name, (build, code) in HOSTILE_CLI.items():
        out = tmp_path / f"out-{name}"
        out.mkdir()
        argv = [sys.executable, "-m", "distillgan", "convert", str(_write(tmp_path, build(), f"{name}.pt")), "--dir", str(out)]
        procs[name] = (subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), code, out)
    for name, (proc, code, out) in procs.items():
        _, stderr = proc.communicate(timeout=600)
        errors = [line for line in stderr.splitlines() if "error [" in line]
        assert proc.returncode == 1, (name, proc.returncode, stderr[-2000:])
        assert len(errors) == 1 and f"error [{code}]" in errors[0], (name, stderr[-2000:])
        assert "Traceback" not in stderr, name
        assert not list(out.iterdir()), name


def test_a_nested_stream_referenced_many_times_is_read_once_and_stays_shared(tmp_path: Path) -> None:
    """Before: each memo reference re-read the stream (a 1 MB file wrote 210 MB). Now: one storage, every tensor over it."""
    path = _write(tmp_path, h.shared_nested_stream(1 << 16, 50))
    tree = read_plain_tree(path)
    assert len(tree) == 50
    pointers = {t.untyped_storage().data_ptr() for t in tree.values()}
    assert len(pointers) == 1 and all(t.shape == (1 << 16,) for t in tree.values())


def test_a_deflated_data_pkl_is_bounded_by_its_stored_bytes(tmp_path: Path) -> None:
    """3 M opcodes inflated from a few KB: refused once the work passes 8 x the file + 2**20, not after inflating 256 MiB."""
    path = _write(tmp_path, h.compressed_none_list(3_000_000))
    assert path.stat().st_size < 10_000
    with pytest.raises(InputError) as info:
        read_pickled(path)
    assert info.value.code == "convert-limit" and "work_per_byte" in str(info.value)
    small = _write(tmp_path, h.compressed_none_list(1000), "small.pt")
    assert read_pickled(small) == [None] * 1000


def test_shared_bytearrays_and_conj_tensors_are_copied_once_and_stay_tied(tmp_path: Path) -> None:
    got = read_plain_tree(_write(tmp_path, h.shared_bytearray(1 << 20, 12)))
    assert len(got) == 12 and all(g is got[0] for g in got) and got[0] == bytes(1 << 20)
    tree = read_plain_tree(_write(tmp_path, h.shared_conj_tensors(1024, 6), "conj.pt"))
    tensors = list(tree.values())
    assert len(tensors) == 12 and all(t is tensors[0] for t in tensors)  # one resolved copy, tied everywhere
    assert not tensors[0].is_conj() and tensors[0].dtype == torch.complex64


def test_enum_members_count_toward_the_node_limit(tmp_path: Path) -> None:
    """Color(t) with t 12 tuples of the same tuple, 7 deep: 35 M leaves from 498 bytes; used to take minutes."""
    assert _code(read_plain_tree, _write(tmp_path, h.enum_tuple_bomb())) == "convert-limit"
    assert read_plain_tree(_write(tmp_path, h.enum_tuple_bomb(3, 3), "small.pt")) == (((None,) * 3,) * 3,) * 3


def test_deep_keys_and_set_items_are_refused_before_they_are_hashed(tmp_path: Path) -> None:
    assert _code(read_pickled, _write(tmp_path, h.deep_tuple_key(100_000))) == "convert-limit"
    assert _code(read_pickled, _write(tmp_path, h.deep_tuple_set_item(100_000))) == "convert-limit"
    assert read_pickled(_write(tmp_path, h.deep_tuple_key(40))) is not None  # shallow enough: an ordinary key
    unhashable = b"\x80\x02}]Ns."  # a list as a key
    assert _code(read_pickled, _write(tmp_path, unhashable)) == "convert-unreadable"


def test_keys_sharing_one_hash_are_bounded(tmp_path: Path) -> None:
    assert _code(read_pickled, _write(tmp_path, h.colliding_int_keys(20_000))) == "convert-limit"
    assert len(read_pickled(_write(tmp_path, h.colliding_int_keys(32)))) == 32
    ordinary = pickle.dumps({k: None for k in range(20_000)}, protocol=2)
    assert len(read_pickled(_write(tmp_path, ordinary))) == 20_000
    # Enum members as keys become their values in the plain tree, counted there again: ints of 64 bits allow 13 per hash
    keys = [k * h.HASH_MODULUS for k in range(-4, 9)]
    members = b"\x80\x02}(" + b"".join(b"cm\nK\n" + h.long1(k) + b"\x85R" + h.u(str(k)) for k in keys) + b"u."
    assert sorted(read_plain_tree(_write(tmp_path, members, "members.pt"))) == sorted(keys)


def test_a_torch_zip_is_read_once_by_the_strict_parser(tmp_path: Path) -> None:
    assert _code(read_pickled, _write(tmp_path, h.zip_with_comment())) == "convert-unreadable"
    assert _code(read_pickled, _write(tmp_path, h.zip64_directory_claim())) == "convert-limit"
    torch.save({"w": torch.arange(3.0)}, tmp_path / "ok.pt")
    assert torch.equal(read_pickled(tmp_path / "ok.pt")["w"], torch.arange(3.0))


def test_neg_bool_and_build_on_a_path_are_coded_errors(tmp_path: Path) -> None:
    assert _code(read_pickled, _write(tmp_path, h.neg_bool_tensor())) == "convert-unreadable"
    assert _code(read_pickled, _write(tmp_path, h.build_on_path())) == "convert-unsafe"


class Outer:
    class Inner:
        def __init__(self) -> None:
            self.x = 3


def test_a_nested_class_is_a_named_record_in_every_protocol(tmp_path: Path) -> None:
    for protocol in (2, 3, 4, 5):
        got = read_pickled(_write(tmp_path, pickle.dumps(Outer.Inner(), protocol=protocol)))
        assert isinstance(got, PickledObject) and got.full_name == f"{__name__}.Outer.Inner", protocol
        assert to_plain_tree(got) == {"__class__": f"{__name__}.Outer.Inner", "__state__": {"x": 3}}


def test_the_stdlib_enum_list_matches_the_running_python() -> None:
    """Every Enum with members that the covered standard-library modules (and their submodules) define is in the list."""
    found = set()
    for top in STDLIB_ENUM_MODULES:
        try:
            module = importlib.import_module(top)
        except ImportError:
            continue
        names = [top] + [i.name for i in pkgutil.walk_packages(getattr(module, "__path__", []), top + ".")]
        for name in names:
            if any(part.startswith("_") or part == "test" for part in name.split(".")[1:]):
                continue
            try:
                mod = importlib.import_module(name)
            except Exception:  # noqa: BLE001, S112  a platform-specific submodule
                continue
            for value in vars(mod).values():
                is_enum = isinstance(value, type) and issubclass(value, enum.Enum) and bool(value.__members__)
                if is_enum and value.__module__.split(".")[0] == top:
                    found.add(f"{value.__module__}.{value.__qualname__}")
    assert found and found <= STDLIB_ENUMS, sorted(found - STDLIB_ENUMS)
    assert {"http.HTTPStatus", "signal.Signals", "re.RegexFlag", "ssl.Purpose", "uuid.SafeUUID"} <= found
