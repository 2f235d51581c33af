"""Loading onto a CUDA device: every value exact, each stored tensor copied to the device once.

Skipped where torch sees no CUDA device (CI); run on a GPU machine with
``pytest tests/test_cuda.py``. The copy count is read from the CUDA caching
allocator: a device allocation per distinct stored tensor, none for numpy
arrays (they stay on the CPU) and none for tied names (one object).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import appshapes as app
from expected import saved_form
import numpy as np
import pytest
import torch
from test_roundtrip import ALL_DTYPES, _random_tensor
from torch import nn

import distillgan
from distillgan import InputError, ModelMetadata, load_file, load_model, safe_open, save_file, save_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch")


def _to_cpu(tree: Any, seen: dict[int, Any] | None = None) -> Any:
    """The loaded tree with every tensor brought back to the CPU (Parameters stay Parameters, ties stay ties)."""
    seen = {} if seen is None else seen
    if isinstance(tree, torch.Tensor):
        if id(tree) not in seen:
            assert tree.device.type == "cuda", f"a tensor came back on {tree.device}"
            cpu = tree.detach().cpu()
            seen[id(tree)] = nn.Parameter(cpu, requires_grad=tree.requires_grad) if isinstance(tree, nn.Parameter) else (
                cpu.requires_grad_(tree.requires_grad))
        return seen[id(tree)]
    if isinstance(tree, dict):
        return {k: _to_cpu(v, seen) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_cpu(v, seen) for v in tree)
    return tree


def _allocations() -> int:
    torch.cuda.synchronize()
    return int(torch.cuda.memory_stats().get("allocation.all.allocated", 0))


def test_every_dtype_is_loaded_onto_cuda_bit_for_bit(tmp_path: Path, assert_same_tree: Callable[..., None]) -> None:
    state = {f"t.{str(dt).removeprefix('torch.')}": _random_tensor(dt, (3, 5), seed=i) for i, dt in enumerate(ALL_DTYPES)}
    state["scalar"] = _random_tensor(torch.float32, (), seed=99)
    state["empty"] = torch.empty(0, 4, dtype=torch.bfloat16)
    path = save_file(state, tmp_path / "dtypes.distillgan")
    before = _allocations()
    loaded = load_model(path, device="cuda")
    made = _allocations() - before
    assert loaded.device == torch.device("cuda")
    assert all(t.device.type == "cuda" for t in loaded.state_dict.values())
    assert_same_tree(_to_cpu(loaded.state_dict), state)
    # one device allocation per stored tensor with bytes (the allocator gives none for zero bytes)
    assert made == sum(1 for t in state.values() if t.numel())


def test_ties_parameters_and_numpy_arrays_on_cuda(tmp_path: Path, assert_same_tree: Callable[..., None]) -> None:
    torch.manual_seed(0)
    shared = torch.randn(16, 8)
    state = {"emb.weight": shared, "head.weight": shared, "head.bias": nn.Parameter(torch.randn(16)), "steps": torch.tensor(7)}
    analysis = {"pca_components": np.linspace(-1, 1, 24, dtype=np.float32).reshape(3, 8), "mean": torch.zeros(8, dtype=torch.float64)}
    path = save_model(state, {"sr": 48000}, {}, ModelMetadata(name="cuda ties"), tmp_path, analysis=analysis)
    before = _allocations()
    loaded = load_model(path, device="cuda:0")
    made = _allocations() - before
    sd = loaded.state_dict
    assert sd["emb.weight"] is sd["head.weight"] and sd["emb.weight"].is_cuda
    assert type(sd["head.bias"]) is nn.Parameter and sd["head.bias"].requires_grad and sd["head.bias"].is_cuda
    arr = loaded.analysis["pca_components"]
    assert type(arr) is np.ndarray and arr.tobytes() == analysis["pca_components"].tobytes()
    assert loaded.analysis["mean"].is_cuda
    assert_same_tree(_to_cpu(sd), saved_form(state))
    # shared weight once, bias, steps, analysis mean: four copies; the numpy array never visits the device
    assert made == 4


def test_the_apps_resumable_vocoder_checkpoint_on_cuda(tmp_path: Path, assert_same_tree: Callable[..., None]) -> None:
    voc_state = app.vocoder_state(small=True, with_checkpoint=True, seed=3)
    path = save_model(app.build_vae(), {}, {}, app.ModelMetadata(name="cuda vocoder"), tmp_path, vocoder_state=voc_state)
    with distillgan.open_archive(path) as a:
        stored = sum(len(t.tensors) for t in a.tables.values())
    before = _allocations()
    loaded = load_model(path, device="cuda")
    made = _allocations() - before
    got = loaded.vocoder_state
    assert_same_tree(_to_cpu(got), saved_form(voc_state))
    gen, again = got["generator_state_dict"], got["checkpoint"]["generator_state_dict"]
    assert all(gen[k] is again[k] for k in gen)  # one object per stored tensor, on the device too
    assert made <= stored  # never more than one device copy of a stored tensor (empty ones take none)
    # the trainer's resume block runs from the CUDA tensors (optimizer state follows its params' device)
    resumed = app.resume_from(got)
    assert resumed.start_epoch == voc_state["checkpoint"]["epoch"] + 1
    for k, v in voc_state["checkpoint"]["generator_state_dict"].items():
        assert torch.equal(resumed.generator.state_dict()[k].reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8)), k


def test_builders_on_cuda_copy_each_tensor_once(tmp_path: Path) -> None:
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    voc = nn.Conv1d(4, 4, 3)
    path = save_file(net, tmp_path / "m.distillgan", vocoder_state={"type": "hifigan", "generator_state_dict": voc.state_dict()})
    n_model, n_voc = len(net.state_dict()), len(voc.state_dict())

    before = _allocations()
    on_meta = load_model(path, device="cuda", model_builder=lambda m: nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8)).to("meta"),
                         vocoder_builder=lambda m: nn.Conv1d(4, 4, 3, device="meta"), assign=True)
    assert _allocations() - before == n_model + n_voc  # assign=True: the loaded tensors are the parameters
    assert all(p.is_cuda for p in on_meta.model.parameters()) and all(p.is_cuda for p in on_meta.vocoder.parameters())
    assert on_meta.model[0].weight.data_ptr() == on_meta.state_dict["0.weight"].data_ptr()
    x = torch.randn(5, 32)
    with torch.no_grad():  # the same weights compute the same function (CUDA and CPU kernels round differently)
        assert torch.allclose(on_meta.model(x.cuda()).cpu(), net.eval()(x), rtol=1e-4, atol=1e-5)
    assert torch.equal(on_meta.vocoder.weight.detach().cpu(), voc.weight.detach())

    plain = load_model(path, device="cuda", model_builder=lambda m: nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8)))
    assert all(p.is_cuda for p in plain.model.parameters()) and not plain.model.training
    for k, v in net.state_dict().items():
        assert torch.equal(plain.model.state_dict()[k].cpu(), v)


def test_file_api_on_cuda(tmp_path: Path) -> None:
    torch.manual_seed(3)
    w = torch.randn(64, 48, dtype=torch.bfloat16)
    path = save_file({"w": w, "b": torch.arange(6, dtype=torch.int16)}, tmp_path / "f.distillgan")
    got = load_file(path, device="cuda")
    assert got["w"].is_cuda and torch.equal(got["w"].cpu(), w)
    with safe_open(path, device="cuda") as f:
        t = f.get_tensor("w")
        part = f.get_slice("w")[3:9, ::4]
        assert t.is_cuda and part.is_cuda
        assert torch.equal(t.cpu(), w) and torch.equal(part.cpu(), w[3:9, ::4])


def test_a_missing_cuda_index_is_an_input_error(tmp_path: Path) -> None:
    path = save_file({"w": torch.ones(2)}, tmp_path / "m.distillgan")
    with pytest.raises(InputError) as e:
        load_model(path, device=f"cuda:{torch.cuda.device_count()}")
    assert e.value.code == "device-unavailable" and 'device="cpu"' in str(e.value)


def test_load_into_a_module_on_cuda_keeps_its_device_and_ties(tmp_path: Path) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.embed.weight

    src = Tied()
    path = save_file(src, tmp_path / "tied.distillgan")
    dst = Tied().cuda()
    assert distillgan.load_into(dst, path) == ([], [])
    assert dst.embed.weight.device.type == "cuda" and dst.head.weight is dst.embed.weight
    assert torch.equal(dst.embed.weight.cpu(), src.embed.weight)
    with torch.device("meta"):
        meta = Tied()
    loaded = load_model(path, "cuda", model_builder=lambda _: meta, assign=True)
    assert loaded.model.head.weight is loaded.model.embed.weight and loaded.model.embed.weight.device.type == "cuda"
