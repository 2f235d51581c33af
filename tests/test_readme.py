"""The README's two set-up commands, and CI running exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section, flags=re.S)


def test_readme_has_exactly_two_setup_commands() -> None:
    commands = _setup_commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    assert "\n" not in demo and "\n" not in tests
    assert "torch==2.13.0" in demo and "distillgan demo" in demo
    assert "torch==2.13.0" in tests and "pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert _setup_commands()[1] in ci


def test_package_requires_a_torch_range_not_a_pin() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    torch_req = re.search(r'"torch([^"]*)"', pyproject)
    assert torch_req is not None and ">=" in torch_req.group(1) and "==" not in torch_req.group(1)


def test_the_python_example_runs(tmp_path: Path) -> None:
    """The README's Python block, run as it is in a fresh interpreter and an empty folder."""
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use it from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.+?)\n```", section, flags=re.S)
    assert len(blocks) == 1
    r = subprocess.run([sys.executable, "-W", "error", "-c", blocks[0]], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout.splitlines()
    assert out[0].startswith("LoadedModel(name='Piano'") and "hifigan" in out[0]
    assert out[1] == "torch.Size([1, 128])"
    assert out[2] == "{'learning_rate': 0.001, 'betas': (0.9, 0.999)}"
    assert out[3] == "Piano"
    assert (tmp_path / "models" / "piano.distillgan").exists()
