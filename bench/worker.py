"""One benchmark operation in a fresh process: ``python bench/worker.py '<json job>'``.

Prints one JSON line (the last line of stdout) with the timings and the peak
RSS of the operation. Peak RSS is ``getrusage(RUSAGE_SELF).ru_maxrss`` after
the operation minus a baseline taken in this process just before it, after
the imports and the untimed setup; on Linux the kernel's high-water mark is
first reset to the current RSS (``echo 5 > /proc/self/clear_refs``) so that
the setup's own peak (e.g. building the input state dict) cannot hide the
operation's.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


# --- RSS ----------------------------------------------------------------------------


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def maxrss() -> int:
    """Peak RSS of this process so far, bytes (Linux reports KiB)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def rss_now() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                    out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


class Peak:
    """Baseline now; ``done()`` returns the operation's extra peak RSS.

    Creating it also runs a full garbage collection and freezes the
    surviving objects (``gc.freeze``): after ``import torch`` a full
    collection walks a few hundred thousand objects (~80 ms here) and would
    otherwise land inside whichever contender happens to allocate enough to
    trigger it.
    """

    def __init__(self) -> None:
        gc.collect()
        gc.freeze()
        self.reset = reset_peak()
        self.base = maxrss()

    def done(self) -> dict[str, Any]:
        peak = maxrss()
        return {
            "rss_base": self.base,
            "rss_peak": peak,
            "rss_delta": peak - self.base,
            "rss_reset": self.reset,
            "rss_end": rss_now(),
        }


# --- helpers -------------------------------------------------------------------------


def _distillgan() -> Any:
    """distillgan with every public name resolved: its imports (lazy since PEP 562) stay out of the timed region."""
    import distillgan

    for name in distillgan.__all__:
        getattr(distillgan, name)
    return distillgan


def import_torch_stack() -> Any:
    import safetensors.torch  # noqa: F401
    import torch

    _distillgan()

    # intra-op threads for the touch (same for every contender; 1 by default: on a shared 2-core
    # machine a parallel reduction otherwise stalls whenever one of its threads is descheduled)
    torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "1")))
    # lazy initialisation (allocator, intra-op thread pool, dtype kernels) is not the operation's cost
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        float(torch.ones(4096, dtype=dt).sum())
    return torch


def touch(tensors: list[Any]) -> dict[str, Any]:
    """Read every byte: ``float(t.sum())`` of each tensor (same for every contender)."""
    acc = 0.0
    nbytes = 0
    for t in tensors:
        acc += float(t.sum())
        nbytes += t.numel() * t.element_size()
    return {"touched_tensors": len(tensors), "touched_bytes": nbytes, "checksum": acc}


