"""Synthetic GAN-vocoder models of a chosen size for the benchmark.

The layout imitates a spectrogram GAN (generator with residual blocks,
attention every third block, up-sampling stack, multi-scale discriminator)
plus a small HiFi-GAN-style vocoder with weight-norm pairs. The tensor count
is roughly constant (~400) and the width scales with the requested size, so
a larger model has larger tensors, not more of them — which is what lets
``inspect`` be compared across sizes.

Dtypes: bfloat16 / float16 for the big convolution and attention weights,
float32 for biases, norms, the discriminator and the vocoder. Some shapes are
deliberately odd (80 mel bins, 513 frequency bins, 0-d scalars).

Only ``build_tensors`` imports torch.
"""

from __future__ import annotations

from typing import Any

DTYPE_SIZE = {"float32": 4, "float16": 2, "bfloat16": 2}
LATENT = 128
N_BLOCKS = 24


def _nbytes(entries: list[tuple[str, tuple[int, ...], str]]) -> int:
    total = 0
    for _, shape, dtype in entries:
        n = DTYPE_SIZE[dtype]
        for d in shape:
            n *= d
        total += n
    return total


def model_entries(w: int, fill_rows: int = 0) -> list[tuple[str, tuple[int, ...], str]]:
    """Generator + discriminator of width ``w``; ``fill_rows`` rows of a speaker embedding."""
    e: list[tuple[str, tuple[int, ...], str]] = []
    e.append(("gen.latent_proj.weight", (16 * w, LATENT), "float32"))
    e.append(("gen.latent_proj.bias", (16 * w,), "float32"))
    e.append(("gen.temperature", (), "float32"))
    e.append(("gen.step", (1,), "float32"))
    if fill_rows:
        e.append(("gen.speaker_embedding.weight", (fill_rows, LATENT), "float32"))
    for i in range(N_BLOCKS):
        p = f"gen.blocks.{i}"
        e.append((f"{p}.conv1.weight", (w, w, 3), "bfloat16"))
        e.append((f"{p}.conv1.bias", (w,), "float32"))
        e.append((f"{p}.conv2.weight", (w, w, 5), "float16"))
        e.append((f"{p}.conv2.bias", (w,), "float32"))
        for n in ("norm1", "norm2"):
            e.append((f"{p}.{n}.weight", (w,), "float32"))
            e.append((f"{p}.{n}.bias", (w,), "float32"))
        e.append((f"{p}.film.weight", (2 * w, LATENT), "float32"))
        if i % 3 == 2:
            e.append((f"{p}.attn.qkv.weight", (3 * w, w), "bfloat16"))
            e.append((f"{p}.attn.proj.weight", (w, w), "bfloat16"))
    c = w
    for j in range(5):
        e.append((f"gen.up.{j}.weight", (c, max(c // 2, 1), 8), "float16"))
        e.append((f"gen.up.{j}.bias", (max(c // 2, 1),), "float32"))
        c = max(c // 2, 1)
    e.append(("gen.out.weight", (80, c, 7), "float32"))
    e.append(("gen.out.bias", (80,), "float32"))
    e.append(("gen.spec_head.weight", (513, 80), "float32"))
    for s in range(3):
        cin = 1
        for k in range(6):
            cout = max(8, (w // 8) << min(k, 3))
            p = f"disc.scales.{s}.convs.{k}"
            e.append((f"{p}.weight", (cout, cin, 3, 3), "float32"))
            e.append((f"{p}.bias", (cout,), "float32"))
            e.append((f"{p}.sn_u", (cout,), "float32"))
            cin = cout
    return e


def vocoder_entries(v: int) -> list[tuple[str, tuple[int, ...], str]]:
    """HiFi-GAN-like vocoder of base width ``v`` (float32, weight-norm g/v pairs)."""
    e: list[tuple[str, tuple[int, ...], str]] = []
    e.append(("conv_pre.weight_g", (v, 1, 1), "float32"))
    e.append(("conv_pre.weight_v", (v, 80, 7), "float32"))
    e.append(("conv_pre.bias", (v,), "float32"))
    c = v
    for i in range(4):
        co = max(c // 2, 1)
        e.append((f"ups.{i}.weight_g", (c, 1, 1), "float32"))
        e.append((f"ups.{i}.weight_v", (c, co, 16), "float32"))
        e.append((f"ups.{i}.bias", (co,), "float32"))
        for r, k in enumerate((3, 7, 11)):
            for j in range(2):
                p = f"resblocks.{3 * i + r}.convs{j + 1}.0"
                e.append((f"{p}.weight_g", (co, 1, 1), "float32"))
                e.append((f"{p}.weight_v", (co, co, k), "float32"))
                e.append((f"{p}.bias", (co,), "float32"))
        c = co
    e.append(("conv_post.weight_g", (1, 1, 1), "float32"))
    e.append(("conv_post.weight_v", (1, c, 7), "float32"))
    e.append(("conv_post.bias", (1,), "float32"))
    return e


def _largest_width(fn: Any, budget: int, lo: int = 8) -> int:
    hi = lo
    while _nbytes(fn(hi * 2)) <= budget:
        hi *= 2
    hi *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _nbytes(fn(mid)) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def plan(total_bytes: int) -> dict[str, list[tuple[str, tuple[int, ...], str]]]:
    """Tensor layout of a model + vocoder whose data is close to ``total_bytes``.

    The vocoder takes about 1/16 of the budget; the generator's width is the
    largest that fits the rest, and a float32 speaker embedding fills what
    is left (to within 512 bytes).
    """
    voc_budget = max(total_bytes // 16, 256 << 10)
    v = _largest_width(vocoder_entries, voc_budget)
    voc = vocoder_entries(v)
    rest = total_bytes - _nbytes(voc)
    w = _largest_width(lambda x: model_entries(x, 1), rest)
    base = _nbytes(model_entries(w, 0))
    fill = max((rest - base) // (LATENT * 4), 1)
    return {"model": model_entries(w, fill), "vocoder": voc}


def describe(layout: dict[str, list[tuple[str, tuple[int, ...], str]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part, entries in layout.items():
        by_dtype: dict[str, int] = {}
        for _, shape, dtype in entries:
            by_dtype[dtype] = by_dtype.get(dtype, 0) + _nbytes([("", shape, dtype)])
        out[part] = {"tensors": len(entries), "bytes": _nbytes(entries), "bytes_by_dtype": by_dtype}
    return out


def build_tensors(layout: dict[str, list[tuple[str, tuple[int, ...], str]]], seed: int = 1234) -> dict[str, dict[str, Any]]:
    """Deterministic random tensors for ``layout`` (torch imported here)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out: dict[str, dict[str, Any]] = {}
    for part, entries in layout.items():
        d = {}
        for name, shape, dtype in entries:
            t = torch.randn(shape, generator=g, dtype=torch.float32).mul_(0.02)
            d[name] = t.to(getattr(torch, dtype))
        out[part] = d
    return out


if __name__ == "__main__":  # quick look: python bench/synth.py 256M
    import json
    import sys

    from run import parse_size  # type: ignore[import-not-found]

    for s in sys.argv[1:] or ["16M", "256M", "1G"]:
        lay = plan(parse_size(s))
        print(s, json.dumps(describe(lay)))
