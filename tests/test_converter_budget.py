"""The converter's budget (FORMAT.md §15): every hostile checkpoint gets a coded error within it, or the right output, ties kept.

Each input is built here byte by byte (tests/support/hostile_checkpoints.py). `distillgan convert` runs in a
subprocess: exit status 1 and exactly one `error [CODE]` line, never a traceback or a signal.
"""

from __future__ import annotations

import collections
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
from distillgan.pickled import DEFAULT_LIMITS, STDLIB_ENUMS, PickledObject, read_pickled, read_plain_tree, to_plain_tree
from distillgan.pickled.common import Budget
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


def test_a_chain_of_members_is_read_as_members_at_most_eight_levels_deep(tmp_path: Path) -> None:
    """``Chain(Chain(...Chain(7)))`` built by hand: a value of more than 8 levels of members and tuples is no member's."""
    assert read_plain_tree(_write(tmp_path, h.enum_member_chain(1))) == 7
    assert read_plain_tree(_write(tmp_path, h.enum_member_chain(9))) == 7  # the outer member's value: 8 levels
    assert read_plain_tree(_write(tmp_path, h.enum_member_chain(10))) == {"__class__": "attacker.Chain", "__args__": [7]}
    outer = read_plain_tree(_write(tmp_path, h.enum_member_chain(11)))
    assert outer == {"__class__": "attacker.Chain", "__args__": [{"__class__": "attacker.Chain", "__args__": [7]}]}
    assert _code(read_plain_tree, _write(tmp_path, h.enum_member_chain(100_000))) == "convert-limit"


def test_members_sharing_one_value_are_looked_at_once(tmp_path: Path) -> None:
    """2000 members whose value is one tuple of 500 members: each object is classified once, the work charged to the budget."""
    members, width = 2000, 500
    got = read_pickled(_write(tmp_path, h.enum_members_sharing_a_value(members, width)))
    budget = Budget(DEFAULT_LIMITS, None)
    tree = to_plain_tree(got, budget=budget)
    assert tree == [tuple(range(width))] * members and all(t is tree[0] for t in tree)  # one conversion, shared
    assert 3 * (members + width) <= budget.work <= 20 * (members + width)  # not members x width


def test_deep_keys_and_set_items_are_refused_before_they_are_hashed(tmp_path: Path) -> None:
    assert _code(read_pickled, _write(tmp_path, h.deep_tuple_key(100_000))) == "convert-limit"
    assert _code(read_pickled, _write(tmp_path, h.deep_tuple_set_item(100_000))) == "convert-limit"
    assert read_pickled(_write(tmp_path, h.deep_tuple_key(40))) is not None  # shallow enough: an ordinary key
    unhashable = b"\x80\x02}]Ns."  # a list as a key
    assert _code(read_pickled, _write(tmp_path, unhashable)) == "convert-unreadable"


def test_a_nest_past_the_build_depth_is_refused_at_the_opcode_that_builds_it(tmp_path: Path) -> None:
    """A million-deep tuple (a key, a set item) or list fails at level 4 x 64 + 17, not after its other opcodes."""
    cases = {
        "key": (h.deep_tuple_key(1_000_000), "TUPLE1 at byte 276 "),  # PROTO, EMPTY_DICT, NONE, then one TUPLE1 a level
        "set-item": (h.deep_tuple_set_item(1_000_000), "TUPLE1 at byte 277 "),  # PROTO, EMPTY_SET, MARK, NONE
        "list": (b"\x80\x02" + b"]" * 1_000_000 + b"a" * 999_999 + b".", f"APPEND at byte {2 + 1_000_000 + 271} "),
        "zipped-key": (h.deep_tuple_key(1_000_000, zipped=True), "TUPLE1 at byte 276 "),
    }
    for name, (data, where) in cases.items():
        with pytest.raises(InputError) as info:
            read_pickled(_write(tmp_path, data, f"{name}.pt"))
        assert info.value.code == "convert-limit" and where in str(info.value), (name, str(info.value))
        assert "nested 273 levels deep, more than 272" in str(info.value)


class Node:
    """A record of a class the reader does not know: ``Node(child)``, one call a level."""

    def __init__(self, child: Any) -> None:
        self.child = child

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        return Node, (self.child,)


class Py2OrderedDict:
    """How protocols 0-2 wrote an OrderedDict under Python 2: ``OrderedDict([[key, value]])``, 4 pickle levels a level."""

    def __init__(self, child: Any) -> None:
        self.child = child

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        return collections.OrderedDict, ([["k", self.child]],)


def _one_level_down(tree: Any) -> Any:
    """The only value in a list, a record or set (``{"__class__": ..., "__args__": [v]}``) or the dict ``{"k": v}``."""
    if isinstance(tree, list):
        return tree[0]
    return tree["__args__"][0] if "__args__" in tree else tree["k"]


