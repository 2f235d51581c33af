"""Value trees (FORMAT.md §4.4): what round-trips exactly, what is converted by rule, what is refused with its path."""

from __future__ import annotations

import base64
import collections
import datetime
import decimal
import io
import json
import math
import pathlib
import struct
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import distillgan
from distillgan import InputError, ModelMetadata, open_archive, write_archive
from distillgan.values import json_view, tensor_name

META = {"model_id": "00000000-0000-4000-8000-00000000abcd", "save_date": "2026-01-01T00:00:00+00:00", "name": "values"}


def _manifest(**slots: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "latent_dim": None,
        "metadata": {**ModelMetadata(**META).__dict__},
        "state_dict": {},
        "spectrogram_config": {},
        "training_config": {},
        "analysis": None,
        "vocoder_state": None,
        "extra": None,
    }
    m.update(slots)
    return m


def round_trip(tmp_path: Any, **slots: Any) -> dict[str, Any]:
    """Write an archive with these value slots to a real file and read every slot back."""
    path = tmp_path / "values.distillgan"
    with open(path, "wb") as f:
        write_archive(f, _manifest(**slots))
    with open_archive(path) as archive:
        return archive.values()


def refused(**slots: Any) -> InputError:
    with pytest.raises(InputError) as e:
        write_archive(io.BytesIO(), _manifest(**slots))
    return e.value


# --- exact round trips --------------------------------------------------------------------------


def test_every_plain_kind_round_trips_exactly(tmp_path: Any, assert_same_tree: Callable[..., None]) -> None:
    nan = struct.unpack("<d", bytes.fromhex("0100000000f8ffff"))[0]
    value = {
        "none": None, "true": True, "false": False, "zero": 0, "i64_min": -(2**63), "u64_max": 2**64 - 1,
        "float": 0.1, "nan": nan, "inf": math.inf, "-inf": -math.inf, "-0": -0.0, "tiny": 5e-324,
        "text": "ünïcødé 😀", "empty": "", "bytes": b"\x00\xff", "no_bytes": b"",
        "list": [1, [2, [3]]], "tuple": (1, (2, ()), [()]), "empty_tuple": (), "empty_dict": {},
        "int_keys": {3: "c", -1: "a", 2**64 - 1: "max", "3": "the str 3"}, "dollar": {"$": "tuple", "items": [1]},
        "order": {"z": 1, "a": 2, 10: 3, 2: 4},
    }  # fmt: skip
    got = round_trip(tmp_path, training_config=value, extra=[value, (value,)])
    assert_same_tree(got["training_config"], value)
    assert_same_tree(got["extra"], [value, (value,)])


def test_tensors_parameters_and_arrays_anywhere(tmp_path: Any, assert_same_tree: Callable[..., None]) -> None:
    p = nn.Parameter(torch.randn(3))
    frozen = nn.Parameter(torch.randn(2), requires_grad=False)
    grad = torch.randn(2, requires_grad=True)
    arrays = {str(dt): np.arange(6).astype(dt).reshape(2, 3) for dt in
              (np.float16, np.float32, np.float64, np.complex64, np.int8, np.int16, np.int32, np.int64,
               np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)}  # fmt: skip
    tree = {
        "scalar": torch.tensor(7, dtype=torch.int64),
        "bf16": torch.randn(4, dtype=torch.bfloat16),
        "in_list": [torch.zeros(0), (np.array(2.5), {"deep": torch.ones(2, 2, dtype=torch.float16)})],
        "param": p, "frozen": frozen, "grad": grad, "arrays": arrays,
        "optimizer": {"state": {0: {"step": torch.tensor(1.0), "exp_avg": torch.randn(3)}}, "param_groups": [{"params": [0]}]},
    }  # fmt: skip
    got = round_trip(tmp_path, training_config=tree, extra={"again": tree["bf16"]}, vocoder_state={"v": tree})
    assert_same_tree(got["training_config"], tree)
    assert_same_tree(got["vocoder_state"], {"v": tree})
    assert got["training_config"]["bf16"] is got["extra"]["again"]  # tied across slots of one member
    assert got["training_config"]["param"].requires_grad and got["training_config"]["param"].is_leaf


def test_ties_stay_ties_and_kinds_stay_apart(tmp_path: Any) -> None:
    w = torch.randn(4)
    arr = np.arange(3.0)
    p = nn.Parameter(torch.randn(2))
    got = round_trip(tmp_path, training_config={"a": w, "b": [w, {"c": w}], "x": arr, "y": arr, "p": p, "p_data": p.data})
    tc = got["training_config"]
    assert tc["a"] is tc["b"][0] is tc["b"][1]["c"]
    assert tc["x"] is tc["y"] and type(tc["x"]) is np.ndarray
    assert type(tc["p"]) is nn.Parameter and type(tc["p_data"]) is torch.Tensor  # one view, two kinds: two objects
    assert torch.equal(tc["p"].detach(), tc["p_data"])


