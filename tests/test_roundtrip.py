"""save_model then load_model: every tensor, dtype, layout and value comes back exactly."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import distillgan
from distillgan import InputError, LoadedModel, ModelMetadata, inspect, load_model, open_archive, save_model

ALL_DTYPES = [
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.float8_e4m3fnuz,
    torch.float8_e5m2fnuz,
    torch.complex64,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint64,
    torch.uint32,
    torch.uint16,
    torch.uint8,
    torch.bool,
]
FLOAT_SPECIALS = [float("nan"), float("inf"), float("-inf"), -0.0, 0.0]


def _random_tensor(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Random values of ``dtype``; floats get random bit patterns (NaNs, infinities, subnormals) plus specials."""
    g = torch.Generator().manual_seed(seed)
    n = 1
    for d in shape:
        n *= d
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).to(torch.bool)
    size = torch.empty((), dtype=dtype).element_size()
    raw = torch.randint(0, 256, (n * size,), dtype=torch.uint8, generator=g)
    if size == 1 and dtype.is_floating_point and n >= 4:
        raw[:4] = torch.tensor([0x7F, 0xFF, 0x80, 0x7C], dtype=torch.uint8)  # NaN/inf/-0.0 patterns of the float8 kinds
    t = raw.view(dtype).reshape(shape)
    flat = t.view(-1)
    if dtype.is_floating_point and size >= 2 and n >= len(FLOAT_SPECIALS):
        flat[: len(FLOAT_SPECIALS)] = torch.tensor(FLOAT_SPECIALS, dtype=torch.float32).to(dtype)
    if dtype.is_complex and n >= 2:
        flat[0] = complex(float("nan"), float("-inf"))
        flat[1] = complex(-0.0, float("inf"))
    return t


def _member_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as z:
        return z.namelist()


# --- model, vocoder, metadata -------------------------------------------------------------


def test_module_round_trip_without_vocoder(
    save: Callable[..., Path],
    generator: nn.Module,
    spectrogram_config: dict[str, Any],
    training_config: dict[str, Any],
    assert_same_tensor: Callable[..., None],
) -> None:
    path = save(
        description="a test",
        dataset_name="drums",
        dataset_file_count=12,
        dataset_total_duration_s=31.5,
        training_date="2026-01-02T03:04:05+00:00",
        training_epochs=40,
        final_train_loss=0.25,
        final_val_loss=None,
        tags=["a", "b"],
    )
    loaded = load_model(path)
    assert isinstance(loaded, LoadedModel)
    expected = generator.state_dict()
    assert set(loaded.state_dict) == set(expected)
    for name, t in expected.items():
        assert_same_tensor(loaded.state_dict[name], t)
    assert loaded.state_dict["up.1.num_batches_tracked"].item() == 123
    assert loaded.vocoder_state is None
    assert loaded.analysis is None
    assert loaded.latent_dim == 8
    assert loaded.spectrogram_config == spectrogram_config
    assert loaded.training_config == training_config
    meta = loaded.metadata
    assert isinstance(meta, ModelMetadata)
    assert (meta.name, meta.description, meta.dataset_name) == ("Test Model", "a test", "drums")
    assert (meta.dataset_file_count, meta.dataset_total_duration_s, meta.training_epochs) == (12, 31.5, 40)
    assert (meta.final_train_loss, meta.final_val_loss, meta.tags) == (0.25, None, ["a", "b"])
    assert meta.training_date == "2026-01-02T03:04:05+00:00"
    assert meta.model_id and meta.save_date  # filled in by save_model
    assert meta.has_analysis is False
    # no vocoder: vocoder_state is nil, no member
    assert inspect(path)["manifest"]["vocoder_state"] is None
    assert _member_names(path) == ["manifest.msgpack", "model.safetensors"]