@pytest.mark.parametrize("wrap", [frozenset, Node, Py2OrderedDict, list], ids=["frozenset", "record", "py2-ordereddict", "list"])
def test_the_deepest_trees_still_convert_and_one_level_more_is_the_trees_limit(tmp_path: Path, wrap: Any) -> None:
    """62 levels of what pickles deepest over a parameter convert; 63 meet the tree's own limit, not the build depth."""
    for levels, ok in ((62, True), (63, False)):
        value: Any = torch.nn.Parameter(torch.ones(2))
        for _ in range(levels):
            value = wrap([value]) if wrap in (frozenset, list) else wrap(value)
        torch.save({"x": value}, tmp_path / "deep.pt", pickle_protocol=2)
        if ok:
            tree = read_plain_tree(tmp_path / "deep.pt")["x"]
            for _ in range(levels):
                tree = _one_level_down(tree)
            assert torch.equal(tree, torch.ones(2))
        else:
            with pytest.raises(InputError) as info:
                read_plain_tree(tmp_path / "deep.pt")
            assert info.value.code == "convert-limit" and "builds a value" not in str(info.value)


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


# --- the property: random valid checkpoints convert to what torch.load reads, within 2 x the file + 64 MiB ---------

_PROPERTY_CHILD = r"""
import json, resource, sys
import torch
from distillgan.pickled import read_plain_tree
path = sys.argv[1]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ours = read_plain_tree(path)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024
if sys.argv[2] == "pickle":  # pickle.dump of tensors: torch.load reads only torch.save's formats
    import pickle
    with open(path, "rb") as f:
        theirs = pickle.load(f)  # in this throwaway process only
else:
    theirs = torch.load(path, weights_only=False)  # in this throwaway process only

def plain(x):  # the documented conversions: OrderedDict -> dict, conj/neg resolved
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(plain(v) for v in x)
    if isinstance(x, torch.Tensor):
        return x.resolve_conj().resolve_neg()
    return x

def same(a, b, where):
    if type(a) is not type(b):
        raise AssertionError(f"{where}: {type(a).__name__} != {type(b).__name__}")
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and a.requires_grad == b.requires_grad, where
        bits = lambda t: t.contiguous().view(-1).view(torch.uint8) if t.numel() else t.contiguous().view(-1)
        assert torch.equal(bits(a), bits(b)), where
    else:
        assert a == b or (a != a and b != b), where

def tensors(x, out):
    if isinstance(x, dict):
        for v in x.values(): tensors(v, out)
    elif isinstance(x, (list, tuple)):
        for v in x: tensors(v, out)
    elif isinstance(x, torch.Tensor):
        out.append(x)
    return out

expected = plain(theirs)
same(ours, expected, "$")
a, b = tensors(ours, []), tensors(expected, [])
ties = lambda ts: [[s.untyped_storage().data_ptr() == t.untyped_storage().data_ptr() for t in ts] for s in ts]
assert ties(a) == ties(b), "ties differ"
print(json.dumps({"grown": grown}))
"""

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None

if given is not None:
    _DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.uint8, torch.bool, torch.complex64]

    @st.composite
    def _checkpoints(draw: Any) -> tuple[Any, str]:
        base = []
        for _ in range(draw(st.integers(1, 4))):
            dtype = draw(st.sampled_from(_DTYPES))
            n = draw(st.integers(0, 64))
            raw = draw(st.binary(min_size=n * dtype.itemsize, max_size=n * dtype.itemsize))
            t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype) if n else torch.empty(0, dtype=dtype)
            if dtype is torch.bool:
                t = t.view(torch.uint8) % 2 == 1
            base.append(t)
        shared_list = [1, "s", 2.5]
        state: dict[str, Any] = {}
        for i in range(draw(st.integers(1, 6))):
            t = draw(st.sampled_from(base))
            kind = draw(st.sampled_from(["same", "view", "conj", "config", "list"]))
            if kind == "view" and t.numel() > 2:
                t = t[1:]
            elif kind == "conj" and t.is_complex():
                t = t.conj()
            elif kind == "config":
                state[f"c{i}"] = {"lr": 0.1, "shared": shared_list, "tuple": (1, None, "x")}
                continue
            elif kind == "list":
                state[f"l{i}"] = [t, t, shared_list]
                continue
            state[f"t{i}"] = t
        writer = draw(st.sampled_from(["zip", "legacy", "pickle2", "pickle4"]))
        return state, writer

    @settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_checkpoints())
    def test_random_checkpoints_convert_to_what_torch_load_reads_within_the_memory_bound(case: tuple[Any, str]) -> None:
        import tempfile

        state, writer = case
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ck.pt"
            if writer == "zip":
                torch.save(state, path)
            elif writer == "legacy":
                torch.save(state, path, _use_new_zipfile_serialization=False)
            else:
                path.write_bytes(pickle.dumps(state, protocol=int(writer[-1])))
            how = "pickle" if writer.startswith("pickle") else "torch"
            proc = subprocess.run([sys.executable, "-c", _PROPERTY_CHILD, str(path), how], capture_output=True, text=True,
                                  timeout=600, check=False)  # fmt: skip
            assert proc.returncode == 0, proc.stderr[-3000:]
            grown = int(proc.stdout.strip().splitlines()[-1].split(":")[1].strip(" }"))
            assert grown <= 2 * path.stat().st_size + (64 << 20)