def test_state_dicts_use_one_placeholder_and_names_are_readable(tmp_path: Any) -> None:
    sd = {"encoder.conv.weight": torch.randn(2, 2), "0.bias": torch.randn(2)}
    path = tmp_path / "f.distillgan"
    with open(path, "wb") as f:
        write_archive(f, _manifest(state_dict=sd, training_config={"opt": {"state": {0: {"m": torch.ones(1)}}}, "a/b~c": torch.ones(1)}))
    info = distillgan.inspect(path)
    assert info["manifest"]["state_dict"] == {"$": "tensors", "prefix": "state_dict/", "keys": ["encoder.conv.weight", "0.bias"]}
    names = {t["name"] for t in info["tensors"]["model.safetensors"]}
    assert names == {"state_dict/encoder.conv.weight", "state_dict/0.bias", "training_config/opt/state/0/m", "training_config/a~1b~0c"}


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (("x", 0), "x/0"),
        (("x", "0"), "x/~20"),
        (("x", "-12"), "x/~2-12"),
        (("x", "007"), "x/007"),
        (("a/b", "c~d"), "a~1b/c~0d"),
        (("opt", "state", 12, "exp_avg"), "opt/state/12/exp_avg"),
        (("", "~2"), "/~02"),
    ],
)
def test_the_naming_rule(path: tuple[Any, ...], name: str) -> None:
    assert tensor_name(path) == name


def test_int_and_str_keys_of_the_same_number_get_different_names(tmp_path: Any) -> None:
    got = round_trip(tmp_path, training_config={"m": {0: torch.zeros(1), "0": torch.ones(1)}})["training_config"]["m"]
    assert torch.equal(got[0], torch.zeros(1)) and torch.equal(got["0"], torch.ones(1))


# --- documented conversions ---------------------------------------------------------------------


def test_documented_conversions(tmp_path: Any, assert_same_tree: Callable[..., None]) -> None:
    import enum

    class Color(enum.Enum):
        RED = "red"

    Point = collections.namedtuple("Point", "x y")

    class MyStr(str):
        pass

    given = {
        "enum": Color.RED,
        "np_f32": np.float32(0.1), "np_i64": np.int64(-5), "np_bool": np.bool_(True), "np_u8": np.uint8(200),
        "path": pathlib.PurePosixPath("/models/a.distillgan"),
        "bytearray": bytearray(b"ab"),
        "ordered": collections.OrderedDict([("b", 1), ("a", 2)]),
        "default": collections.defaultdict(list, {"k": [1]}),
        "namedtuple": Point(1, 2),
        "size": torch.Size([2, 3]),
        "mystr": MyStr("text"),
        "big_endian": np.arange(3, dtype=">i4"),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "strided": torch.arange(10.0)[::3],
    }  # fmt: skip
    expected = {
        "enum": "red",
        "np_f32": float(np.float32(0.1)), "np_i64": -5, "np_bool": True, "np_u8": 200,
        "path": "/models/a.distillgan",
        "bytearray": b"ab",
        "ordered": {"b": 1, "a": 2},
        "default": {"k": [1]},
        "namedtuple": (1, 2),
        "size": (2, 3),
        "mystr": "text",
        "big_endian": np.arange(3, dtype="<i4"),
        "fortran": np.arange(6.0).reshape(2, 3),
        "strided": torch.tensor([0.0, 3.0, 6.0, 9.0]),
    }  # fmt: skip
    assert_same_tree(round_trip(tmp_path, training_config=given)["training_config"], expected)


# --- refusals name the path ----------------------------------------------------------------------


class Opaque:
    def __str__(self) -> str:
        return "would have been stored as this string"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        pytest.param({1, 2}, "manifest-type", id="set"),
        pytest.param(frozenset(), "manifest-type", id="frozenset"),
        pytest.param(Opaque(), "manifest-type", id="custom-object"),
        pytest.param(lambda: 1, "manifest-type", id="lambda"),
        pytest.param(print, "manifest-type", id="builtin-function"),
        pytest.param(1 + 2j, "manifest-type", id="complex"),
        pytest.param(decimal.Decimal("1.5"), "manifest-type", id="decimal"),
        pytest.param(datetime.datetime(2026, 1, 1), "manifest-type", id="datetime"),
        pytest.param(np.datetime64("2026-01-01"), "manifest-type", id="numpy-datetime"),
        pytest.param(np.array([object()]), "unsupported-dtype", id="object-array"),
        pytest.param(np.zeros(2, dtype=np.complex128), "unsupported-dtype", id="complex128-array"),
        pytest.param(torch.zeros(2, device="meta"), "invalid-input", id="meta-tensor"),
        pytest.param(torch.zeros(2).to_sparse(), "invalid-input", id="sparse-tensor"),
        pytest.param(2**64, "manifest-value", id="int-over-64-bits"),
        pytest.param(-(2**63) - 1, "manifest-value", id="int-under-64-bits"),
        pytest.param(memoryview(b"x"), "manifest-type", id="memoryview"),
    ],
)
def test_unstorable_values_are_refused_with_their_path(value: Any, code: str) -> None:
    e = refused(training_config={"layers": [{"ok": 1}, {"bad": value}]})
    assert e.code == code
    assert "$.training_config.layers[1].bad" in str(e)
    assert "would have been stored" not in str(e)