def test_round_trip_with_vocoder(
    save: Callable[..., Path], vocoder_state: dict[str, Any], assert_same_tree: Callable[..., None]
) -> None:
    path = save(vocoder_state=vocoder_state)
    loaded = load_model(path)
    assert_same_tree(loaded.vocoder_state, vocoder_state)  # stored raw: every key, as given
    assert _member_names(path) == ["manifest.msgpack", "model.safetensors", "vocoder.safetensors"]
    info = inspect(path)
    voc = info["manifest"]["vocoder_state"]
    assert voc["type"] == "hifigan_v2" and voc["training_metadata"] == vocoder_state["training_metadata"]
    # every vocoder tensor is in vocoder.safetensors, none in the model's member
    vocoder_names = {t["name"] for t in info["tensors"]["vocoder.safetensors"]}
    assert vocoder_names == {f"vocoder_state/state_dict/{k}" for k in vocoder_state["state_dict"]}
    assert all(t["name"].startswith("state_dict/") for t in info["tensors"]["model.safetensors"])


def test_vocoder_state_is_stored_raw_whatever_its_keys(save: Callable[..., Path], assert_same_tree: Callable[..., None]) -> None:
    """No key whitelist: the app's trainer passes generator_state_dict, a checkpoint, and no state_dict at all."""
    lin = nn.Linear(3, 2)
    voc = {"generator_state_dict": lin.state_dict(), "anything": {"nested": [lin.weight.detach().clone(), (1, None)]}, 7: b"x"}
    loaded = load_model(save(vocoder_state=voc))
    assert_same_tree(loaded.vocoder_state, {"generator_state_dict": dict(lin.state_dict()), **{k: v for k, v in voc.items() if k != "generator_state_dict"}})


def test_metadata_filled_in_place_and_stored(generator: nn.Module, models_dir: Path) -> None:
    meta = ModelMetadata(name="In Place")
    path = save_model(generator, {}, {}, meta, models_dir, analysis={"n_active_components": 4, "x": np.ones(2)})
    assert meta.model_id and meta.save_date and meta.has_analysis and meta.n_active_components == 4
    assert load_model(path).metadata == meta


# --- every dtype ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_every_shared_dtype_round_trips_bitwise(
    dtype: torch.dtype, save: Callable[..., Path], assert_same_tensor: Callable[..., None]
) -> None:
    state = {
        "matrix": _random_tensor(dtype, (5, 7), 1),
        "vector": _random_tensor(dtype, (13,), 2),
        "scalar": _random_tensor(dtype, (), 3),
        "empty": torch.empty((4, 0), dtype=dtype),
    }
    loaded = load_model(save(state))
    assert set(loaded.state_dict) == set(state)
    for name, t in state.items():
        assert_same_tensor(loaded.state_dict[name], t)


def test_all_dtypes_in_one_file(save: Callable[..., Path], assert_same_tensor: Callable[..., None]) -> None:
    """Mixed element sizes in one member: each tensor keeps its bytes and its alignment."""
    state = {f"t.{str(d).removeprefix('torch.')}": _random_tensor(d, (3, 3), i) for i, d in enumerate(ALL_DTYPES)}
    path = save(state)
    loaded = load_model(path)
    for name, t in state.items():
        assert_same_tensor(loaded.state_dict[name], t)
        assert loaded.state_dict[name].data_ptr() % t.element_size() == 0


def test_unsupported_dtype_is_refused_before_writing(save: Callable[..., Path], models_dir: Path) -> None:
    with pytest.raises(InputError) as e:
        save({"w": torch.ones(2, dtype=torch.complex128)})
    assert e.value.code == "unsupported-dtype"
    assert not list(models_dir.glob("*.distillgan"))


# --- tensor layouts -----------------------------------------------------------------------


