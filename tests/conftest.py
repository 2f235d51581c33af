"""Shared fixtures for the format and persistence tests.

Everything here is a fixture (nothing is meant to be imported from this
module): a small generator module, a HiFi-GAN-shaped vocoder state, a helper
that saves a model into ``tmp_path``, and a bitwise tensor comparison.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import distillgan


class TinyGenerator(nn.Module):
    """A small spectrogram generator: latent vector -> 1x8x8 patch.

    It has parameters, BatchNorm buffers (float and int64) and a
    ``latent_dim`` attribute, like the app's models.
    """

    def __init__(self, latent_dim: int = 8) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.fc = nn.Linear(latent_dim, 16 * 2 * 2)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.fc(z).view(-1, 16, 2, 2))


@pytest.fixture
def make_generator() -> Callable[..., nn.Module]:
    """Build a TinyGenerator with deterministic, non-default weights and buffers."""

    def make(latent_dim: int = 8, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        model = TinyGenerator(latent_dim)
        bn = model.up[1]
        with torch.no_grad():
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
        bn.num_batches_tracked.fill_(123)
        return model

    return make


@pytest.fixture
def generator(make_generator: Callable[..., nn.Module]) -> nn.Module:
    return make_generator()


@pytest.fixture
def vocoder_state() -> dict[str, Any]:
    """A bundled vocoder in the shape the app stores (type, state_dict, config, training_metadata)."""
    torch.manual_seed(1)
    vocoder = nn.Sequential(
        nn.Conv1d(4, 8, 7, padding=3),
        nn.ConvTranspose1d(8, 4, 16, stride=8, padding=4),
        nn.Conv1d(4, 1, 7, padding=3),
    )
    return {
        "type": "hifigan_v2",
        "state_dict": {k: v.clone() for k, v in vocoder.state_dict().items()},
        "config": {
            "upsample_rates": [8, 8, 2, 2],
            "upsample_kernel_sizes": [16, 16, 4, 4],
            "upsample_initial_channel": 128,
            "resblock_kernel_sizes": [3, 7, 11],
            "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        },
        "training_metadata": {"epochs": 200, "final_loss": 0.0342, "training_date": "2026-02-21T10:30:00+00:00"},
    }


@pytest.fixture
def spectrogram_config() -> dict[str, Any]:
    return {"sample_rate": 48000, "n_fft": 2048, "hop_length": 512, "n_mels": 128, "f_min": 0.0, "f_max": 24000.0, "power": 2.0}


@pytest.fixture
def training_config() -> dict[str, Any]:
    return {"epochs": 100, "batch_size": 32, "learning_rate": 0.0002, "betas": [0.5, 0.999], "seed": 42, "augment": True}


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def save(
    generator: nn.Module,
    spectrogram_config: dict[str, Any],
    training_config: dict[str, Any],
    models_dir: Path,
) -> Callable[..., Path]:
    """Save a model with ``distillgan.save_model``; every argument has a sensible default.

    ``save(model=None, *, analysis=None, vocoder_state=None, models_dir=None, **metadata_fields)``:
    ``model`` defaults to the TinyGenerator fixture, ``models_dir`` to ``tmp_path / "models"``,
    and the keyword arguments not listed go to ``ModelMetadata``.
    """
    spec_default, train_default, models_default = spectrogram_config, training_config, models_dir

    def do_save(
        model: Any = None,
        *,
        analysis: Any = None,
        vocoder_state: Any = None,
        models_dir: Path | None = None,
        spectrogram_config: Any = None,
        training_config: Any = None,
        **meta: Any,
    ) -> Path:
        meta.setdefault("name", "Test Model")
        return distillgan.save_model(
            generator if model is None else model,
            spectrogram_config if spectrogram_config is not None else spec_default,
            training_config if training_config is not None else train_default,
            distillgan.ModelMetadata(**meta),
            models_dir if models_dir is not None else models_default,
            analysis=analysis,
            vocoder_state=vocoder_state,
        )

    return do_save


@pytest.fixture
def saved_model(save: Callable[..., Path], vocoder_state: dict[str, Any]) -> Path:
    """A saved TinyGenerator with a vocoder and a small analysis."""
    analysis = {
        "n_active_components": 3,
        "pca_components": np.linspace(-1, 1, 24, dtype=np.float32).reshape(3, 8),
        "pca_mean": np.zeros(8, dtype=np.float64),
        "component_labels": ["brightness", "noisiness", "pitch"],
    }
    return save(analysis=analysis, vocoder_state=vocoder_state, name="Saved Model", tags=["test"])


@pytest.fixture
def bits() -> Callable[[torch.Tensor], torch.Tensor]:
    """The raw bytes of a tensor as a flat uint8 tensor (NaN payloads and -0.0 compare exactly)."""

    def raw(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().resolve_conj().resolve_neg().contiguous().reshape(-1)
        return t.view(torch.uint8)

    return raw


@pytest.fixture
def assert_same_tensor(bits: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """Assert dtype, shape and every byte are equal."""

    def check(actual: torch.Tensor, expected: torch.Tensor) -> None:
        assert isinstance(actual, torch.Tensor)
        assert actual.dtype == expected.dtype
        assert actual.shape == expected.shape
        assert torch.equal(bits(actual), bits(expected))

    return check


def same_tree(actual: Any, expected: Any, path: str = "$") -> None:
    """Assert two value trees are equal exactly: types, dict key types and order, tensor and float bits.

    ``expected`` is what was saved after the documented conversions (a
    tensor's values, not its strides); tensors and numpy arrays compare by
    kind, dtype, shape and every byte, floats by their IEEE 754 bits.
    """
    if isinstance(expected, torch.Tensor):
        assert type(actual) is type(expected), f"{path}: {type(actual).__name__} is not {type(expected).__name__}"
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, f"{path}: dtype/shape"
        assert actual.requires_grad == expected.requires_grad, f"{path}: requires_grad"
        a = actual.detach().resolve_conj().resolve_neg().contiguous().reshape(-1).view(torch.uint8)
        e = expected.detach().resolve_conj().resolve_neg().contiguous().reshape(-1).view(torch.uint8)
        assert torch.equal(a, e), f"{path}: tensor bytes differ"
        return
    if isinstance(expected, np.ndarray):
        assert type(actual) is np.ndarray, f"{path}: {type(actual).__name__} is not an ndarray"
        assert actual.dtype == expected.dtype.newbyteorder("=") and actual.shape == expected.shape, f"{path}: dtype/shape"
        assert actual.tobytes() == expected.astype(expected.dtype.newbyteorder("=")).tobytes(), f"{path}: array bytes differ"
        return
    assert type(actual) is type(expected), f"{path}: {type(actual).__name__} ({actual!r:.80}) is not {type(expected).__name__}"
    if isinstance(expected, float):
        assert struct.pack("<d", actual) == struct.pack("<d", expected), f"{path}: {actual!r} is not {expected!r} bit for bit"
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys {list(actual)!r:.200} are not {list(expected)!r:.200}"
        for k in expected:
            assert type(next(a for a in actual if a == k)) is type(k), f"{path}: key {k!r} changed type"
            same_tree(actual[k], expected[k], f"{path}[{k!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{path}: length {len(actual)} is not {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            same_tree(a, e, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r:.80} is not {expected!r:.80}"


@pytest.fixture
def assert_same_tree() -> Callable[[Any, Any], None]:
    """The :func:`same_tree` check as a fixture."""
    return same_tree
