"""The demo behind ``distillgan demo``: the library's main job on a small example model.

Builds a small convolutional generator and a HiFi-GAN-shaped vocoder, saves
them with and without the vocoder, inspects and verifies the files, loads
them back and compares every tensor, then shows a legacy pickle-based
``.distill`` file refused without being unpickled. Output goes through
``say`` (the CLI passes ``print``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def build_generator(latent_dim: int = 16) -> Any:
    """A small spectrogram generator: latent vector -> 1x32x32 mel patch."""
    import torch
    from torch import nn

    class Generator(nn.Module):
        def __init__(self, latent_dim: int) -> None:
            super().__init__()
            self.latent_dim = latent_dim
            self.fc = nn.Linear(latent_dim, 64 * 4 * 4)
            self.up = nn.Sequential(
                nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
                nn.BatchNorm2d(32),
                nn.LeakyReLU(0.2),
                nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1),
                nn.BatchNorm2d(16),
                nn.LeakyReLU(0.2),
                nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1),
            )

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.up(self.fc(z).view(-1, 64, 4, 4))

    return Generator(latent_dim)


def build_vocoder(n_mels: int = 32) -> Any:
    """A HiFi-GAN-shaped vocoder: conv_pre, upsampling layers with resblocks, conv_post."""
    from torch import nn

    class ResBlock(nn.Module):
        def __init__(self, ch: int) -> None:
            super().__init__()
            self.convs1 = nn.ModuleList(nn.Conv1d(ch, ch, 3, dilation=d, padding=d) for d in (1, 3, 5))
            self.convs2 = nn.ModuleList(nn.Conv1d(ch, ch, 3, padding=1) for _ in range(3))

        def forward(self, x: Any) -> Any:
            for c1, c2 in zip(self.convs1, self.convs2, strict=True):
                x = x + c2(nn.functional.leaky_relu(c1(nn.functional.leaky_relu(x, 0.1)), 0.1))
            return x

    class HiFiGAN(nn.Module):
        def __init__(self, n_mels: int, ch: int = 32, rates: tuple[int, ...] = (4, 4)) -> None:
            super().__init__()
            self.conv_pre = nn.Conv1d(n_mels, ch, 7, padding=3)
            self.ups = nn.ModuleList()
            self.resblocks = nn.ModuleList()
            for i, r in enumerate(rates):
                self.ups.append(nn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), 2 * r, stride=r, padding=r // 2))
                self.resblocks.append(ResBlock(ch // 2 ** (i + 1)))
            self.conv_post = nn.Conv1d(ch // 2 ** len(rates), 1, 7, padding=3)

        def forward(self, mel: Any) -> Any:
            x = self.conv_pre(mel)
            for up, rb in zip(self.ups, self.resblocks, strict=True):
                x = rb(up(nn.functional.leaky_relu(x, 0.1)))
            return nn.functional.tanh(self.conv_post(nn.functional.leaky_relu(x)))

    return HiFiGAN(n_mels)


def run_demo(folder: Path, say: Callable[[str], None] = print) -> None:
    """Run the demo in ``folder`` (created; an earlier demo's files there are replaced)."""
    import warnings

    with warnings.catch_warnings():  # torch warns at import when numpy is absent; the demo does not need numpy
        warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
        import torch

    from .archive import inspect, verify
    from .catalog import ModelLibrary
    from .errors import LegacyFormatError
    from .manifest import ModelMetadata
    from .persistence import delete_model, load_model, save_model

    folder.mkdir(parents=True, exist_ok=True)
    library = ModelLibrary(folder)
    for entry in library.list_all():  # start clean so the demo can be re-run
        delete_model(entry.model_id, folder)

    torch.manual_seed(0)
    gen = build_generator()
    voc = build_vocoder()
    spec_cfg = {"sample_rate": 22050, "n_fft": 1024, "hop_length": 256, "n_mels": 32}
    train_cfg = {"epochs": 3, "batch_size": 8, "learning_rate": 2e-4}
    pca = torch.randn(4, 16)  # the analysis may hold tensors or numpy arrays; the demo needs no numpy
    analysis = {
        "pca_components": pca,
        "explained_variance_ratio": torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64),
        "n_active_components": 4,
    }
    say(f"demo folder: {folder}")

    meta = ModelMetadata(name="Demo generator", dataset_name="synthetic", training_epochs=3,
                         final_train_loss=0.12, final_val_loss=0.15, tags=["demo"])
    plain = save_model(gen, spec_cfg, train_cfg, meta, folder, analysis=analysis)
    say(f"saved without vocoder: {plain.name} ({plain.stat().st_size} bytes)")

    vocoder_state = {"type": "hifigan", "state_dict": voc.state_dict(), "config": {"upsample_rates": [4, 4], "channels": 32},
                     "training_metadata": {"epochs": 2, "final_loss": 0.5, "training_date": "2026-11-28"}}
    meta_v = ModelMetadata(name="Demo generator with vocoder", dataset_name="synthetic", training_epochs=3, tags=["demo"])
    bundled = save_model(gen, spec_cfg, train_cfg, meta_v, folder, analysis=analysis, vocoder_state=vocoder_state)
    say(f"saved with vocoder:    {bundled.name} ({bundled.stat().st_size} bytes)")

    info = inspect(bundled)
    n_tensors = {m: len(t) for m, t in info["tensors"].items()}
    say(f"inspect (no tensor data read): format {info['format']} v{info['version']}, tensors per member {n_tensors}")
    for path in (plain, bundled):
        verify(path)
    say("verify: every member's CRC-32 matches in both files")

    loaded = load_model(bundled, model_builder=lambda m: build_generator(m.latent_dim or 16))
    for name, tensor in gen.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict[name]), name
    assert loaded.vocoder_state is not None
    for name, tensor in voc.state_dict().items():
        assert torch.equal(tensor, loaded.vocoder_state["state_dict"][name]), name
    assert loaded.analysis is not None
    assert torch.equal(loaded.analysis["pca_components"], pca)
    with torch.no_grad():
        mel = loaded.model(torch.zeros(1, 16))
    say(f"load: {len(loaded.state_dict)} generator tensors and {len(loaded.vocoder_state['state_dict'])} vocoder "
        f"tensors equal the originals; generator output shape {tuple(mel.shape)}")
    assert load_model(plain).vocoder_state is None
    say("load: the file saved without a vocoder has vocoder_state None")

    legacy = folder / "old_model.distill"
    torch.save({"format": "distill_model", "version": 1, "model_state_dict": gen.state_dict()}, legacy)
    try:
        load_model(legacy)
    except LegacyFormatError as e:
        say(f"legacy .distill refused [{e.code}]: {e}")
    else:  # pragma: no cover - the demo doubles as a smoke test
        raise AssertionError("a legacy file was accepted")
    say(f"library: {[e.name for e in ModelLibrary(folder).list_all()]}")
    say("demo finished: try `distillgan inspect " + str(bundled) + "`")