def test_tied_weights_are_stored_once_and_stay_tied(save: Callable[..., Path]) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(32, 32, bias=False)
            self.head = nn.Linear(32, 32, bias=False)
            self.head.weight = self.embed.weight

    torch.manual_seed(5)
    model = Tied()
    weight_bytes = model.embed.weight.detach().numpy().tobytes()
    path = save(model)
    loaded = load_model(path)
    a, b = loaded.state_dict["embed.weight"], loaded.state_dict["head.weight"]
    assert a is b
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    assert torch.equal(a, model.embed.weight.detach())
    info = inspect(path)
    assert [t["name"] for t in info["tensors"]["model.safetensors"]] == ["state_dict/embed.weight"]
    assert info["manifest"]["members"]["model.safetensors"]["aliases"] == {"state_dict/head.weight": "state_dict/embed.weight"}
    assert path.read_bytes().count(weight_bytes) == 1


def test_tied_weights_restored_into_a_module(save: Callable[..., Path]) -> None:
    lin = nn.Linear(4, 4)
    path = save({"a.weight": lin.weight, "b.weight": lin.weight, "a.bias": lin.bias})

    def build(loaded: LoadedModel) -> nn.Module:
        m = nn.Module()
        m.a = nn.Linear(4, 4)
        m.b = nn.Linear(4, 4, bias=False)
        m.b.weight = m.a.weight
        return m

    model = load_model(path, model_builder=build).model
    assert torch.equal(model.b.weight, lin.weight.detach())
    assert model.a.weight is model.b.weight


def test_non_contiguous_and_overlapping_views(save: Callable[..., Path], assert_same_tensor: Callable[..., None]) -> None:
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    state = {
        "base": base,
        "transposed": base.t(),
        "step": base[::2, 1::3],
        "row": base[3],
        "column": base[:, 4],
        "prefix": base[:2],  # overlaps "base" partially: stored apart
        "expanded": torch.arange(3.0).expand(4, 3),  # stride 0
        "flipped": base.flip(0),
        "channels_last": torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last),
    }
    loaded = load_model(save(state))
    for name, t in state.items():
        got = loaded.state_dict[name]
        assert_same_tensor(got, t)
        assert got.is_contiguous()


@pytest.mark.parametrize(
    "make_pair",
    [
        pytest.param(lambda c: (c, c.conj()), id="conj-view"),
        pytest.param(lambda c: (c.imag, c.conj().imag), id="negative-view"),
    ],
)
def test_views_with_conj_or_neg_bit_are_not_aliases(
    make_pair: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    save: Callable[..., Path],
    assert_same_tensor: Callable[..., None],
) -> None:
    """x and x.conj() (or x.imag and x.conj().imag) share address, shape and strides but differ in value."""
    c = torch.complex(torch.randn(6), torch.randn(6))
    first, second = make_pair(c)
    assert first.data_ptr() == second.data_ptr() and not torch.equal(
        first.resolve_conj().resolve_neg(), second.resolve_conj().resolve_neg()
    )
    loaded = load_model(save({"first": first, "second": second}))
    assert_same_tensor(loaded.state_dict["first"], first.resolve_conj().resolve_neg())
    assert_same_tensor(loaded.state_dict["second"], second.resolve_conj().resolve_neg())


def test_zero_size_and_rank_zero_tensors(save: Callable[..., Path], assert_same_tensor: Callable[..., None]) -> None:
    state = {
        "empty": torch.empty(0),
        "empty2d": torch.empty((3, 0), dtype=torch.int16),
        "empty_first": torch.empty((0, 5), dtype=torch.float64),
        "scalar": torch.tensor(3.5),
        "scalar_bool": torch.tensor(True),
        "scalar_int": torch.tensor(-7, dtype=torch.int64),
    }
    path = save(state)
    loaded = load_model(path)
    for name, t in state.items():
        assert_same_tensor(loaded.state_dict[name], t)
    shapes = {t["name"].removeprefix("state_dict/"): t["shape"] for t in inspect(path)["tensors"]["model.safetensors"]}
    assert shapes["empty2d"] == [3, 0] and shapes["scalar"] == [] and shapes["empty"] == [0]