@pytest.mark.parametrize(
    "key",
    [pytest.param((1, 2), id="tuple"), pytest.param(1.5, id="float"), pytest.param(True, id="bool"), pytest.param(None, id="none"),
     pytest.param(2**64, id="huge-int"), pytest.param(b"k", id="bytes")],
)
def test_unstorable_keys_are_refused_with_their_path(key: Any) -> None:
    e = refused(extra={"outer": {key: 1}})
    assert e.code in ("manifest-type", "manifest-value")
    assert "$.extra.outer" in str(e)


def test_lone_surrogates_are_refused_with_their_path() -> None:
    e = refused(training_config={"a": ["ok", "bad \ud800"]})
    assert e.code == "manifest-value" and "$.training_config.a[1]" in str(e)
    e = refused(training_config={"a": {"bad \udfff": 1}})
    assert e.code == "manifest-value" and "$.training_config.a" in str(e)


def test_keys_that_collide_after_conversion_are_refused() -> None:
    import enum

    class K(enum.Enum):
        A = "a"

    e = refused(training_config={K.A: 1, "a": 2})
    assert e.code == "manifest-type" and "$.training_config" in str(e)


def test_cycles_and_excessive_nesting_are_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert refused(extra=loop).code == "manifest-depth"
    deep: Any = 0
    for _ in range(70):
        deep = [deep]
    assert refused(extra=deep).code == "manifest-depth"
    ok: Any = 0
    for _ in range(63):  # extra is depth 1: the innermost value sits at depth 64, the limit
        ok = [ok]
    write_archive(io.BytesIO(), _manifest(extra=ok))


def test_tensor_subclasses_other_than_parameter_are_refused() -> None:
    class Marked(torch.Tensor):
        pass

    e = refused(extra={"t": torch.zeros(2).as_subclass(Marked)})
    assert e.code == "manifest-type" and "$.extra.t" in str(e)


def test_overlong_tensor_names_are_refused_with_the_path() -> None:
    e = refused(training_config={"k" * 1100: torch.ones(1)})
    assert e.code == "st-name" and "$.training_config" in str(e)


def test_control_characters_in_keys_are_escaped_in_tensor_names(tmp_path: Any, assert_same_tree: Callable[..., None]) -> None:
    tree = {"line\nbreak": torch.ones(1), "tab\t": {"\x1b[31m": torch.zeros(2)}}
    path = tmp_path / "c.distillgan"
    with open(path, "wb") as f:
        write_archive(f, _manifest(training_config=tree, state_dict={"a\x00b": torch.ones(3)}))
    names = {t["name"] for t in distillgan.inspect(path)["tensors"]["model.safetensors"]}
    assert names == {"training_config/line~u000abreak", "training_config/tab~u0009/~u001b[31m", "state_dict/a~u0000b"}
    with open_archive(path) as archive:
        got = archive.values()
    assert_same_tree(got["training_config"], tree)
    assert_same_tree(got["state_dict"], {"a\x00b": torch.ones(3)})


# --- the JSON projection (FORMAT.md §4.6) -----------------------------------------------------


def _from_json(value: Any) -> Any:
    """Inverse of the projection, written independently, giving decoded msgpack data."""
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        tag = value.get("$")
        if tag == "float" and set(value) == {"$", "value", "bits"}:
            return struct.unpack(">d", bytes.fromhex(value["bits"]))[0]
        if tag == "bytes" and set(value) == {"$", "base64"}:
            return base64.b64decode(value["base64"])
        if tag == "map" and set(value) == {"$", "items"} and any(not isinstance(k, str) for k, _ in value["items"]):
            return {k: _from_json(v) for k, v in value["items"]}
        return {k: _from_json(v) for k, v in value.items()}
    return value


