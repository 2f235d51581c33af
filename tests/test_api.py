"""The public API: names, constants, dataclasses, and imports that must not pull in torch."""

from __future__ import annotations
import __future__

import dataclasses
import subprocess
import sys
import types
from pathlib import Path

import pytest

import distillgan
from distillgan import LoadedModel, ModelMetadata

SEED_METADATA_FIELDS = (
    "model_id",
    "name",
    "description",
    "dataset_name",
    "dataset_file_count",
    "dataset_total_duration_s",
    "training_date",
    "save_date",
    "training_epochs",
    "final_train_loss",
    "final_val_loss",
    "tags",
    "has_analysis",
    "n_active_components",
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-W", "error", "-c", code], check=False, capture_output=True, text=True, timeout=120)


# --- the app's persistence API: its constants and fields, adapted to distillgan ---------------------------


def test_seed_constants() -> None:
    from distillgan import MODEL_FILE_EXTENSION, MODEL_FORMAT_MARKER, SAVED_MODEL_VERSION, LoadedModel

    assert MODEL_FORMAT_MARKER == "distillgan_model"
    assert MODEL_FILE_EXTENSION == ".distillgan"
    assert SAVED_MODEL_VERSION == 1 and type(SAVED_MODEL_VERSION) is int
    assert hasattr(LoadedModel, "vocoder_state")


def test_loaded_model_vocoder_state_defaults_to_none() -> None:
    fields = {f.name: f for f in dataclasses.fields(LoadedModel)}
    assert "vocoder_state" in fields
    assert fields["vocoder_state"].default is None
    loaded = LoadedModel(
        state_dict={},
        metadata=ModelMetadata(),
        spectrogram_config={},
        training_config={},
        latent_dim=None,
        analysis=None,
        device="cpu",
    )
    assert loaded.vocoder_state is None


def test_model_metadata_has_exactly_the_seed_fields() -> None:
    assert tuple(f.name for f in dataclasses.fields(ModelMetadata)) == SEED_METADATA_FIELDS
    m = ModelMetadata()
    assert m.model_id == "" and m.save_date == "" and m.name == "Untitled Model"
    assert m.tags == [] and m.has_analysis is False and m.n_active_components == 0
    assert m.tags is not ModelMetadata().tags  # a fresh list per instance


# --- __all__ -------------------------------------------------------------------------------


def _isort_key(name: str) -> tuple[int, str]:
    """ruff RUF022's "isort-style" order: SCREAMING_SNAKE_CASE, then CamelCase, then the rest."""
    if len(name) > 1 and name.isupper():
        return 0, name
    if name[0].isupper():
        return 1, name
    return 2, name


def test_all_is_sorted_isort_style_without_duplicates() -> None:
    names = list(distillgan.__all__)
    assert len(names) == len(set(names))
    assert names == sorted(names, key=_isort_key)
    # constants first, then classes, then functions and __version__
    kinds = [_isort_key(n)[0] for n in names]
    assert kinds == sorted(kinds) and set(kinds) == {0, 1, 2}


def test_all_equals_the_public_names() -> None:
    for name in distillgan.__all__:
        assert hasattr(distillgan, name), name
    public = {
        name
        for name, value in vars(distillgan).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        # `from __future__ import annotations` binds a compiler directive, not an API name
        and not isinstance(value, __future__._Feature)
    }
    assert public == set(distillgan.__all__) - {"__version__"}
    assert isinstance(distillgan.__version__, str) and distillgan.__version__


def test_the_type_checkers_imports_are_the_public_names_where_they_load_from() -> None:
    """__init__.py lists each public name once; its TYPE_CHECKING imports repeat them for type checkers only."""
    import ast
    import importlib

    tree = ast.parse(Path(distillgan.__file__).read_text(encoding="utf-8"))
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "_TYPE_CHECKING")
    imported = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        for alias in node.names:
            assert alias.asname == alias.name, f"{alias.name}: `X as X` marks an explicit re-export"
            imported[alias.name] = node.module
    assert set(imported) == set(distillgan.__all__) - {"__version__"}
    for name, module in imported.items():  # the lazy loader gets each name from the module type checkers see
        assert getattr(distillgan, name) is getattr(importlib.import_module(f"distillgan.{module}"), name), name


def test_public_functions_and_classes_are_defined_in_distillgan() -> None:
    for name in distillgan.__all__:
        value = getattr(distillgan, name)
        if isinstance(value, type) or callable(value):
            assert value.__module__.startswith("distillgan."), (name, value.__module__)


# --- imports without torch ----------------------------------------------------------------


def test_import_distillgan_does_not_import_torch() -> None:
    r = _run("import sys, distillgan; assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_cli_module_imports_without_torch() -> None:
    r = _run(
        "import sys, distillgan.cli; assert callable(distillgan.cli.main); "
        "assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_inspect_and_verify_do_not_import_torch(saved_model: Path) -> None:
    r = _run(
        "import sys, distillgan\n"
        f"info = distillgan.inspect({str(saved_model)!r})\n"
        f"checked = distillgan.verify({str(saved_model)!r})\n"
        "assert info['format'] == 'distillgan_model' and checked['version'] == 1\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "print(len(info['tensors']['model.safetensors']))\n"
    )
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) > 0


def test_safe_open_keys_and_metadata_do_not_import_torch(saved_model: Path) -> None:
    """Listing a file's tensors costs no torch import (about a second); reading one does."""
    r = _run(
        "import sys, distillgan\n"
        f"with distillgan.safe_open({str(saved_model)!r}) as f:\n"
        "    keys, meta = f.keys(), f.metadata()\n"
        "    assert 'torch' not in sys.modules, 'torch imported'\n"
        "    t = f.get_tensor(keys[0])\n"
        "assert 'torch' in sys.modules and meta['name'] == 'Saved Model'\n"
        "print(len(keys))\n"
    )
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) > 0


def test_inspect_without_the_tensor_table_validates_the_same(saved_model: Path, tmp_path: Path) -> None:
    full = distillgan.inspect(saved_model)
    short = distillgan.inspect(saved_model, tensors=False)
    assert "tensors" not in short and {**short, "tensors": full["tensors"]} == full
    damaged = tmp_path / "damaged.distillgan"  # a defect found only by the tensor-header layer is still found
    data = bytearray(saved_model.read_bytes())
    with distillgan.open_archive(saved_model) as a:
        member = a.members[1]
    data[member.data_offset + 8 : member.data_offset + 9] = b"["  # the header's JSON no longer starts with '{'
    damaged.write_bytes(bytes(data))
    with pytest.raises(distillgan.DistillganError) as e:
        distillgan.inspect(damaged, tensors=False)
    assert e.value.code == "st-header-json"