def test_parameters_with_requires_grad(save: Callable[..., Path], assert_same_tree: Callable[..., None]) -> None:
    """A Parameter comes back a Parameter, and requires_grad is kept (it is part of the value, not autograd history)."""
    w = nn.Parameter(torch.randn(4, 3))
    frozen = nn.Parameter(torch.randn(2), requires_grad=False)
    x = torch.randn(5, requires_grad=True)
    state = {"w": w, "frozen": frozen, "x": x, "plain": torch.randn(2)}
    loaded = load_model(save(state))
    assert_same_tree(loaded.state_dict, state)
    assert type(loaded.state_dict["w"]) is nn.Parameter and loaded.state_dict["w"].requires_grad
    assert type(loaded.state_dict["frozen"]) is nn.Parameter and not loaded.state_dict["frozen"].requires_grad
    assert loaded.state_dict["x"].requires_grad and loaded.state_dict["x"].is_leaf


def test_bool_tensor_with_non_canonical_bytes_is_refused_or_normalised(save: Callable[..., Path], models_dir: Path) -> None:
    """A bool view of bytes other than 0/1: the writer must not produce a file its own reader refuses."""
    raw = torch.tensor([0, 1, 2, 255], dtype=torch.uint8)
    try:
        path = save({"mask": raw.view(torch.bool)})
    except InputError:
        assert not list(models_dir.glob("*.distillgan"))
        return
    assert torch.equal(load_model(path).state_dict["mask"], raw != 0)
    distillgan.verify(path)


def _published(models_dir: Path) -> list[str]:
    return sorted(p.name for p in models_dir.iterdir() if p.name.endswith((".distillgan", ".tmp", ".distillgan-tmp"))) if models_dir.exists() else []


def test_rank_32_is_stored(save: Callable[..., Path]) -> None:
    shape = [1] * 31 + [2]
    assert load_model(save({"w": torch.ones(shape)})).state_dict["w"].shape == torch.Size(shape)


@pytest.mark.parametrize("where", ["model", "analysis"])
def test_rank_over_the_limit_is_refused_before_writing(where: str, save: Callable[..., Path], models_dir: Path) -> None:
    """FORMAT.md §8 allows rank 32: a deeper tensor must be an InputError, not a published file the reader refuses."""
    deep = torch.ones([1] * 33)
    with pytest.raises(InputError):
        if where == "model":
            save({"w": deep})
        else:
            save({"w": torch.ones(1)}, analysis={"deep": deep.numpy()})
    assert _published(models_dir) == []