def test_json_projection_is_loss_free(tmp_path: Any) -> None:
    nan = struct.unpack(">d", bytes.fromhex("7ff4000000000001"))[0]  # a signalling-NaN bit pattern
    path = tmp_path / "j.distillgan"
    with open(path, "wb") as f:
        write_archive(f, _manifest(training_config={"n": nan, "i": -math.inf, "b": b"\x00\x01", "k": {1: {2: 3}}, "z": -0.0}))
    with open_archive(path) as archive:
        raw = archive.manifest
    text = json.dumps(json_view(raw), allow_nan=False)
    back = _from_json(json.loads(text))
    assert msgpack.packb(back, use_bin_type=True) == msgpack.packb(raw, use_bin_type=True)
    assert json.loads(text)["training_config"]["n"] == {"$": "float", "value": "nan", "bits": "7ff4000000000001"}


# --- properties ----------------------------------------------------------------------------------

_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int8, torch.uint8, torch.bool, torch.complex64]
_NP_DTYPES = [np.float32, np.float64, np.int16, np.uint32, np.bool_]


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    dtype = draw(st.sampled_from(_DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
    n = math.prod(shape)
    size = torch.empty((), dtype=dtype).element_size()
    raw = draw(st.binary(min_size=n * size, max_size=n * size))
    t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype) if raw else torch.empty(0, dtype=dtype)
    if dtype == torch.bool:
        t = t.view(torch.uint8) & 1
        t = t.to(torch.bool)
    t = t.reshape(shape)
    return nn.Parameter(t, requires_grad=dtype.is_floating_point and draw(st.booleans())) if draw(st.integers(0, 5)) == 0 else t


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(_NP_DTYPES)))
    n = draw(st.integers(0, 4))
    if dtype == np.bool_:
        return np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=np.bool_)
    return np.frombuffer(draw(st.binary(min_size=n * dtype.itemsize, max_size=n * dtype.itemsize)), dtype=dtype).copy()


floats = st.floats() | st.binary(min_size=8, max_size=8).map(lambda b: struct.unpack("<d", b)[0])
keys = st.text(max_size=6) | st.integers(-(2**63), 2**64 - 1) | st.sampled_from(["$", "~", "/", "0", "-1", "~1"])
leaves = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | floats | st.text(max_size=8) | st.binary(max_size=6)
    | tensors() | arrays()
)
trees = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.lists(inner, max_size=3).map(tuple) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
HYPOTHESIS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@HYPOTHESIS
@given(tree=trees, voc=trees)
def test_random_trees_round_trip_exactly(tmp_path: Any, tree: Any, voc: Any, assert_same_tree: Callable[..., None]) -> None:
    got = round_trip(tmp_path, training_config={"t": tree}, extra=tree, vocoder_state={"v": voc})
    assert_same_tree(got["training_config"], {"t": tree})
    assert_same_tree(got["extra"], tree)
    assert_same_tree(got["vocoder_state"], {"v": voc})


unstorable = st.sampled_from([{1}, Opaque(), 1j, decimal.Decimal(1), datetime.date(2026, 1, 1), object(), 2**64, -(2**63) - 1])
segments = st.lists(st.sampled_from(["a", "b", "cfg", "layer"]) | st.integers(0, 2), min_size=1, max_size=5)


@HYPOTHESIS
@given(path=segments, bad=unstorable, filler=trees)
def test_every_unstorable_value_is_refused_with_its_path(path: list[Any], bad: Any, filler: Any) -> None:
    """Wherever an unstorable value sits — under dicts or lists — the error names exactly that place."""
    tree: Any = bad
    rendered = ""
    for seg in reversed(path):
        if isinstance(seg, int):  # an index into a list with filler before it
            tree = [filler] * seg + [tree]
        else:
            tree = {"pad": filler, seg: tree}
    for seg in path:
        rendered += f"[{seg}]" if isinstance(seg, int) else f".{seg}"
    e = refused(extra=tree)
    assert e.code in ("manifest-type", "manifest-value")
    assert f"$.extra{rendered}:" in str(e)


def test_metadata_takes_numpy_and_torch_scalars_and_tuples(tmp_path: Any) -> None:
    """The app fills metadata from tensors and numpy reductions: they are numbers, stored as such."""
    from distillgan import load_model, save_model

    meta = {"name": "scalars", "final_train_loss": np.float32(0.25), "final_val_loss": torch.tensor(float("nan")),
            "training_epochs": torch.tensor(12), "dataset_file_count": np.int64(3), "tags": ("a", np.str_("b")),
            "dataset_total_duration_s": np.float64(1.5)}  # fmt: skip
    got = load_model(save_model({"w": torch.ones(1)}, {}, {}, meta, tmp_path)).metadata
    assert (got.final_train_loss, got.training_epochs, got.dataset_file_count, got.tags) == (0.25, 12, 3, ["a", "b"])
    assert math.isnan(got.final_val_loss) and type(got.training_epochs) is int and got.dataset_total_duration_s == 1.5
    assert meta["model_id"]  # a mapping is filled in place too
