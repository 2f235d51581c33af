"""The converter's restricted pickle reader: real torch.save files, hostile pickles built byte by byte.

Three groups: round trips (what torch.save, the legacy stream and plain pickles write comes back
bit-exact), security (payloads that run code under pickle.loads run nothing here, checked with
an audit hook that is first shown to fire), and work bounds (small files that would expand to
huge work are refused, checked by tracemalloc peaks and structural counts, never by time).
"""

from __future__ import annotations

import argparse
import collections
import copyreg
import ctypes
import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import ipaddress
import math
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import nn

import distillgan
from distillgan.errors import DistillganError, FileAccessError, InputError
from distillgan.pickled import ALLOWED_GLOBALS, DEFAULT_LIMITS, PickledObject, PickleLimits, read_pickled, to_plain_tree


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Mode(str, enum.Enum):
    FAST = "fast"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Config:
    rate: int
    name: str


class Reduce:
    """Pickles as ``fn(*args)``: how a hostile pickle is written with the standard pickler."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args

    def __call__(self, *args: Any) -> Any:  # the pickler requires the callable of a reduce tuple to be callable
        raise AssertionError("only ever pickled")


# ---------------------------------------------------------------------------------------------
# helpers


def _write(tmp_path: Path, data: bytes, name: str = "input.pkl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _code(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The code of the DistillganError that ``fn(*args, **kwargs)`` raises."""
    with pytest.raises(DistillganError) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, ValueError)
    return info.value.code


@contextmanager
def _peak_memory() -> Iterator[list[int]]:
    """tracemalloc peak (bytes) of the block, appended to the yielded list."""
    out: list[int] = []
    tracemalloc.start()
    try:
        yield out
    finally:
        out.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def _u(text: str) -> bytes:
    """BINUNICODE opcode (no memo)."""
    data = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data


def _i(n: int) -> bytes:
    """The opcode(s) pickle writes for the int ``n`` (ints are never memoised)."""
    return pickle.dumps(n, protocol=2)[2:-1]


def _tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _pid(key: str, numel: int, storage: str = "FloatStorage") -> bytes:
    """A torch zip persistent id ('storage', torch.<storage>, key, 'cpu', numel), then BINPERSID."""
    return _tup(_u("storage"), f"ctorch\n{storage}\n".encode(), _u(key), _u("cpu"), _i(numel)) + b"Q"


def _rebuild(pid: bytes, offset: int, size: tuple[int, ...], stride: tuple[int, ...], name: str = "_rebuild_tensor_v2") -> bytes:
    args = pid + _i(offset) + _tup(*map(_i, size)) + _tup(*map(_i, stride)) + b"\x89" + b"ccollections\nOrderedDict\n)R"
    return f"ctorch._utils\n{name}\n".encode() + _tup(args) + b"R"


def _torch_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None, *, byteorder: bytes = b"little",
               extra: dict[str, bytes] | None = None, compress: set[str] | None = None) -> Path:  # fmt: skip
    """A torch zip checkpoint written member by member, as torch.save lays it out."""
    members = {"archive/data.pkl": data_pkl, "archive/byteorder": byteorder, "archive/version": b"3\n"}
    members.update({f"archive/data/{k}": v for k, v in (storages or {}).items()})
    members.update(extra or {})
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            method = zipfile.ZIP_DEFLATED if name in (compress or set()) else zipfile.ZIP_STORED
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return path