def test_header_over_the_limit_is_refused_before_writing(
    save: Callable[..., Path], models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A safetensors header over FORMAT.md §8's limit must not be published (the 100 MB limit scaled down to 4 MiB:
    4500 names of 1000 bytes)."""
    import distillgan.archive

    monkeypatch.setattr(distillgan.archive, "MAX_HEADER_BYTES", 4 << 20)
    state = {f"{i:05d}" + "n" * 995: torch.empty(0) for i in range(4500)}
    with pytest.raises(InputError):
        save(state)
    assert _published(models_dir) == []


# --- what the model argument can be --------------------------------------------------------


def test_module_latent_dim_is_recorded(save: Callable[..., Path], make_generator: Callable[..., nn.Module]) -> None:
    path = save(make_generator(latent_dim=5))
    assert load_model(path).latent_dim == 5
    assert inspect(path)["manifest"]["latent_dim"] == 5


def test_mapping_state_dict(save: Callable[..., Path], generator: nn.Module, assert_same_tensor: Callable[..., None]) -> None:
    state = OrderedDict((k, v.clone()) for k, v in generator.state_dict().items())
    loaded = load_model(save(state))
    assert loaded.latent_dim is None  # only a module carries latent_dim
    assert set(loaded.state_dict) == set(state)
    for name, t in state.items():
        assert_same_tensor(loaded.state_dict[name], t)


def test_model_builder_gives_an_eval_module_with_the_weights(
    save: Callable[..., Path], generator: nn.Module, make_generator: Callable[..., nn.Module]
) -> None:
    path = save()
    seen: list[LoadedModel] = []

    def build(loaded: LoadedModel) -> nn.Module:
        seen.append(loaded)
        return make_generator(latent_dim=loaded.latent_dim, seed=99)  # different initial weights

    loaded = load_model(path, model_builder=build)
    model = loaded.model
    assert seen == [loaded]
    assert isinstance(model, nn.Module)
    assert not model.training and not any(m.training for m in model.modules())
    for name, t in generator.state_dict().items():
        assert torch.equal(model.state_dict()[name], t), name
    z = torch.randn(2, 8)
    generator.eval()
    with torch.no_grad():
        assert torch.equal(model(z), generator(z))


def test_model_builder_strict_mismatch_raises(save: Callable[..., Path]) -> None:
    path = save({"only.weight": torch.ones(2)})
    with pytest.raises(InputError, match="Missing key") as exc:  # a DistillganError, torch's message kept
        load_model(path, model_builder=lambda loaded: nn.Linear(2, 2))
    assert exc.value.code == "invalid-input" and isinstance(exc.value.__cause__, RuntimeError)


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")], ids=["str", "torch.device"])
def test_load_on_cpu(device: Any, save: Callable[..., Path], vocoder_state: dict[str, Any]) -> None:
    loaded = load_model(save(vocoder_state=vocoder_state, analysis={"t": torch.ones(3)}), device=device)
    assert loaded.device == torch.device("cpu")
    tensors = [*loaded.state_dict.values(), *loaded.vocoder_state["state_dict"].values(), loaded.analysis["t"]]
    assert all(t.device.type == "cpu" for t in tensors)


def test_bad_device_is_an_input_error(saved_model: Path) -> None:
    with pytest.raises(InputError) as e:
        load_model(saved_model, device="no-such-device")
    assert e.value.code == "invalid-input"


def test_load_with_verify(saved_model: Path) -> None:
    assert load_model(saved_model, verify=True).state_dict


# --- copy-on-write ------------------------------------------------------------------------


def test_modifying_loaded_tensors_never_changes_the_file(saved_model: Path) -> None:
    digest = hashlib.sha256(saved_model.read_bytes()).hexdigest()
    first = load_model(saved_model)
    originals = {k: v.clone() for k, v in first.state_dict.items()}
    voc_original = {k: v.clone() for k, v in first.vocoder_state["state_dict"].items()}
    pca_original = first.analysis["pca_components"].copy()
    for t in first.state_dict.values():
        if t.dtype.is_floating_point:
            t.add_(1.0)
        else:
            t.fill_(7)
    for t in first.vocoder_state["state_dict"].values():
        t.zero_()
    first.analysis["pca_components"][...] = 42.0
    assert not torch.equal(first.state_dict["fc.weight"], originals["fc.weight"])

    assert hashlib.sha256(saved_model.read_bytes()).hexdigest() == digest
    assert distillgan.file_sha256(saved_model) == digest
    again = load_model(saved_model)
    for k, v in originals.items():
        assert torch.equal(again.state_dict[k], v), k
    for k, v in voc_original.items():
        assert torch.equal(again.vocoder_state["state_dict"][k], v), k
    np.testing.assert_array_equal(again.analysis["pca_components"], pca_original)
    distillgan.verify(saved_model)


def test_loaded_tensors_outlive_the_file_handle(saved_model: Path) -> None:
    """Tensors view the mapping; they stay valid after load_model returns and after other loads."""
    state = load_model(saved_model).state_dict
    expected = {k: v.clone() for k, v in state.items()}
    for _ in range(3):
        load_model(saved_model)
    for k, v in expected.items():
        assert torch.equal(state[k], v)


def test_tensors_from_open_archive_match_load_model(saved_model: Path) -> None:
    loaded = load_model(saved_model)
    with open_archive(saved_model) as archive:
        tensors = archive.tensors("model.safetensors")
    for name, t in loaded.state_dict.items():
        assert torch.equal(tensors[f"state_dict/{name}"], t)
    assert set(tensors) == {f"state_dict/{n}" for n in loaded.state_dict} | {n for n in tensors if n.startswith("analysis/")}


def _run_isolated(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter with warnings as errors.

    torch emits some warnings only once per process, so a check for "no
    warning" is only reliable in a process of its own; a crash is contained too.
    """
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", script, *args], check=False, capture_output=True, text=True, timeout=120
    )