def split_src(flat: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    model = {k[len("model.") :]: v for k, v in flat.items() if k.startswith("model.")}
    voc = {k[len("vocoder.") :]: v for k, v in flat.items() if k.startswith("vocoder.")}
    return model, voc


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


SPECTROGRAM_CONFIG = {"sample_rate": 22050, "n_fft": 1024, "hop_length": 256, "n_mels": 80, "f_min": 0.0, "f_max": 8000.0}
TRAINING_CONFIG = {"batch_size": 16, "learning_rate": 2e-4, "epochs": 200, "betas": [0.8, 0.99], "seed": 1234}
VOCODER_CONFIG = {"upsample_rates": [8, 8, 2, 2], "resblock_kernel_sizes": [3, 7, 11], "sampling_rate": 22050}


def metadata(name: str) -> Any:
    from distillgan import ModelMetadata

    return ModelMetadata(
        name=name,
        description="synthetic benchmark model",
        dataset_name="synthetic",
        dataset_file_count=1000,
        dataset_total_duration_s=3600.0,
        training_date="2026-01-01T00:00:00+00:00",
        training_epochs=200,
        final_train_loss=0.123,
        final_val_loss=0.145,
        tags=["bench", "synthetic"],
    )


# --- jobs ---------------------------------------------------------------------------------


def job_build(j: dict[str, Any]) -> dict[str, Any]:
    """Make the synthetic model and the three files every load/verify/inspect reads."""
    import safetensors.torch as st

    torch = import_torch_stack()

    import synth

    distillgan = _distillgan()

    layout = synth.plan(j["size_bytes"])
    t0 = time.perf_counter()
    parts = synth.build_tensors(layout)
    flat = {f"model.{k}": v for k, v in parts["model"].items()}
    flat.update({f"vocoder.{k}": v for k, v in parts["vocoder"].items()})
    d = j["dir"]
    src = os.path.join(d, "model.safetensors")
    st.save_file(flat, src)
    model_only = os.path.join(d, "model_only.safetensors")  # the generator alone, for safetensors.torch.load_model
    st.save_file(dict(parts["model"]), model_only)
    pt = os.path.join(d, "model.pt")
    torch.save({"model": parts["model"], "vocoder": parts["vocoder"]}, pt)
    lib = os.path.join(d, "library")
    dg = distillgan.save_model(
        parts["model"],
        SPECTROGRAM_CONFIG,
        TRAINING_CONFIG,
        metadata(f"bench-{j['label']}"),
        lib,
        vocoder_state={
            "type": "hifigan",
            "state_dict": parts["vocoder"],
            "config": VOCODER_CONFIG,
            "training_metadata": {"epochs": 100},
        },
    )
    model_bytes = sum(t.numel() * t.element_size() for t in flat.values())
    return {
        "build_s": time.perf_counter() - t0,
        "files": {"distillgan": str(dg), "safetensors": src, "torch": pt, "safetensors_model": model_only},
        "file_bytes": {k: os.path.getsize(p) for k, p in (("distillgan", dg), ("safetensors", src), ("torch", pt))},
        "model_bytes": model_bytes,
        "layout": synth.describe(layout),
        "tensors": len(flat),
        "distillgan_file": distillgan.__file__,
        "torch_threads": torch.get_num_threads(),
    }


SAVE_CONTENDERS = {
    "distillgan.save_model": ("distillgan", "save_model", True),
    "distillgan.write_archive+fsync": ("distillgan", "write_archive", True),
    "distillgan.write_archive": ("distillgan", "write_archive", False),
    "safetensors.save_file+fsync": ("safetensors", "save_file", True),
    "safetensors.save_file": ("safetensors", "save_file", False),
    "torch.save+fsync": ("torch", "save", True),
    "torch.save": ("torch", "save", False),
}


def job_save(j: dict[str, Any]) -> dict[str, Any]:
    torch = import_torch_stack()
    import safetensors.torch as st

    distillgan = _distillgan()

    contender = j["contender"]
    _, how, durable = SAVE_CONTENDERS[contender]
    out_dir = j["out_dir"]
    os.makedirs(out_dir, exist_ok=True)
    # the input: a state dict in anonymous memory, as after training (untimed setup)
    loaded = st.load_file(j["src"])
    flat = {k: v.clone() for k, v in loaded.items()}
    del loaded
    model, voc = split_src(flat)
    vocoder_state = {"type": "hifigan", "state_dict": voc, "config": VOCODER_CONFIG, "training_metadata": {"epochs": 100}}
    manifest = None
    if how == "write_archive":
        with distillgan.open_archive(j["dg_file"]) as a:  # the metadata and configs save_model wrote for this model
            raw = a.manifest
            manifest = {k: raw[k] for k in ("latent_dim", "metadata", "spectrogram_config", "training_config", "analysis", "extra")}
        manifest.update(state_dict=model, vocoder_state=vocoder_state)
    meta = metadata(f"bench-save-{j['rep']}")
    path = None

    peak = Peak()
    t0 = time.perf_counter()
    if how == "save_model":
        path = str(distillgan.save_model(model, SPECTROGRAM_CONFIG, TRAINING_CONFIG, meta, out_dir, vocoder_state=vocoder_state))
    elif how == "write_archive":
        path = os.path.join(out_dir, "model.distillgan")
        with open(path, "wb", buffering=0) as f:
            distillgan.write_archive(f, manifest)
            if durable:
                os.fsync(f.fileno())
    elif how == "save_file":
        path = os.path.join(out_dir, "model.safetensors")
        st.save_file(flat, path)
        if durable:
            fsync_path(path)
    else:
        path = os.path.join(out_dir, "model.pt")
        torch.save({"model": model, "vocoder": voc}, path)
        if durable:
            fsync_path(path)
    elapsed = time.perf_counter() - t0
    res = peak.done()
    res.update({"time_s": elapsed, "file_bytes": os.path.getsize(path)})
    return res


LOAD_CONTENDERS = (
    "distillgan.load_model",
    "distillgan.load_model(copy)",
    "distillgan.load_model(verify)",
    "safetensors.load_file",
    "torch.load(weights_only)",
    "torch.load(mmap,weights_only)",
)


ST_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def module_for(spec: Any, device: str) -> Any:
    """An nn.Module whose state_dict has exactly these names, shapes and dtypes (parameters left uninitialised)."""
    import torch

    root = torch.nn.Module()
    for name, (shape, dtype) in spec.items():
        *path, leaf = name.split(".")
        mod = root
        for part in path:
            if part not in mod._modules:
                mod.add_module(part, torch.nn.Module())
            mod = mod._modules[part]
        t = torch.empty(shape, dtype=getattr(torch, ST_DTYPES[dtype]), device=device)
        mod.register_parameter(leaf, torch.nn.Parameter(t, requires_grad=False))
    return root


def job_load(j: dict[str, Any]) -> dict[str, Any]:
    torch = import_torch_stack()
    import safetensors.torch as st

    distillgan = _distillgan()

    contender = j["contender"]
    files = j["files"]
    spec = None
    if "module" in contender:  # names, shapes and dtypes of the generator's tensors (untimed)
        with st.safe_open(files["safetensors_model"], "pt") as f:
            spec = {k: (f.get_slice(k).get_shape(), f.get_slice(k).get_dtype()) for k in f.keys()}  # noqa: SIM118
    peak = Peak()
    t0 = time.perf_counter()
    if contender == "distillgan.load_model(meta module, assign)":
        lm = distillgan.load_model(files["distillgan"], model_builder=lambda m: module_for(spec, "meta"), assign=True)
        tensors = list(lm.model.parameters())
    elif contender == "safetensors.load_model(module)":
        module = module_for(spec, "cpu")
        st.load_model(module, files["safetensors_model"])
        tensors = list(module.parameters())
    elif contender in ("distillgan.load_model", "distillgan.load_model(copy)", "distillgan.load_model(verify)"):
        lm = distillgan.load_model(files["distillgan"], copy=contender.endswith("(copy)"), verify=contender.endswith("(verify)"))
        tensors = list(lm.state_dict.values()) + list(lm.vocoder_state["state_dict"].values())
    elif contender == "safetensors.load_file":
        tensors = list(st.load_file(files["safetensors"]).values())
    elif contender == "torch.load(weights_only)":
        obj = torch.load(files["torch"], map_location="cpu", weights_only=True)
        tensors = list(obj["model"].values()) + list(obj["vocoder"].values())
    elif contender == "torch.load(mmap,weights_only)":
        obj = torch.load(files["torch"], map_location="cpu", weights_only=True, mmap=True)
        tensors = list(obj["model"].values()) + list(obj["vocoder"].values())
    else:
        raise ValueError(contender)
    t1 = time.perf_counter()
    info = touch(tensors)
    t2 = time.perf_counter()
    res = peak.done()
    res.update({"time_s": t2 - t0, "open_s": t1 - t0, "touch_s": t2 - t1, **info, "file_pmd_mapped": file_pmd_mapped()})
    return res


def job_build_many(j: dict[str, Any]) -> dict[str, Any]:
    """A model of ``n`` tiny tensors (F32[2], names like a deep network's) plus one alias for every eighth,
    and the same tensors as a plain safetensors file: the tensor-count side of inspect's cost."""
    import safetensors.torch as st
    import torch

    distillgan = _distillgan()
    n = j["n"]
    t0 = time.perf_counter()
    sd = {f"layers.{i // 8}.block{i % 8}.weight": torch.full((2,), float(i)) for i in range(n)}
    for i in range(0, n, 8):
        sd[f"tied.{i}"] = sd[f"layers.{i // 8}.block0.weight"]
    dg = os.path.join(j["dir"], f"many-{n}.distillgan")
    distillgan.save_file(sd, dg)
    plain = os.path.join(j["dir"], f"many-{n}.safetensors")
    st.save_file({k: v.clone() for k, v in sd.items()}, plain)
    return {"build_s": time.perf_counter() - t0, "files": {"distillgan": dg, "safetensors": plain},
            "tensors": n, "names": len(sd), "file_bytes": os.path.getsize(dg)}


DEVICE_CONTENDERS = (
    "distillgan.load_model(device)",
    "safetensors.load_file(device)",
    "torch.load(mmap,weights_only,map_location)",
    "distillgan.load_model(meta module, assign, device)",
    "safetensors.load_model(module on device)",
)


def _device_counters(torch: Any, dev: Any) -> dict[str, Any]:
    if dev.type != "cuda":
        return {}
    torch.cuda.synchronize(dev)
    stats = torch.cuda.memory_stats(dev)
    return {"allocated": torch.cuda.memory_allocated(dev), "allocations": stats.get("allocation.all.allocated", 0)}


def job_device_load(j: dict[str, Any]) -> dict[str, Any]:
    """Load onto ``j["device"]``: wall time to tensors on the device (synchronized), device and CPU memory.

    The device is initialised before the timed region (context, allocator, a first copy); the
    figures are the call until the device has finished, then a touch (a sum of every tensor on
    the device). ``anon_delta`` is the growth of the process's anonymous memory (RssAnon) over
    the call, which an intermediate CPU copy of the tensors would show; ``rss_delta`` also counts
    the file's pages mapped in by the loaders that map it.
    """
    torch = import_torch_stack()
    import safetensors.torch as st

    distillgan = _distillgan()

    contender, files = j["contender"], j["files"]
    dev = torch.device(j["device"])
    float(torch.ones(1024, device=dev).sum())  # context, allocator and a first copy, untimed
    spec = None
    if "module" in contender:
        with st.safe_open(files["safetensors_model"], "pt") as f:
            spec = {k: (f.get_slice(k).get_shape(), f.get_slice(k).get_dtype()) for k in f.keys()}  # noqa: SIM118
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    before = _device_counters(torch, dev)
    anon0 = rss_now().get("RssAnon")
    peak = Peak()
    t0 = time.perf_counter()
    if contender == "distillgan.load_model(device)":
        lm = distillgan.load_model(files["distillgan"], device=dev)
        tensors = list(lm.state_dict.values()) + list(lm.vocoder_state["state_dict"].values())
    elif contender == "safetensors.load_file(device)":
        tensors = list(st.load_file(files["safetensors"], device=str(dev)).values())
    elif contender == "torch.load(mmap,weights_only,map_location)":
        obj = torch.load(files["torch"], map_location=dev, weights_only=True, mmap=True)
        tensors = list(obj["model"].values()) + list(obj["vocoder"].values())
    elif contender == "distillgan.load_model(meta module, assign, device)":
        lm = distillgan.load_model(files["distillgan"], device=dev, model_builder=lambda m: module_for(spec, "meta"), assign=True)
        tensors = list(lm.model.parameters())
    elif contender == "safetensors.load_model(module on device)":
        module = module_for(spec, str(dev))
        st.load_model(module, files["safetensors_model"], device=str(dev))
        tensors = list(module.parameters())
    else:
        raise ValueError(contender)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t1 = time.perf_counter()
    anon1 = rss_now().get("RssAnon")
    after = _device_counters(torch, dev)  # before the touch, whose sums allocate on the device too
    device_peak = torch.cuda.max_memory_allocated(dev) if after else None
    info = touch(tensors)
    t2 = time.perf_counter()
    res = peak.done()
    moved = sum(t.numel() * t.element_size() for t in tensors)
    res.update({"time_s": t1 - t0, "touch_s": t2 - t1, **info, "device": str(dev), "bytes_on_device": moved,
                "Bps": moved / (t1 - t0) if t1 > t0 else None,
                "anon_delta": anon1 - anon0 if anon0 is not None and anon1 is not None else None})
    if after:
        res.update({"device_peak_delta": device_peak - before["allocated"],
                    "device_allocations": after["allocations"] - before["allocations"],
                    "device_name": torch.cuda.get_device_name(dev), "torch_version": torch.__version__})
    return res


def file_pmd_mapped() -> int | None:
    """Bytes of file pages this process maps with 2 MiB entries (diagnostic: fewer faults)."""
    try:
        total = 0
        with open("/proc/self/smaps") as f:
            for line in f:
                if line.startswith("FilePmdMapped:"):
                    total += int(line.split()[1]) * 1024
        return total
    except OSError:
        return None


VERIFY_CONTENDERS = ("distillgan.verify", "zlib.crc32(in-memory)", "zlib.crc32(mmap)")


def job_verify(j: dict[str, Any]) -> dict[str, Any]:
    import mmap
    import zlib

    distillgan = _distillgan()

    contender = j["contender"]
    path = j["path"]
    size = os.path.getsize(path)
    if contender == "distillgan.verify":
        peak = Peak()
        t0 = time.perf_counter()
        distillgan.verify(path)
        elapsed = time.perf_counter() - t0
        crc = None
    elif contender == "zlib.crc32(in-memory)":
        buf = bytearray(size)  # read the whole file first (untimed), then one crc32 call over it
        with open(path, "rb", buffering=0) as f:
            view = memoryview(buf)
            got = 0
            while got < size:
                got += f.readinto(view[got:])
        peak = Peak()
        t0 = time.perf_counter()
        crc = zlib.crc32(buf)
        elapsed = time.perf_counter() - t0
    elif contender == "zlib.crc32(mmap)":
        peak = Peak()
        t0 = time.perf_counter()
        with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as m:
            crc = 0
            mv = memoryview(m)
            for start in range(0, size, 8 << 20):
                crc = zlib.crc32(mv[start : start + (8 << 20)], crc)
            mv.release()
        elapsed = time.perf_counter() - t0
    else:
        raise ValueError(contender)
    res = peak.done()
    res.update({"time_s": elapsed, "bytes": size, "throughput_Bps": size / elapsed, "crc": crc})
    return res


def job_inspect(j: dict[str, Any]) -> dict[str, Any]:
    import statistics

    distillgan = _distillgan()

    path = j["path"]
    peak = Peak()
    t0 = time.perf_counter()
    info = distillgan.inspect(path)
    first = time.perf_counter() - t0
    res = peak.done()
    warm = []
    deadline = time.perf_counter() + j.get("max_warm_s", 3.0)
    for i in range(j["warm_calls"] + 3):
        t0 = time.perf_counter()
        distillgan.inspect(path)
        dt = time.perf_counter() - t0
        if i >= 3:
            warm.append(dt)
        if time.perf_counter() > deadline and len(warm) >= 20:
            break
    warm.sort()
    res.update(
        {
            "time_s": first,
            "warm_median_s": statistics.median(warm),
            "warm_p10_s": warm[len(warm) // 10],
            "warm_p90_s": warm[(len(warm) * 9) // 10],
            "warm_calls": len(warm),
            "torch_imported": "torch" in sys.modules,
            "tensors": sum(len(v) for v in info["tensors"].values()),
            "file_size": info["file_size"],
        }
    )
    return res


def _resident_pages(path: str) -> tuple[int, int]:
    """(resident, total) pages of ``path`` in the page cache, via mincore(2)."""
    import ctypes
    import mmap

    size = os.path.getsize(path)
    page = mmap.PAGESIZE
    npages = (size + page - 1) // page
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            vec = (ctypes.c_ubyte * npages)()
            if libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            resident = npages - bytes(vec).count(0)
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    return resident, npages


def job_inspect_cold(j: dict[str, Any]) -> dict[str, Any]:
    """Evict the file from the page cache (fadvise DONTNEED), then one inspect: how much did it read?"""
    distillgan = _distillgan()

    path = j["path"]
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    before, npages = _resident_pages(path)
    t0 = time.perf_counter()
    distillgan.inspect(path)
    elapsed = time.perf_counter() - t0
    after, _ = _resident_pages(path)
    import mmap

    return {
        "time_s": elapsed,
        "pages_total": npages,
        "pages_resident_before": before,
        "pages_resident_after": after,
        "bytes_brought_in": max(after - before, 0) * mmap.PAGESIZE,
        "page_size": mmap.PAGESIZE,
    }


def job_warm(j: dict[str, Any]) -> dict[str, Any]:
    """Put files in the page cache the same way for every contender (no RSS growth: one reused buffer).

    Each file is first fsynced and evicted with ``posix_fadvise(DONTNEED)``
    (our own temporary files only), then read sequentially. Without this the
    cache of each file keeps the folio sizes its *writer* happened to
    produce, and mmap loaders are faster on files whose cache has more
    2 MiB folios (PMD-mapped, far fewer page faults): that measured how
    the file had been written, not how it is read.
    """
    buf = bytearray(8 << 20)
    total = 0
    t0 = time.perf_counter()
    for p in j["paths"]:
        if j.get("evict", True):
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        with open(p, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return {"time_s": time.perf_counter() - t0, "bytes": total}


# --- remote (loopback HTTP) vs local ------------------------------------------------------


def import_remote_stack() -> float:
    """Import what a URL needs up front; return the seconds it took (reported, not timed).

    distillgan imports its HTTP client (distillgan.source.http: urllib3, ssl)
    lazily on the first http(s) URL, and fsspec on the first URL of another
    scheme. The local contender has its imports done before the clock starts,
    so the remote one does too; the first call still pays for its connections.
    """
    t0 = time.perf_counter()
    import distillgan.source.http  # noqa: F401

    return time.perf_counter() - t0


def server_stats(url: str | None) -> dict[str, Any] | None:
    """Counters of the benchmark's HTTP server (bench/httpserve.py); the /_stats request is not counted."""
    if not url:
        return None
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def job_remote_inspect(j: dict[str, Any]) -> dict[str, Any]:
    """One ``inspect`` (timed; the server's counters read right after it), then a few warm calls."""
    import statistics

    distillgan = _distillgan()

    remote = j["contender"] == "http"
    import_s = import_remote_stack() if remote else None
    target = j["target"]
    peak = Peak()
    t0 = time.perf_counter()
    info = distillgan.inspect(target)
    first = time.perf_counter() - t0
    res = peak.done()
    stats = server_stats(j.get("stats_url")) if remote else None
    warm = []
    deadline = time.perf_counter() + j.get("max_warm_s", 1.0)
    for i in range(j.get("warm_calls", 20) + 2):
        t0 = time.perf_counter()
        distillgan.inspect(target)
        dt = time.perf_counter() - t0
        if i >= 2:
            warm.append(dt)
        if time.perf_counter() > deadline and len(warm) >= 5:
            break
    res.update(
        {
            "time_s": first,
            "warm_median_s": statistics.median(warm) if warm else None,
            "warm_calls": len(warm),
            "import_remote_s": import_s,
            "torch_imported": "torch" in sys.modules,
            "tensors": sum(len(v) for v in info["tensors"].values()),
            "file_size": info["file_size"],
        }
    )
    if stats is not None:
        res.update({"requests": stats["requests"], "bytes_sent": stats["bytes_sent"], "request_log": stats["log"]})
    return res


def job_remote_load(j: dict[str, Any]) -> dict[str, Any]:
    """``load_model`` (a path, or a URL: every tensor member downloaded into memory) + touch every tensor."""
    torch = import_torch_stack()  # noqa: F841

    distillgan = _distillgan()

    remote = j["contender"] == "http"
    import_s = import_remote_stack() if remote else None
    peak = Peak()
    t0 = time.perf_counter()
    lm = distillgan.load_model(j["target"])
    tensors = list(lm.state_dict.values()) + list(lm.vocoder_state["state_dict"].values())
    t1 = time.perf_counter()
    info = touch(tensors)
    t2 = time.perf_counter()
    res = peak.done()
    res.update({"time_s": t2 - t0, "open_s": t1 - t0, "touch_s": t2 - t1, "import_remote_s": import_s, **info})
    res["load_Bps"] = j["file_bytes"] / res["open_s"] if j.get("file_bytes") else None  # the load_model call alone
    stats = server_stats(j.get("stats_url")) if remote else None
    if stats is not None:
        res.update({"requests": stats["requests"], "bytes_sent": stats["bytes_sent"], "max_in_flight": stats.get("max_in_flight")})
    return res


def job_remote_verify(j: dict[str, Any]) -> dict[str, Any]:
    distillgan = _distillgan()

    remote = j["contender"] == "http"
    import_s = import_remote_stack() if remote else None
    peak = Peak()
    t0 = time.perf_counter()
    distillgan.verify(j["target"])
    elapsed = time.perf_counter() - t0
    res = peak.done()
    res.update({"time_s": elapsed, "import_remote_s": import_s})
    res["verify_Bps"] = j["file_bytes"] / elapsed if j.get("file_bytes") else None
    stats = server_stats(j.get("stats_url")) if remote else None
    if stats is not None:
        res.update({"requests": stats["requests"], "bytes_sent": stats["bytes_sent"], "max_in_flight": stats.get("max_in_flight")})
    return res


JOBS = {
    "build": job_build,
    "save": job_save,
    "load": job_load,
    "device_load": job_device_load,
    "build_many": job_build_many,
    "verify": job_verify,
    "inspect": job_inspect,
    "inspect_cold": job_inspect_cold,
    "warm": job_warm,
    "remote_inspect": job_remote_inspect,
    "remote_load": job_remote_load,
    "remote_verify": job_remote_verify,
}


def main() -> None:
    job = json.loads(sys.argv[1])
    result = JOBS[job["op"]](job)
    sys.stdout.write("\n" + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