def _float_bytes(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


# ---------------------------------------------------------------------------------------------
# round trips

WRITERS: dict[str, Callable[[Any, Path], object]] = {
    "torch-zip": lambda obj, p: torch.save(obj, p),
    "torch-zip-protocol-4": lambda obj, p: torch.save(obj, p, pickle_protocol=4),
    "torch-legacy-stream": lambda obj, p: torch.save(obj, p, _use_new_zipfile_serialization=False),
    "pickle-protocol-2": lambda obj, p: p.write_bytes(pickle.dumps(obj, protocol=2)),
    "pickle-protocol-5": lambda obj, p: p.write_bytes(pickle.dumps(obj, protocol=5)),
}
TORCH_FORMATS = ["torch-zip", "torch-zip-protocol-4", "torch-legacy-stream"]
DTYPES = [
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2,
    torch.float8_e4m3fnuz, torch.float8_e5m2fnuz, torch.complex64, torch.complex128, torch.int8, torch.int16,
    torch.int32, torch.int64, torch.uint8, torch.uint16, torch.uint32, torch.uint64, torch.bool,
]  # fmt: skip


def _sample(dtype: torch.dtype) -> torch.Tensor:
    base = torch.arange(12).reshape(3, 4)
    if dtype is torch.bool:
        return base % 3 == 0
    if dtype.is_complex:
        return (base + 0.5j * base).to(dtype)
    if dtype.is_floating_point:
        return (base * 0.75 - 3).to(dtype)
    return base.to(dtype)


@pytest.mark.parametrize("fmt", WRITERS)
def test_every_dtype_round_trips_with_views(tmp_path: Path, fmt: str, assert_same_tensor: Callable[..., None]) -> None:
    expected = {}
    for dtype in DTYPES:
        t = _sample(dtype)
        name = str(dtype).removeprefix("torch.")
        expected[name] = t
        expected[name + "/t"] = t.t()  # non-contiguous
        expected[name + "/0d"] = t[1, 2]  # 0-d view with a storage offset
        expected[name + "/cols"] = t[:, 1::2]
    path = tmp_path / "ckpt"
    WRITERS[fmt](expected, path)
    got = read_pickled(path)
    assert list(got) == list(expected)
    for name, t in expected.items():
        assert_same_tensor(got[name], t)
        assert got[name].stride() == t.stride() and got[name].storage_offset() == t.storage_offset()
    plain = to_plain_tree(got)
    assert all(plain[name] is got[name] for name in expected)


@pytest.mark.parametrize("fmt", TORCH_FORMATS)
def test_tied_tensors_stay_tied_and_parameters_keep_requires_grad(tmp_path: Path, fmt: str) -> None:
    weight = torch.randn(4, 3)
    obj = {
        "encoder.weight": weight,
        "decoder.weight": weight,  # the same tensor twice
        "decoder.weight_t": weight.t(),  # another view of the same storage
        "row": weight[2],
        "p": nn.Parameter(torch.ones(2)),
        "frozen": nn.Parameter(torch.zeros(2), requires_grad=False),
        "scalar": torch.tensor(7.5),
        "empty": torch.zeros(0, 5),
    }
    path = tmp_path / "tied.pt"
    WRITERS[fmt](obj, path)
    got = read_pickled(path)
    assert got["encoder.weight"] is got["decoder.weight"]
    ptrs = {got[k].untyped_storage().data_ptr() for k in ("encoder.weight", "decoder.weight_t", "row")}
    assert len(ptrs) == 1, "views of one storage must share one storage"
    got["encoder.weight"][2, 1] = 42.0
    assert got["decoder.weight_t"][1, 2] == 42.0 and got["row"][1] == 42.0
    assert type(got["p"]) is nn.Parameter and got["p"].requires_grad
    assert type(got["frozen"]) is nn.Parameter and not got["frozen"].requires_grad
    assert got["scalar"].shape == () and got["scalar"].item() == 7.5
    assert got["empty"].shape == (0, 5)


def test_pickle_dump_of_tensors_reads_like_torch_does(tmp_path: Path) -> None:
    """pickle.dumps writes each storage reference as a nested legacy stream: distinct views are no longer tied."""
    w = torch.arange(6.0)
    path = _write(tmp_path, pickle.dumps({"a": w, "b": w, "c": w[2:]}, protocol=2))
    got = read_pickled(path)
    expected = pickle.loads(path.read_bytes())  # the reference reading, of our own trusted bytes
    assert got["a"] is got["b"] and torch.equal(got["c"], w[2:])
    tied = got["a"].untyped_storage().data_ptr() == got["c"].untyped_storage().data_ptr()
    assert tied == (expected["a"].untyped_storage().data_ptr() == expected["c"].untyped_storage().data_ptr())


NUMPY_VALUES = {
    "f8": np.linspace(-1, 1, 6).reshape(2, 3),
    "f4": np.arange(5, dtype=np.float32),
    "f2": np.arange(3, dtype=np.float16),
    "i8": np.array([-(2**63), 2**63 - 1]),
    "u2be": np.arange(4, dtype=">u2"),
    "bool": np.array([True, False, True]),
    "c16": np.array([1 + 2j, -3j]),
    "0d": np.array(3, dtype=np.int16),
    "fortran": np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
    "empty": np.zeros((0, 3), dtype=np.uint8),
    "scalar_f4": np.float32(1.5),
    "scalar_i8": np.int64(-4),
    "scalar_bool": np.bool_(True),
}


@pytest.mark.parametrize("fmt", ["torch-zip", *(f"pickle-protocol-{p}" for p in range(6))])
def test_numpy_arrays_and_scalars(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "np"
    if fmt == "torch-zip":
        torch.save(NUMPY_VALUES, path)
    else:
        path.write_bytes(pickle.dumps(NUMPY_VALUES, protocol=int(fmt[-1])))
    got = read_pickled(path)
    for name, expected in NUMPY_VALUES.items():
        value = got[name]
        assert type(value) is type(expected), name
        assert value.dtype == expected.dtype and np.array_equal(value, expected), name
        if isinstance(expected, np.ndarray):
            assert value.shape == expected.shape and value.flags.f_contiguous == expected.flags.f_contiguous, name
    plain = to_plain_tree(got)
    assert plain["scalar_f4"] == 1.5 and type(plain["scalar_f4"]) is float
    assert plain["scalar_i8"] == -4 and plain["scalar_bool"] is True
    assert plain["fortran"] is got["fortran"]
    assert plain["u2be"].dtype == np.dtype("=u2") and np.array_equal(plain["u2be"], NUMPY_VALUES["u2be"])


PLAIN_VALUES: dict[Any, Any] = {
    "none": None,
    "true": True,
    "int": -7,
    "u64": 2**64 - 1,
    "i64": -(2**63),
    "float": 1.5,
    "nan": math.nan,
    "inf": -math.inf,
    "str": "héllo ✓",
    "bytes": b"\x00\xff\x80",
    "empty_bytes": b"",
    "bytearray": bytearray(b"ab"),
    "tuple": (1, (2, "x"), ()),
    "list": [1, [2.5, None]],
    "ordered": collections.OrderedDict([("z", 1), ("a", 2)]),
    7: "int key",
    "set": {3, 1, 2},
    "frozenset": frozenset({"b", "a"}),
    "complex": 1 + 2j,
    "path": PurePosixPath("/models/g_02500000"),
}
PLAIN_EXPECTED: dict[Any, Any] = {
    **PLAIN_VALUES,
    "bytearray": b"ab",
    "ordered": {"z": 1, "a": 2},
    "set": {"__class__": "builtins.set", "__args__": [1, 2, 3]},
    "frozenset": {"__class__": "builtins.frozenset", "__args__": ["a", "b"]},
    "complex": {"__class__": "builtins.complex", "__args__": [1.0, 2.0]},
    "path": "/models/g_02500000",
}


def _same(actual: Any, expected: Any, path: str = "$") -> None:
    """Exact comparison of value trees: types, order of keys, NaN, tensors by bits."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and actual.dtype == expected.dtype and torch.equal(actual, expected), path
    elif isinstance(expected, float) and math.isnan(expected):
        assert isinstance(actual, float) and math.isnan(actual), path
    elif isinstance(expected, dict):
        assert type(actual) is dict and list(actual) == list(expected), path
        for k in expected:
            _same(actual[k], expected[k], f"{path}[{k!r}]")
    elif isinstance(expected, (list, tuple)):
        assert type(actual) is type(expected) and len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected)):
            _same(a, e, f"{path}[{i}]")
    else:
        assert type(actual) is type(expected) and actual == expected, f"{path}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("protocol", range(6))
def test_plain_pickles_of_every_protocol(tmp_path: Path, protocol: int) -> None:
    got = read_pickled(_write(tmp_path, pickle.dumps(PLAIN_VALUES, protocol=protocol)))
    assert type(got["ordered"]) is collections.OrderedDict and list(got["ordered"]) == ["z", "a"]
    assert got["set"] == {1, 2, 3} and got["complex"] == 1 + 2j and got["path"] == PurePosixPath("/models/g_02500000")
    _same(to_plain_tree(got), PLAIN_EXPECTED)


@pytest.mark.parametrize("fmt", ["torch-zip", "pickle-protocol-0", "pickle-protocol-2", "pickle-protocol-4"])
def test_enum_members_become_their_values(tmp_path: Path, fmt: str) -> None:
    obj = {"color": Color.BLUE, "mode": Mode.FAST, "level": Level.HIGH, "by_member": {Color.RED: "r"}}
    path = tmp_path / "enum"
    if fmt == "torch-zip":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=int(fmt[-1])))
    got = read_pickled(path)
    color = got["color"]
    assert isinstance(color, PickledObject) and color.is_enum_like()
    assert color.full_name == f"{Color.__module__}.Color" and color.args == (2,)
    assert to_plain_tree(got) == {"color": 2, "mode": "fast", "level": 3, "by_member": {1: "r"}}


def test_optimizer_and_scheduler_state(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    ckpt = {"model": model.state_dict(), "optimizer_state_dict": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": 1}
    torch.save(ckpt, tmp_path / "train.pt")
    plain = to_plain_tree(read_pickled(tmp_path / "train.pt"))
    _same(plain, to_plain_tree_reference(ckpt))
    assert plain["optimizer_state_dict"]["param_groups"][0]["betas"] == (0.9, 0.999)


def to_plain_tree_reference(value: Any) -> Any:
    """What the conversion rule gives for trusted in-memory values (dicts, lists, tuples, tensors, scalars)."""
    if isinstance(value, dict):
        return {k: to_plain_tree_reference(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain_tree_reference(v) for v in value]
    if isinstance(value, tuple):
        return tuple(to_plain_tree_reference(v) for v in value)
    return value


def test_unknown_classes_are_recorded_not_imported(tmp_path: Path) -> None:
    linear_module = nn.Linear(2, 2)
    model = nn.Sequential(linear_module)
    obj = {"config": Config(rate=3, name="x"), "args": argparse.Namespace(lr=0.1), "model": model}
    torch.save(obj, tmp_path / "whole.pt")
    got = read_pickled(tmp_path / "whole.pt")
    config = got["config"]
    assert isinstance(config, PickledObject) and type(config).module == Config.__module__ and type(config).qualname == "Config"
    plain = to_plain_tree(got)
    assert plain["config"] == {"__class__": f"{Config.__module__}.Config", "__state__": {"rate": 3, "name": "x"}}
    assert plain["args"] == {"__class__": "argparse.Namespace", "__state__": {"lr": 0.1}}
    linear = plain["model"]["__state__"]["_modules"]["0"]
    assert linear["__class__"] == "torch.nn.modules.linear.Linear"
    weight = linear["__state__"]["_parameters"]["weight"]
    assert type(weight) is nn.Parameter and torch.equal(weight, linear_module.weight)


def test_devices_dtypes_sizes_and_paths(tmp_path: Path) -> None:
    obj = {"device": torch.device("cuda", 1), "dtype": torch.float16, "size": torch.Size([2, 3]), "path": Path("/a/b")}
    torch.save(obj, tmp_path / "misc.pt")
    got = read_pickled(tmp_path / "misc.pt")
    assert got["device"] == torch.device("cuda", 1) and got["dtype"] is torch.float16 and got["size"] == torch.Size([2, 3])
    assert got["path"] == PurePosixPath("/a/b")
    assert to_plain_tree(got) == {"device": "cuda:1", "dtype": {"__global__": "torch.float16"}, "size": (2, 3), "path": "/a/b"}


def test_big_endian_zip_is_byteswapped(tmp_path: Path) -> None:
    values = {
        "f": torch.tensor([1.5, -2.0]),
        "i": torch.tensor([1, -300], dtype=torch.int16),
        "c": torch.tensor([1 + 2j], dtype=torch.complex64),
        "b": torch.tensor([7, 9], dtype=torch.uint8),
    }
    np_types = {"0": "f4", "1": "i2", "2": "c8", "3": "u1"}  # storage keys follow first use
    torch.save(values, tmp_path / "le.pt")
    with zipfile.ZipFile(tmp_path / "le.pt") as src, zipfile.ZipFile(tmp_path / "be.pt", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            key = info.filename.rpartition("/data/")[2] if "/data/" in info.filename else None
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif key in np_types:
                data = np.frombuffer(data, "<" + np_types[key]).astype(">" + np_types[key]).tobytes()
            dst.writestr(info, data)
    got = read_pickled(tmp_path / "be.pt")
    for name, t in values.items():
        assert torch.equal(got[name], t), name
    torch.save({"u": torch.tensor([1, 2], dtype=torch.uint16)}, tmp_path / "u.pt")  # an untyped storage
    with zipfile.ZipFile(tmp_path / "u.pt") as src, zipfile.ZipFile(tmp_path / "ube.pt", "w") as dst:
        for info in src.infolist():
            dst.writestr(info, b"big" if info.filename.endswith("/byteorder") else src.read(info))
    assert _code(lambda: read_pickled(tmp_path / "ube.pt")) == "convert-unreadable"


def test_error_paths_name_the_place(tmp_path: Path) -> None:
    obj = {"optimizer_state_dict": {"state": {3: {(1, 2): "tuple key"}}}}
    got = read_pickled(_write(tmp_path, pickle.dumps(obj, protocol=2)))
    with pytest.raises(InputError, match=r"\$\.optimizer_state_dict\.state\[3\]: key \(1, 2\) is a tuple") as info:
        to_plain_tree(got)
    assert info.value.code == "convert-value"


def test_allowlist_is_exact_pairs() -> None:
    assert ("collections", "OrderedDict") in ALLOWED_GLOBALS and ("torch._utils", "_rebuild_tensor_v2") in ALLOWED_GLOBALS
    for module, name in ALLOWED_GLOBALS:
        assert module not in ("os", "posix", "nt", "sys", "subprocess", "functools", "operator", "importlib")
        assert name not in ("eval", "exec", "__import__", "apply", "open", "compile", "setattr", "system")
    # getattr only in the form protocols 0-3 name a nested class with, getattr(<class the file names>, "Inner"): a new stand-in
    assert {n for m, n in ALLOWED_GLOBALS if m in ("builtins", "__builtin__") and n == "getattr"} == {"getattr"}


# ---------------------------------------------------------------------------------------------
# security: nothing named by a hostile pickle runs

_FORBIDDEN = {"exec", "compile", "import", "os.system", "subprocess.Popen", "os.posix_spawn", "os.fork", "open"}
_FORBIDDEN_PREFIXES = ("os.exec", "os.spawn", "os.posix_spawn", "subprocess.", "ctypes.", "socket.", "urllib.")


class _Blocked(Exception):
    """Raised by the audit hook so that a payload proving the hook works never actually runs."""


class _Audit:
    armed: ClassVar[bool] = False
    allowed_paths: ClassVar[frozenset[str]] = frozenset()
    events: ClassVar[list[tuple[str, str]]] = []


def _audit_hook(event: str, args: tuple[Any, ...]) -> None:
    if not _Audit.armed:
        return
    if not (event in _FORBIDDEN or event.startswith(_FORBIDDEN_PREFIXES)):
        return
    if event == "open" and (isinstance(args[0], int) or os.fspath(args[0]) in _Audit.allowed_paths):
        return  # the input file itself (os.open by path, then fdopen by descriptor)
    _Audit.events.append((event, repr(args)[:200]))
    raise _Blocked(event)


sys.addaudithook(_audit_hook)  # process-wide and permanent: it records only while armed


@contextmanager
def _watch(allowed: Path | None = None) -> Iterator[list[tuple[str, str]]]:
    _Audit.events = []
    _Audit.allowed_paths = frozenset({str(allowed)} if allowed else ())
    _Audit.armed = True
    try:
        yield _Audit.events
    finally:
        _Audit.armed = False


def _fires(payload: bytes) -> list[tuple[str, str]]:
    """Positive control: the stock unpickler runs the payload (the hook blocks it at its first event)."""
    with _watch() as events, pytest.raises(_Blocked):
        pickle.loads(payload)
    return list(events)


def _assert_inert(obj: Any) -> None:
    """Only data, inert stand-ins and their classes: nothing callable from a real module."""
    seen: set[int] = set()
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if o is None or type(o) in (bool, int, float, str, bytes, bytearray, complex, torch.dtype, torch.UntypedStorage):
            continue
        if type(o) in (list, tuple, set, frozenset):
            stack.extend(o)
        elif type(o) in (dict, collections.OrderedDict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, PickledObject):
            stack.extend([*o.args, *o.kwargs.values(), o.state, *o.items, *(x for kv in o.dict_items for x in kv)])
        elif isinstance(o, type) and issubclass(o, PickledObject):
            continue
        else:
            pytest.fail(f"not inert: {type(o)!r}")


def _read_quietly(path: Path) -> Any:
    """read_pickled under the armed hook: returns the result or the InputError."""
    with _watch(path) as events:
        try:
            result: Any = read_pickled(path)
        except InputError as e:
            result = e
    assert events == [], f"read_pickled triggered {events}"
    return result


def _getattr_chain() -> Reduce:
    return Reduce(Reduce(getattr, Reduce(__import__, "os"), "system"), "true")


PAYLOADS: dict[str, Callable[[], bytes]] = {
    "os.system-GLOBAL": lambda: pickle.dumps(Reduce(os.system, "true"), protocol=2),
    "os.system-STACK_GLOBAL": lambda: pickle.dumps(Reduce(os.system, "true"), protocol=4),
    "os.system-INST": lambda: b"(S'true'\nios\nsystem\n.",
    "os.system-OBJ": lambda: b"(cos\nsystem\nS'true'\no.",
    "subprocess.Popen": lambda: pickle.dumps(Reduce(subprocess.Popen, ["true"]), protocol=2),
    "os.posix_spawn": lambda: pickle.dumps(Reduce(os.posix_spawn, "/bin/true", ["true"], {}), protocol=2),
    "builtins.eval-as-__builtin__": lambda: pickle.dumps(Reduce(eval, "1 + 1"), protocol=2),
    "builtins.exec": lambda: pickle.dumps(Reduce(exec, "x = 1"), protocol=4),
    "builtins.getattr-chain": lambda: pickle.dumps(_getattr_chain(), protocol=4),
    "builtins.__import__": lambda: pickle.dumps(Reduce(__import__, "distillgan_no_such_module"), protocol=2),
    "builtins.open": lambda: pickle.dumps(Reduce(open, "/etc/hostname"), protocol=2),
    "ctypes.CDLL": lambda: pickle.dumps(Reduce(ctypes.CDLL, None), protocol=2),
    "dotted-qualname": lambda: b"\x80\x04\x8c\x05torch\x8c\x17serialization.os.system\x93\x8c\x04true\x85R.",
    "functools.partial": lambda: pickle.dumps(Reduce(functools.partial(os.system, "true")), protocol=2),
    "copyreg._reconstructor": lambda: pickle.dumps(
        Reduce(copyreg._reconstructor, subprocess.Popen, subprocess.Popen, ["true"]),  # type: ignore[attr-defined]
        protocol=2,
    ),
    "_rebuild_from_type_v2-with-callable": lambda: pickle.dumps(
        Reduce(torch._tensor._rebuild_from_type_v2, os.system, torch.Tensor, ("true",), {}), protocol=2
    ),
    "torch.storage._load_from_bytes-nested-pickle": lambda: pickle.dumps(
        Reduce(torch.storage._load_from_bytes, pickle.dumps(Reduce(os.system, "true"), protocol=2)), protocol=2
    ),
    "torch.serialization.load": lambda: pickle.dumps(Reduce(torch.serialization.load, "/etc/hostname"), protocol=2),
    "torch.hub.download_url_to_file": lambda: pickle.dumps(
        Reduce(torch.hub.download_url_to_file, "http://127.0.0.1:9/x", "/tmp/distillgan-never-written"), protocol=2
    ),
}


@pytest.mark.parametrize("name", PAYLOADS)
def test_hostile_plain_pickle_runs_nothing(tmp_path: Path, name: str) -> None:
    payload = PAYLOADS[name]()
    assert _fires(payload), "the hook must see the stock unpickler run this payload"
    result = _read_quietly(_write(tmp_path, payload))
    if isinstance(result, InputError):
        assert result.code in ("convert-unsafe", "convert-unreadable")
    else:
        _assert_inert(result)


@pytest.mark.parametrize(
    "name", ["os.system-GLOBAL", "subprocess.Popen", "builtins.getattr-chain", "_rebuild_from_type_v2-with-callable"]
)
def test_hostile_data_pkl_in_a_torch_zip_runs_nothing(tmp_path: Path, name: str) -> None:
    payload = PAYLOADS[name]()
    assert _fires(payload)
    result = _read_quietly(_torch_zip(tmp_path / "ckpt.pt", payload))
    if isinstance(result, InputError):
        assert result.code in ("convert-unsafe", "convert-unreadable")
    else:
        _assert_inert(result)


def test_results_of_hostile_pickles_are_stand_ins(tmp_path: Path) -> None:
    got = _read_quietly(_write(tmp_path, PAYLOADS["os.system-GLOBAL"]()))
    assert isinstance(got, PickledObject) and got.full_name == f"{os.system.__module__}.system" and got.args == ("true",)
    got = _read_quietly(_write(tmp_path, PAYLOADS["builtins.eval-as-__builtin__"]()))
    assert got.full_name == "__builtin__.eval"  # protocol 2 spells builtins so: never mapped onto the real one
    chain = _read_quietly(_write(tmp_path, PAYLOADS["builtins.getattr-chain"]()))
    assert isinstance(chain, InputError) and chain.code == "convert-unsafe" and "getattr" in str(chain)  # only on a class
    popen = _read_quietly(_write(tmp_path, pickle.dumps(Reduce(subprocess.Popen, ["true"]), protocol=4)))
    assert to_plain_tree(popen) == {"__class__": "subprocess.Popen", "__args__": [["true"]]}
    # protocols 0-2 write Python 2 spellings (fix_imports); stand-ins keep the names as the file spells them
    old_spelling = _read_quietly(_write(tmp_path, PAYLOADS["subprocess.Popen"]()))
    assert old_spelling.full_name == "commands.Popen"
    # one str argument and nothing else is how Enum members pickle, but only a class-named callee (upper-case
    # initial, as every Enum class) is read as one: a function called that way stays a record of the call
    assert to_plain_tree(got) == {"__class__": "__builtin__.eval", "__args__": ["1 + 1"]}


def test_torch_global_state_is_untouched(tmp_path: Path) -> None:
    """torch._C and torch functions that flip process-wide state: no audit event, so check the state itself."""
    payloads = [
        pickle.dumps([Reduce(torch._C._set_grad_enabled, False)], protocol=2),
        pickle.dumps([Reduce(torch.set_default_dtype, torch.float64)], protocol=4),
    ]
    try:
        for payload in payloads:
            pickle.loads(payload)  # positive control: the stock unpickler changes the state
        assert not torch.is_grad_enabled() and torch.get_default_dtype() is torch.float64
    finally:
        torch._C._set_grad_enabled(True)
        torch.set_default_dtype(torch.float32)
    for payload in payloads:
        got = _read_quietly(_write(tmp_path, payload))
        _assert_inert(got)
    assert torch.is_grad_enabled() and torch.get_default_dtype() is torch.float32


def test_ext_opcodes_are_refused_even_with_a_poisoned_extension_cache(tmp_path: Path) -> None:
    """EXT codes resolve through copyreg._extension_cache before find_class: a cached real function would bypass it."""
    code = 240
    copyreg.add_extension(os.system.__module__, "system", code)
    try:
        payload = b"\x80\x02\x82" + bytes([code]) + _u("true") + b"\x85R."
        assert _fires(payload)
        assert copyreg._extension_cache.get(code) is os.system  # type: ignore[attr-defined]
        result = _read_quietly(_write(tmp_path, payload))
        assert isinstance(result, InputError) and result.code == "convert-unsafe"
        for ext in (b"\x83" + struct.pack("<H", code), b"\x84" + struct.pack("<i", code)):
            result = _read_quietly(_write(tmp_path, b"\x80\x02" + ext + b"."))
            assert isinstance(result, InputError) and result.code == "convert-unsafe"
    finally:
        copyreg.remove_extension(os.system.__module__, "system", code)


def test_disguised_names(tmp_path: Path) -> None:
    storage = {"0": _float_bytes(1, 2)}
    spaced = b"\x80\x02" + _rebuild(_pid("0", 2), 0, (2,), (1,), name="_rebuild_tensor_v2 ") + b"."
    got = _read_quietly(_torch_zip(tmp_path / "a.pt", spaced, storage))
    assert isinstance(got, PickledObject) and type(got).qualname == "_rebuild_tensor_v2 "
    _assert_inert(got)
    for module in (b"torch._utils.", b"Torch._utils", b"torch._utils\x00"):
        data = (
            b"\x80\x02c"
            + module
            + b"\n_rebuild_tensor_v2\n"
            + _tup(_pid("0", 2), _i(0), _tup(_i(2)), _tup(_i(1)), b"\x89", b"N")
            + b"R."
        )
        _assert_inert(_read_quietly(_torch_zip(tmp_path / "b.pt", data, storage)))
    for bad in (b"C\x05torch", b"K\x05"):  # STACK_GLOBAL with bytes or an int as the module
        data = b"\x80\x04" + bad + b"\x8c\x04eval\x93."
        result = _read_quietly(_write(tmp_path, data))
        assert isinstance(result, InputError) and result.code in ("convert-unsafe", "convert-unreadable")


TORCH_TRICKS: dict[str, bytes] = {
    "BUILD-on-a-tensor": b"\x80\x02"
    + _rebuild(_pid("0", 2), 0, (2,), (1,))
    + _tup(_i(0), _i(0), _tup(_i(1 << 40)), _tup(_i(0)))
    + b"b.",
    "BUILD-slots-on-an-allowlisted-class": b"\x80\x02ccollections\nOrderedDict\nN}X\x08\x00\x00\x00__call__cposix\nsystem\ns\x86b.",
    "APPEND-to-a-tensor": b"\x80\x02" + _rebuild(_pid("0", 2), 0, (2,), (1,)) + _i(1) + b"a.",
    "SETITEM-on-a-tensor": b"\x80\x02" + _rebuild(_pid("0", 2), 0, (2,), (1,)) + _i(0) + _i(9) + b"s.",
    "codecs.encode-other-codec": b"\x80\x02c_codecs\nencode\n" + _u("cHJpbnQ=") + _u("base64") + b"\x86R.",
    "rebuild-with-a-fake-storage": b"\x80\x02" + _rebuild(b"cposix\nsystem\n", 0, (2,), (1,)) + b".",
    "Parameter-of-a-stand-in": b"\x80\x02ctorch.nn.parameter\nParameter\ncposix\nsystem\n\x85R.",
    "torch.Tensor-called": b"\x80\x02ctorch\nTensor\n" + _tup(_i(1 << 40)) + b"R.",
    "storage-type-called": b"\x80\x02ctorch\nFloatStorage\n" + _tup(_i(1 << 40)) + b"R.",
    "quantized-tensor": b"\x80\x02ctorch._utils\n_rebuild_qtensor\n).",
    "quantized-storage": b"\x80\x02" + _rebuild(_pid("0", 2, "QInt8Storage"), 0, (2,), (1,)) + b".",
    "complex32-dtype": b"\x80\x02ctorch._utils\n_rebuild_tensor_v3\n"
    + _tup(_pid("0", 8, "UntypedStorage"), _i(0), _tup(_i(2)), _tup(_i(1)), b"\x89", b"N", b"ctorch\ncomplex32\n")
    + b"R.",
    "TorchScript": b"",
}


@pytest.mark.parametrize("name", TORCH_TRICKS)
def test_torch_specific_tricks_are_refused(tmp_path: Path, name: str) -> None:
    extra = {"archive/constants.pkl": b"\x80\x02).", "archive/code/__torch__.py": b"import os"} if name == "TorchScript" else None
    path = _torch_zip(tmp_path / "t.pt", TORCH_TRICKS[name] or b"\x80\x02}.", {"0": _float_bytes(1, 2)}, extra=extra)
    result = _read_quietly(path)
    assert isinstance(result, InputError), f"expected a refusal, got {result!r}"
    assert result.code in ("convert-unsafe", "convert-unreadable", "convert-limit")


def test_attributes_of_an_ordered_dict_are_read_but_not_kept(tmp_path: Path) -> None:
    """BUILD on an OrderedDict sets instance attributes (torch's _metadata); odd names cost no more than their bytes."""
    huge_name = b"\x8b\x00\x10\x00\x00" + b"\x01" * 4096  # a 32768-bit int as the attribute name
    data = b"\x80\x02ccollections\nOrderedDict\n)R" + _u("k") + _i(1) + b"s}" + huge_name + b"Nsb."
    got = read_pickled(_write(tmp_path, data))
    assert got == {"k": 1} and len(vars(got)) == 1
    assert to_plain_tree(got) == {"k": 1}


def test_reachable_classes_are_read_only(tmp_path: Path) -> None:
    """BUILD slot state reaches setattr on the object: our classes refuse it (nothing leaks into the next read)."""
    standin = b"\x80\x02cmymod\nThing\nN}X\x07\x00\x00\x00__new__cposix\nsystem\ns\x86b."
    assert _code(lambda: read_pickled(_write(tmp_path, standin))) == "convert-unsafe"
    allowlisted = b"\x80\x02c__builtin__\nset\nN}X\x07\x00\x00\x00__new__cposix\nsystem\ns\x86b."
    assert _code(lambda: read_pickled(_write(tmp_path, allowlisted))) == "convert-unsafe"
    assert read_pickled(_write(tmp_path, pickle.dumps({1, 2}, protocol=2))) == {1, 2}


# ---------------------------------------------------------------------------------------------
# work bounds


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_paths_that_are_not_regular_files(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "link").symlink_to(fifo)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dirlink").symlink_to(tmp_path / "dir")
    for path in (fifo, tmp_path / "link", tmp_path / "dir", tmp_path / "dirlink", Path("/dev/null")):
        with pytest.raises(FileAccessError) as info:
            read_pickled(path)  # O_NONBLOCK: opening the FIFO returns at once, fstat refuses it
        assert info.value.code == "not-regular-file", path
    with pytest.raises(FileAccessError) as info:
        read_pickled(tmp_path / "missing.pt")
    assert info.value.code == "not-found"


def test_file_size_cap(tmp_path: Path) -> None:
    sparse = tmp_path / "huge.pt"
    with open(sparse, "wb") as f:
        f.truncate(DEFAULT_LIMITS.max_file_bytes + 1)  # sparse: no disk space used
    with pytest.raises(FileAccessError) as info:
        read_pickled(sparse)
    assert info.value.code == "file-too-large"
    small = _write(tmp_path, pickle.dumps(list(range(100)), protocol=2))
    with pytest.raises(FileAccessError):
        read_pickled(small, limits=PickleLimits(max_file_bytes=100))


def test_pickle_byte_cap_and_deflate_bomb(tmp_path: Path) -> None:
    limits = PickleLimits(max_pickle_bytes=1 << 20)
    big = pickle.dumps(b"\x00" * (2 << 20), protocol=4)
    assert _code(lambda: read_pickled(_write(tmp_path, big), limits=limits)) == "convert-limit"
    assert _code(lambda: read_pickled(_torch_zip(tmp_path / "a.pt", big), limits=limits)) == "convert-limit"
    bomb = b"\x80\x04" + b"N0" * (8 << 20) + b"N."  # 16 MiB of NONE/POP: deflates to ~16 KiB
    path = _torch_zip(tmp_path / "bomb.pt", bomb, compress={"archive/data.pkl"})
    assert path.stat().st_size < 100_000
    with _peak_memory() as peak:
        assert _code(lambda: read_pickled(path, limits=limits)) == "convert-limit"
    assert peak[0] < 4 << 20
    uses_0 = b"\x80\x02" + _rebuild(_pid("0", 1), 0, (1,), (1,)) + b"."
    deflated_storage = _torch_zip(tmp_path / "c.pt", uses_0, {"0": _float_bytes(1)}, compress={"archive/data/0"})
    assert _code(read_pickled, deflated_storage) == "convert-unreadable"  # refused rather than decompressed


def test_declared_lengths_past_the_end_allocate_nothing(tmp_path: Path) -> None:
    cases = [
        b"\x80\x04\x8e" + struct.pack("<Q", 1 << 60) + b"x",  # BINBYTES8
        b"\x80\x05\x96" + struct.pack("<Q", 1 << 60) + b"x",  # BYTEARRAY8
        b"\x80\x04\x95" + struct.pack("<Q", 1 << 60) + b"N.",  # FRAME
        b"\x80\x02\x8b" + struct.pack("<i", 1 << 30) + b"\x01",  # LONG4
    ]
    for data in cases:
        path = _write(tmp_path, data)
        with _peak_memory() as peak:
            assert _code(read_pickled, path) == "convert-unreadable"
        assert peak[0] < 1 << 20


def test_memo_index_bomb(tmp_path: Path) -> None:
    """LONG_BINPUT n makes the C unpickler allocate and zero a memo of 2n pointers: refused before it runs."""
    for data in (b"\x80\x02Nr\xf0\xff\xff\x0f.", b"(Np268435455\n.", b"\x80\x02Nq\x05."):
        path = _write(tmp_path, data)
        with _peak_memory() as peak:
            assert _code(read_pickled, path) == "convert-unsafe"
        assert peak[0] < 1 << 20


def test_expanded_and_out_of_bounds_views(tmp_path: Path) -> None:
    storage = {"0": _float_bytes(1, 2, 3, 4)}

    def view(offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> Path:
        return _torch_zip(tmp_path / "v.pt", b"\x80\x02" + _rebuild(_pid("0", 4), offset, size, stride) + b".", storage)

    with _peak_memory() as peak:
        assert _code(lambda: read_pickled(view(0, (1 << 20, 1 << 20), (0, 0)))) == "convert-limit"  # 2**40 elements, 16 bytes
    assert peak[0] < 1 << 20
    assert _code(lambda: read_pickled(view(0, (5,), (1,)))) == "convert-limit"  # more elements than the storage
    assert _code(lambda: read_pickled(view(2, (3,), (1,)))) == "convert-unreadable"  # past the end
    assert _code(lambda: read_pickled(view(0, (2,), (4,)))) == "convert-unreadable"  # elements 0 and 4 of 0..3
    assert torch.equal(read_pickled(view(0, (2,), (3,))), torch.tensor([1.0, 4.0]))  # elements 0 and 3: inside
    assert _code(lambda: read_pickled(view(5, (0,), (1,)))) == "convert-unreadable"
    assert torch.equal(read_pickled(view(1, (2,), (2,))), torch.tensor([2.0, 4.0]))
    for bad in (b"J\xff\xff\xff\xff", b"G?\xf0\x00\x00\x00\x00\x00\x00", b"\x88"):  # -1, 1.0, True as an offset
        data = (
            b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n"
            + _tup(_pid("0", 4), bad, _tup(_i(1)), _tup(_i(1)), b"\x89", b"N")
            + b"R."
        )
        assert _code(read_pickled, _torch_zip(tmp_path / "b.pt", data, storage)) == "convert-unreadable"
    negative_stride = (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n"
        + _tup(_pid("0", 4), _i(3), _tup(_i(2)), _tup(_i(-1)), b"\x89", b"N")
        + b"R."
    )
    assert _code(lambda: read_pickled(_torch_zip(tmp_path / "n.pt", negative_stride, storage))) == "convert-unreadable"


def test_distinct_views_are_bounded_and_identical_ones_are_free(tmp_path: Path) -> None:
    storage = {"0": _float_bytes(*range(16))}  # 64 bytes
    limits = PickleLimits(view_bytes_extra=0)  # budget: 4 x 64 = 256 bytes of distinct views
    overlapping = [_rebuild(_pid("0", 16), i, (16 - i,), (1,)) for i in range(8)]  # 64+60+...+36 = 400 bytes
    data = b"\x80\x02(" + b"".join(overlapping) + b"l."
    assert _code(lambda: read_pickled(_torch_zip(tmp_path / "a.pt", data, storage), limits=limits)) == "convert-limit"
    same = [_rebuild(_pid("0", 16), 0, (16,), (1,)) for _ in range(1000)]  # 1000 records of one view: 64 bytes
    got = read_pickled(_torch_zip(tmp_path / "b.pt", b"\x80\x02(" + b"".join(same) + b"l.", storage), limits=limits)
    assert len(got) == 1000 and len({t.untyped_storage().data_ptr() for t in got}) == 1


def _doubling_bomb(levels: int) -> bytes:
    """[x, x] nested ``levels`` deep through the memo: a few bytes per level, 2**levels leaves when expanded."""
    out = b"\x80\x02]q\x00"  # level 0: an empty list, memo 0
    for level in range(1, levels + 1):
        out += b"(h" + bytes([level - 1]) + b"h" + bytes([level - 1]) + b"lq" + bytes([level])
    return out + b"."


def test_shared_reference_bomb(tmp_path: Path) -> None:
    path = _write(tmp_path, _doubling_bomb(40))
    assert path.stat().st_size < 400
    with _peak_memory() as peak:
        got = read_pickled(path)
        with pytest.raises(InputError) as info:
            to_plain_tree(got)  # 2**41 nodes when expanded: measured over 41 unique lists, refused before building
    assert info.value.code == "convert-limit" and "max_nodes" in str(info.value)
    assert peak[0] < 1 << 20
    limits = PickleLimits(max_nodes=2**6 - 1)  # 5 levels: 1 + 2 + ... + 32 nodes
    expected: list[Any] = []
    for _ in range(5):
        expected = [expected, expected]
    assert to_plain_tree(read_pickled(_write(tmp_path, _doubling_bomb(5))), limits=limits) == expected
    assert _code(lambda: to_plain_tree(read_pickled(_write(tmp_path, _doubling_bomb(6))), limits=limits)) == "convert-limit"


def test_cycles_and_depth(tmp_path: Path) -> None:
    loop: list[Any] = []
    loop.append(loop)
    got = read_pickled(_write(tmp_path, pickle.dumps({"a": loop}, protocol=2)))
    assert got["a"][0] is got["a"]
    with pytest.raises(InputError, match=r"\$\.a\[0\]: a cycle") as info:
        to_plain_tree(got)
    assert info.value.code == "convert-value"
    deep = b"\x80\x02" + b"]" * 200 + b"a" * 199 + b"."
    assert _code(lambda: read_pickled(_write(tmp_path, deep))) == "convert-limit"
    assert read_pickled(_write(tmp_path, b"\x80\x02" + b"]" * 40 + b"a" * 39 + b"."), limits=PickleLimits(max_depth=64))


def test_huge_integers(tmp_path: Path) -> None:
    big = 10**400
    for protocol in (0, 2):  # text LONG and binary LONG1/LONG4
        got = read_pickled(_write(tmp_path, pickle.dumps({"ok": [2**64 - 1, -(2**63)], "big": big}, protocol=protocol)))
        assert got["big"] == big
        with pytest.raises(InputError, match=r"\$\.big: integer of 1329 bits") as info:
            to_plain_tree(got)
        assert info.value.code == "convert-value"
    for text in (b"L" + b"9" * 100_000 + b"L\n.", b"I" + b"9" * 100_000 + b"\n."):
        path = _write(tmp_path, text)
        with _peak_memory() as peak:
            assert _code(read_pickled, path) == "convert-limit"  # refused before any decimal parsing
        assert peak[0] < 1 << 20
    assert _code(lambda: to_plain_tree({"x": -(2**63) - 1})) == "convert-value"


def test_storage_sizes_must_match_the_bytes_present(tmp_path: Path) -> None:
    one = b"\x80\x02" + _rebuild(_pid("0", 4), 0, (4,), (1,)) + b"."
    assert _code(lambda: read_pickled(_torch_zip(tmp_path / "a.pt", one, {"0": _float_bytes(1, 2, 3)}))) == "convert-unreadable"
    assert _code(lambda: read_pickled(_torch_zip(tmp_path / "b.pt", one, {}))) == "convert-unreadable"  # member missing
    middle = _torch_zip(tmp_path / "c.pt", one, {"0": _float_bytes(1, 2, 3, 4)}, byteorder=b"middle")
    assert _code(read_pickled, middle) == "convert-unreadable"
    assert read_pickled(_torch_zip(tmp_path / "d.pt", one, {"0": _float_bytes(1, 2, 3, 4)})).tolist() == [1, 2, 3, 4]
    huge = b"\x80\x02" + _rebuild(_pid("0", 1 << 40), 0, (1,), (1,)) + b"."
    with _peak_memory() as peak:
        assert _code(lambda: read_pickled(_torch_zip(tmp_path / "e.pt", huge, {"0": _float_bytes(1)}))) == "convert-unreadable"
    assert peak[0] < 1 << 20
    same_key_twice = (
        b"\x80\x02(" + _rebuild(_pid("0", 4), 0, (4,), (1,)) + _rebuild(_pid("0", 2, "IntStorage"), 0, (2,), (1,)) + b"l."
    )
    twice = _torch_zip(tmp_path / "f.pt", same_key_twice, {"0": _float_bytes(1, 2, 3, 4)})
    assert _code(read_pickled, twice) == "convert-unreadable"  # one key, two storage types


def test_damaged_legacy_streams(tmp_path: Path) -> None:
    torch.save({"w": torch.arange(4.0)}, tmp_path / "ok.pt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "ok.pt").read_bytes()
    assert torch.equal(read_pickled(tmp_path / "ok.pt")["w"], torch.arange(4.0))
    assert _code(lambda: read_pickled(_write(tmp_path, data[:-3]))) == "convert-unreadable"  # storage bytes cut short
    assert _code(lambda: read_pickled(_write(tmp_path, data + b"\x00"))) == "convert-unreadable"  # trailing bytes
    count_at = len(data) - 16 - 8
    assert struct.unpack_from("<q", data, count_at)[0] == 4
    wrong_count = data[:count_at] + struct.pack("<q", 5) + data[count_at + 8 :]
    assert _code(lambda: read_pickled(_write(tmp_path, wrong_count))) == "convert-unreadable"
    huge = data.replace(b"K\x04N", _i(1 << 40) + b"N", 1)  # the persistent id's element count
    assert huge != data
    with _peak_memory() as peak:
        assert _code(lambda: read_pickled(_write(tmp_path, huge))) == "convert-unreadable"
    assert peak[0] < 1 << 20


def test_numpy_cannot_allocate_from_a_tiny_file(tmp_path: Path) -> None:
    nd = b"cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
    dtype = b"cnumpy\ndtype\n" + _u("f8") + b"\x89\x88\x87R" + _tup(_i(3), _u("<"), b"NNN", _i(-1), _i(-1), _i(0)) + b"b"
    huge_shape = b"\x80\x02" + nd + _tup(_i(1 << 40)) + b"C\x01b\x87R."
    with _peak_memory() as peak:
        assert _code(lambda: read_pickled(_write(tmp_path, huge_shape))) == "convert-unsafe"
    assert peak[0] < 1 << 20
    empty = nd + _tup(_i(0)) + b"C\x01b\x87R"
    lying = b"\x80\x03" + empty + _tup(_i(1), _tup(_i(1 << 40)), dtype, b"\x89", b"C\x08" + b"\x00" * 8) + b"b."
    with _peak_memory() as peak:
        assert _code(lambda: read_pickled(_write(tmp_path, lying))) == "convert-unreadable"
    assert peak[0] < 1 << 20
    honest = b"\x80\x03" + empty + _tup(_i(1), _tup(_i(1)), dtype, b"\x89", b"C\x08" + struct.pack("<d", 2.5)) + b"b."
    assert read_pickled(_write(tmp_path, honest)).tolist() == [2.5]
    objects = pickle.dumps(np.array([{"a": 1}, None], dtype=object), protocol=2)
    assert _code(lambda: read_pickled(_write(tmp_path, objects))) == "convert-unsafe"


def test_unknown_globals_are_bounded(tmp_path: Path) -> None:
    data = b"\x80\x02(" + b"".join(f"cm\nC{i}\n".encode() for i in range(50)) + b"l."
    assert len(read_pickled(_write(tmp_path, data))) == 50
    assert _code(lambda: read_pickled(_write(tmp_path, data), limits=PickleLimits(max_classes=20))) == "convert-limit"


def test_not_a_pickle(tmp_path: Path) -> None:
    for data in (b"", b"\xff\xfe", b"hello world", b"\x80\x02]", pickle.dumps(1, protocol=2) + b"junk"):
        assert _code(read_pickled, _write(tmp_path, data)) == "convert-unreadable", data
    tar = b"\x00" * 257 + b"ustar" + b"\x00" * 250
    assert "tar" in str(pytest.raises(InputError, read_pickled, _write(tmp_path, tar)).value)
    zf = tmp_path / "plain.zip"
    with zipfile.ZipFile(zf, "w") as z:
        z.writestr("readme.txt", "hi")
    assert _code(lambda: read_pickled(zf)) == "convert-unreadable"


# ---------------------------------------------------------------------------------------------
# the Enum rule: members with tuple values, and standard-library classes that reduce like members


class Pair(enum.Enum):
    A = (1, "x")
    B = (2, ("nested", 0.5, None))


STDLIB_VALUES = {
    "decimal": decimal.Decimal("1.5"),
    "fraction": fractions.Fraction(3, 4),
    "datetime": datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
    "date": datetime.date(2024, 1, 2),
    "time": datetime.time(1, 2, 3),
    "timedelta": datetime.timedelta(days=1, seconds=2),
    "uuid": uuid.UUID(int=5),
    "ipv4": ipaddress.IPv4Address("1.2.3.4"),
    "ipv6": ipaddress.IPv6Address("::1"),
}


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_enum_members_with_tuple_values_become_the_tuple_save_model_stores(tmp_path: Path, protocol: int) -> None:
    config = {"a": Pair.A, "b": Pair.B, "plain": Color.RED}
    torch.save({"model_state_dict": {"w": torch.ones(2)}, "training_config": config, "epoch": 1}, tmp_path / "ck.pt",
               pickle_protocol=protocol)
    plain = to_plain_tree(read_pickled(tmp_path / "ck.pt"))
    assert plain["training_config"] == {"a": (1, "x"), "b": (2, ("nested", 0.5, None)), "plain": 1}
    converted = distillgan.load_model(distillgan.convert_checkpoint(tmp_path / "ck.pt", tmp_path / "c")).training_config
    saved = distillgan.load_model(
        distillgan.save_model({"w": torch.ones(2)}, {}, config, distillgan.ModelMetadata(name="live"), tmp_path / "s")
    ).training_config
    assert converted == saved == {"a": (1, "x"), "b": (2, ("nested", 0.5, None)), "plain": 1}
    assert type(converted["a"]) is tuple and type(converted["b"][1]) is tuple


class Alias(enum.Enum):
    """Members whose values are members of another Enum, or tuples holding them."""

    RED = Color.RED
    PAIR = (Color.BLUE, ("deep", Pair.A))


class Alias2(enum.Enum):
    OF_ALIAS = Alias.RED


@pytest.mark.parametrize("protocol", [0, 2, pickle.DEFAULT_PROTOCOL])
def test_enum_members_whose_values_are_members_become_what_save_model_stores(tmp_path: Path, protocol: int) -> None:
    config = {"red": Alias.RED, "pair": Alias.PAIR, "twice": Alias2.OF_ALIAS, "in_list": [Alias2.OF_ALIAS, Alias.PAIR]}
    (tmp_path / "ck.pkl").write_bytes(pickle.dumps({"training_config": config}, protocol=protocol))
    expected = {"red": 1, "pair": (2, ("deep", (1, "x"))), "twice": 1, "in_list": [1, (2, ("deep", (1, "x")))]}
    saved = distillgan.load_model(
        distillgan.save_model({"w": torch.ones(2)}, {}, config, distillgan.ModelMetadata(name="live"), tmp_path / "s")
    ).training_config
    assert saved == expected  # save_model: a member becomes its .value, and that value is converted again
    assert to_plain_tree(read_pickled(tmp_path / "ck.pkl"))["training_config"] == expected
    if protocol < 2:
        return  # torch.save writes protocol 2 and up
    checkpoint = {"model_state_dict": {"w": torch.ones(2)}, "training_config": config, "epoch": 1}
    torch.save(checkpoint, tmp_path / "ck.pt", pickle_protocol=protocol)
    assert to_plain_tree(read_pickled(tmp_path / "ck.pt"))["training_config"] == expected
    converted = distillgan.load_model(distillgan.convert_checkpoint(tmp_path / "ck.pt", tmp_path / "c")).training_config
    assert converted == expected and type(converted["pair"][1][1]) is tuple


def test_a_member_whose_value_is_a_member_is_no_key_as_save_model_refuses_it(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        distillgan.save_model({"w": torch.ones(2)}, {}, {"k": {Alias.RED: 1}}, distillgan.ModelMetadata(name="k"), tmp_path / "s")
    (tmp_path / "k.pkl").write_bytes(pickle.dumps({Alias.RED: 1, Color.RED: 2}, protocol=2))
    got = read_pickled(tmp_path / "k.pkl")
    assert _code(lambda: to_plain_tree(got)) == "convert-value"
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps({Color.RED: 2}, protocol=2))
    assert to_plain_tree(read_pickled(tmp_path / "ok.pkl")) == {1: 2}


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_standard_library_classes_stay_records_with_their_names(tmp_path: Path, protocol: int) -> None:
    torch.save(STDLIB_VALUES, tmp_path / "std.pt", pickle_protocol=protocol)
    plain = to_plain_tree(read_pickled(tmp_path / "std.pt"))
    # exactly what the value reduces to, under its own name: nothing mistaken for an Enum member's value
    for key, value in STDLIB_VALUES.items():
        record = plain[key]
        name = f"{type(value).__module__}.{type(value).__qualname__}"
        assert isinstance(record, dict) and record["__class__"] == name, (key, record)
    assert plain["decimal"] == {"__class__": "decimal.Decimal", "__args__": ["1.5"]}
    assert plain["fraction"] == {"__class__": "fractions.Fraction", "__args__": [3, 4]}
    assert plain["timedelta"] == {"__class__": "datetime.timedelta", "__args__": [1, 2, 0]}
    assert plain["ipv4"] == {"__class__": "ipaddress.IPv4Address", "__args__": [int(STDLIB_VALUES["ipv4"])]}
    assert plain["uuid"] == {"__class__": "uuid.UUID", "__state__": {"int": 5}}
    assert plain["datetime"]["__args__"] == [STDLIB_VALUES["datetime"].__reduce__()[1][0]]  # the bytes it reduces to
    assert plain["date"]["__args__"] == [STDLIB_VALUES["date"].__reduce__()[1][0]]


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_standard_library_enums_become_their_values(tmp_path: Path, protocol: int) -> None:
    import http
    import inspect as inspect_module
    import signal

    obj = {"status": http.HTTPStatus.OK, "signal": signal.Signals.SIGINT,
           "kind": inspect_module.Parameter.POSITIONAL_ONLY}  # _ParameterKind: named with a leading underscore
    torch.save(obj, tmp_path / "e.pt", pickle_protocol=protocol)
    assert to_plain_tree(read_pickled(tmp_path / "e.pt")) == {"status": 200, "signal": int(signal.SIGINT), "kind": 0}