def test_tensors_of_a_default_open_archive_are_safe_to_write(saved_model: Path) -> None:
    """open_archive() maps the file read-only by default: tensors it hands out must not crash or warn when written."""
    digest = hashlib.sha256(saved_model.read_bytes()).hexdigest()
    script = (
        "import sys, torch, distillgan\n"
        "with distillgan.open_archive(sys.argv[1]) as archive:\n"
        "    try:\n"
        "        tensors = archive.tensors('model.safetensors')\n"
        "    except distillgan.DistillganError as e:\n"
        "        print('refused', e.code); sys.exit(0)\n"
        "for t in tensors.values():\n"
        "    if t.dtype.is_floating_point:\n"
        "        t.add_(1.0)\n"
        "print('written')\n"
    )
    r = _run_isolated(script, str(saved_model))
    assert r.returncode == 0, f"exit status {r.returncode}; stderr: {r.stderr[-800:]}"
    assert r.stdout.split()[0] in ("written", "refused")
    assert hashlib.sha256(saved_model.read_bytes()).hexdigest() == digest


# --- analysis -----------------------------------------------------------------------------


def test_analysis_with_numpy_arrays_and_tensors(save: Callable[..., Path]) -> None:
    analysis = {
        "n_active_components": 2,
        "pca_components": np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32),
        "pca_mean": np.linspace(0, 1, 8),  # float64
        "counts": np.array([[1, 2, 3]], dtype=np.int16),
        "mask": np.array([True, False]),
        "half": np.ones(3, dtype=np.float16),
        "scalar_array": np.array(2.5),
        "transposed": np.arange(12.0).reshape(3, 4).T,
        "with_nan": np.array([np.nan, np.inf, -np.inf, -0.0]),
        "latent_tensor": torch.randn(3, 2, dtype=torch.bfloat16),
        "int_tensor": torch.arange(4, dtype=torch.int32),
        "nested": {"deep": [np.arange(3, dtype=np.uint8), {"t": torch.ones(1)}], "label": "x"},
        "labels": ["a", "b"],
        "threshold": 0.5,
        "missing": None,
    }
    path = save(analysis=analysis)
    loaded = load_model(path)
    got = loaded.analysis
    assert set(got) == set(analysis)
    for key in ("pca_components", "pca_mean", "counts", "mask", "half", "scalar_array", "transposed"):
        assert type(got[key]) is np.ndarray, key
        assert got[key].dtype == analysis[key].dtype and got[key].shape == analysis[key].shape, key
        np.testing.assert_array_equal(got[key], analysis[key])
    assert got["with_nan"].tobytes() == analysis["with_nan"].tobytes()  # NaN, inf and -0.0 bit for bit
    for key in ("latent_tensor", "int_tensor"):
        assert type(got[key]) is torch.Tensor
        assert got[key].dtype == analysis[key].dtype and torch.equal(got[key], analysis[key])
    assert type(got["nested"]["deep"][0]) is np.ndarray and got["nested"]["deep"][0].dtype == np.uint8
    np.testing.assert_array_equal(got["nested"]["deep"][0], [0, 1, 2])
    assert type(got["nested"]["deep"][1]["t"]) is torch.Tensor
    assert got["nested"]["label"] == "x"
    assert (got["labels"], got["threshold"], got["missing"]) == (["a", "b"], 0.5, None)
    # analysis arrays are not model weights
    assert all(not k.startswith("__analysis__") for k in loaded.state_dict)
    assert loaded.metadata.has_analysis and loaded.metadata.n_active_components == 2


def test_analysis_as_dataclass(save: Callable[..., Path]) -> None:
    @dataclasses.dataclass
    class Analysis:
        n_active_components: int
        components: np.ndarray

    path = save(analysis=Analysis(1, np.eye(2, dtype=np.float32)))
    got = load_model(path).analysis
    assert got["n_active_components"] == 1
    np.testing.assert_array_equal(got["components"], np.eye(2, dtype=np.float32))


