"""numpy is optional: a model whose analysis holds numpy arrays says so when numpy is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from distillgan import ModelMetadata, save_model


def test_numpy_analysis_without_numpy_is_a_clear_error(tmp_path: Path) -> None:
    path = save_model({"w": torch.ones(2)}, {}, {}, ModelMetadata(name="np"), tmp_path, analysis={"pca": np.eye(2)})
    code = (
        "import sys, torch\n"
        "sys.modules['numpy'] = None  # as if numpy were not installed\n"
        "import distillgan\n"
        f"try:\n    distillgan.load_model({str(path)!r})\n"
        "except distillgan.DistillganError as e:\n    print(e.code)\n"
        f"print(distillgan.inspect({str(path)!r})['manifest']['analysis'])\n"
    )
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.splitlines()[0] == "numpy-unavailable", r.stderr
    assert "'$': 'ndarray'" in r.stdout.splitlines()[1]
