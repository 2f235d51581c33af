"""The README's set-up commands, CI running exactly the README's test command, and the README's other blocks run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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


def _section(title: str) -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_the_file_sections_commands_run_on_a_saved_model(tmp_path: Path) -> None:
    """Each line of "The file"'s shell block, run by bash on a model whose manifest has int map keys (an optimizer state)."""
    import hashlib
    import os
    import shutil
    import subprocess
    import sys

    import torch

    from distillgan import save_file

    if shutil.which("bash") is None or shutil.which("unzip") is None:
        pytest.skip("needs bash and unzip")
    layer = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(layer.parameters())
    layer(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    model = tmp_path / "model.distillgan"
    save_file(layer, model, extra={"optimizer": optimizer.state_dict()})
    (block,) = re.findall(r"```sh\n(.+?)\n```", _section("The file"), flags=re.DOTALL)
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    lines = [line for line in block.splitlines() if line.strip()]
    assert len(lines) == 4 and any("msgpack.unpackb" in line for line in lines)
    for line in lines:
        r = subprocess.run(["bash", "-c", line.replace("HEX", digest)], cwd=tmp_path, env=env, check=False, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, (line, r.stderr[-2000:])
        assert r.stdout.strip(), line
    r = subprocess.run(["bash", "-c", lines[1]], cwd=tmp_path, env=env, check=False, capture_output=True, text=True, timeout=120)
    assert "'format': 'distillgan_model'" in r.stdout and "0: {" in r.stdout  # the optimizer state's int keys


def test_the_meta_device_recipe_never_builds_the_weights() -> None:
    """`Model(...).to("meta")` first allocates every weight on the CPU; `with torch.device("meta"):` allocates none."""
    (block,) = re.findall(r"```python\n(.+?)\n```", _section("Use it from Python"), flags=re.DOTALL)
    code = [line.split("#", 1)[0] for line in block.splitlines()]
    assert not any('.to("meta")' in line for line in code)
    assert any('with torch.device("meta"):' in line for line in code)


def test_the_readme_says_which_app_before_speaking_of_it() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = re.search(r"\bthe app\b", readme, flags=re.IGNORECASE)
    link = readme.find("https://github.com/taylorbrook/Distill_SmallCorpusGenerativeAIAudio")
    assert first is not None and 0 <= link < first.start()
    assert "Without it" in readme[: first.start() + 1000]