@pytest.mark.parametrize(
    "analysis",
    [
        pytest.param(lambda a, m: {"mean": a, "center": a}, id="same-array-twice"),
        pytest.param(lambda a, m: {"weight": m["0.weight"]}, id="array-shared-with-a-weight"),
    ],
)
def test_analysis_sharing_an_array(
    analysis: Callable[[np.ndarray, dict[str, torch.Tensor]], dict[str, Any]], save: Callable[..., Path], models_dir: Path
) -> None:
    """The same array referenced twice (or also a model weight) is ordinary data and must round-trip."""
    model = nn.Sequential(nn.Linear(3, 3))  # state dict names start with a digit: "0.weight"
    arr = np.arange(6.0)
    value = analysis(arr, model.state_dict())
    path = save(model, analysis=value)
    got = load_model(path).analysis
    for key, v in value.items():
        expected = v if isinstance(v, np.ndarray) else v.detach()
        assert (got[key] == expected).all(), key
    assert len(list(models_dir.glob("*.distillgan"))) == 1


def test_analysis_with_a_reversed_numpy_array(save: Callable[..., Path]) -> None:
    """np.flip gives negative strides; it is a valid array and must be stored, not crash."""
    arr = np.flip(np.arange(5.0))
    got = load_model(save(analysis={"reversed": arr})).analysis["reversed"]
    np.testing.assert_array_equal(got, [4.0, 3.0, 2.0, 1.0, 0.0])


def test_analysis_with_a_read_only_numpy_array(tmp_path: Path) -> None:
    """A read-only array (np.frombuffer of bytes) is stored exactly and without a warning."""
    script = (
        "import sys, numpy as np, torch, distillgan\n"
        "arr = np.frombuffer(np.arange(4, dtype=np.float32).tobytes(), dtype=np.float32)\n"
        "assert not arr.flags.writeable\n"
        "p = distillgan.save_model({'w': torch.ones(1)}, {}, {}, distillgan.ModelMetadata(), sys.argv[1], analysis={'frozen': arr})\n"
        "got = distillgan.load_model(p).analysis['frozen']\n"
        "assert got.dtype == np.float32 and got.tolist() == [0.0, 1.0, 2.0, 3.0], got\n"
        "print('ok')\n"
    )
    r = _run_isolated(script, str(tmp_path / "models"))
    assert r.returncode == 0, r.stderr[-800:]
    assert r.stdout.strip() == "ok"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), -0.0], ids=["nan", "inf", "-inf", "-0"])
@pytest.mark.parametrize("where", ["analysis", "spectrogram_config", "training_config", "nested-list"])
def test_non_finite_floats_round_trip_exactly(
    bad: float, where: str, save: Callable[..., Path], assert_same_tree: Callable[..., None]
) -> None:
    """NaN losses and NaN correlations are what the app produces: stored bit for bit, never refused."""
    kwargs: dict[str, Any] = {}
    if where == "analysis":
        kwargs["analysis"] = {"threshold": bad, "ok": np.array([bad])}
    elif where == "nested-list":
        kwargs["analysis"] = {"thresholds": [[0.0, {"x": bad}]]}
    else:
        kwargs[where] = {"f_min": bad}
    loaded = load_model(save(**kwargs))
    for key, value in kwargs.items():
        assert_same_tree(getattr(loaded, key), value)


def test_nan_payload_and_sign_survive(save: Callable[..., Path]) -> None:
    nan = struct.unpack("<d", bytes.fromhex("0100000000f8ffff"))[0]  # negative, with a payload
    got = load_model(save(training_config={"nan": nan})).training_config["nan"]
    assert struct.pack("<d", got).hex() == "0100000000f8ffff"


@pytest.mark.parametrize("loss", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_losses_in_metadata_round_trip(loss: float, save: Callable[..., Path], models_dir: Path) -> None:
    path = save(final_val_loss=loss, final_train_loss=loss)
    meta = load_model(path).metadata
    assert struct.pack("<d", meta.final_val_loss) == struct.pack("<d", loss)
    entry = distillgan.ModelLibrary(models_dir).list_all()[0]
    assert struct.pack("<d", entry.final_train_loss) == struct.pack("<d", loss)


def test_other_non_finite_metadata_is_refused(save: Callable[..., Path]) -> None:
    with pytest.raises(InputError) as e:
        save(dataset_total_duration_s=float("inf"))
    assert e.value.code == "manifest-value" and "dataset_total_duration_s" in str(e.value)


# --- determinism ----------------------------------------------------------------------------


def _fixed_meta(**kw: Any) -> ModelMetadata:
    return ModelMetadata(
        model_id="7f1d5a1c-0000-4000-8000-000000000001", save_date="2026-03-01T12:00:00+00:00", name="Fixed", **kw
    )


def test_same_inputs_give_byte_identical_files(
    tmp_path: Path, make_generator: Callable[..., nn.Module], vocoder_state: dict[str, Any]
) -> None:
    def analysis() -> dict[str, Any]:
        return {"n_active_components": 2, "pca": np.arange(8, dtype=np.float32), "t": torch.ones(2), "labels": ["a"]}

    a = save_model(
        make_generator(),
        {"sr": 48000},
        {"lr": 1e-3},
        _fixed_meta(),
        tmp_path / "a",
        analysis=analysis(),
        vocoder_state=vocoder_state,
    )
    b = save_model(
        make_generator(),
        {"sr": 48000},
        {"lr": 1e-3},
        _fixed_meta(),
        tmp_path / "b",
        analysis=analysis(),
        vocoder_state=vocoder_state,
    )
    assert a.name == b.name
    assert a.read_bytes() == b.read_bytes()


def test_insertion_order_is_kept_and_only_it_changes_the_bytes(
    tmp_path: Path, generator: nn.Module, vocoder_state: dict[str, Any], assert_same_tree: Callable[..., None]
) -> None:
    """Dict order is part of a value (FORMAT.md §4.4): it round-trips, so two orders give two files."""
    state = dict(generator.state_dict())
    tied = torch.randn(3)
    forward = {**state, "tied.a": tied, "tied.b": tied}
    backward = dict(reversed(list(forward.items())))
    spec = {"a": 1, "b": [1, 2], "c": {"x": 1.5, "y": None}}
    spec_rev = {"c": {"y": None, "x": 1.5}, "b": [1, 2], "a": 1}
    a = save_model(forward, spec, spec, _fixed_meta(), tmp_path / "a", vocoder_state=vocoder_state)
    b = save_model(backward, spec_rev, spec_rev, _fixed_meta(), tmp_path / "b", vocoder_state=vocoder_state)
    assert a.read_bytes() != b.read_bytes()
    la, lb = load_model(a), load_model(b)
    assert_same_tree(la.state_dict, forward)
    assert_same_tree(lb.state_dict, backward)
    assert la.state_dict["tied.a"] is la.state_dict["tied.b"] and lb.state_dict["tied.a"] is lb.state_dict["tied.b"]
    assert list(lb.spectrogram_config) == ["c", "b", "a"] and list(lb.spectrogram_config["c"]) == ["y", "x"]
    # the tensor data are the same bytes: only the manifest differs
    with open_archive(a) as x, open_archive(b) as y:
        assert x.tables["model.safetensors"].tensors == y.tables["model.safetensors"].tensors


def test_different_content_gives_different_bytes(tmp_path: Path) -> None:
    a = save_model({"w": torch.zeros(4)}, {}, {}, _fixed_meta(), tmp_path / "a")
    b = save_model({"w": torch.tensor([0.0, 0.0, 0.0, -0.0])}, {}, {}, _fixed_meta(), tmp_path / "b")
    assert a.read_bytes() != b.read_bytes()
    assert len(a.read_bytes()) == len(b.read_bytes())
