"""The index is the app's own ``model_library.json``: layout, values, semantics, both ways.

The app's reader and writer are ``appshapes.AppModelLibrary`` / ``app_save_model``, rebuilt from
app v1.1's ``library/catalog.py`` and ``models/persistence.py``; the app's model files are real
``torch.save`` pickles.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import appshapes as app
import pytest
import torch

import distillgan
from distillgan import ModelLibrary, ModelMetadata, save_model
from distillgan.catalog import INDEX_NAME


def _save(folder: Path, name: str, **meta: Any) -> Path:
    voc = meta.pop("vocoder", None)
    sd = {"w": torch.arange(16, dtype=torch.float32)}
    return save_model(sd, {"n_mels": 32}, {"epochs": 1}, ModelMetadata(name=name, **meta), folder, vocoder_state=voc)


def _same(a: Any, b: Any) -> bool:
    """Equality with NaN equal to NaN (entries as plain data)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _app_reads_everything(folder: Path, caplog: pytest.LogCaptureFixture) -> app.AppModelLibrary:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="appshapes"):
        lib = app.AppModelLibrary(folder)
    assert "Skipping corrupt entry" not in caplog.text and "Failed to load" not in caplog.text, caplog.text
    return lib


def test_index_is_the_apps_layout_and_the_app_reads_every_entry(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    voc = {"type": "hifigan_v2", "generator_state_dict": {"k": torch.ones(2)}, "config": {},
           "training_metadata": {"epochs": 40, "final_loss": 0.125, "training_date": "2026-11-02T10:00:00"}}
    _save(tmp_path, "With vocoder", model_id="v", vocoder=voc, tags=["Drums"], final_train_loss=0.5)
    _save(tmp_path, "Cancelled", model_id="c", final_train_loss=float("nan"), final_val_loss=float("inf"))
    _save(tmp_path, "No losses", model_id="n", final_train_loss=None, final_val_loss=None)
    _save(tmp_path, "Bare vocoder", model_id="b", vocoder={"weights": {"k": torch.ones(1)}})  # no type, no metadata

    text = (tmp_path / INDEX_NAME).read_text(encoding="ascii")
    raw = json.loads(text)
    assert list(raw) == ["version", "models"] and raw["version"] == 2
    assert list(raw["models"]) == ["v", "c", "n", "b"]  # insertion order, as the app's dict
    for mid, entry in raw["models"].items():
        assert list(entry) == [f.name for f in fields(app.ModelEntry)] and entry["model_id"] == mid
        assert all(type(entry[k]) is float for k in ("dataset_total_duration_s", "final_train_loss", "final_val_loss"))
    assert "NaN" in text and "Infinity" in text  # the literals the app's json.dump writes
    assert raw["models"]["n"]["final_val_loss"] == 0.0 and raw["models"]["c"]["vocoder"] is None
    assert raw["models"]["v"]["vocoder"] == {"type": "hifigan_v2", "epochs": 40, "final_loss": 0.125,
                                             "training_date": "2026-11-02T10:00:00"}
    assert raw["models"]["b"]["vocoder"] == {"type": "hifigan_v2", "epochs": 0, "final_loss": 0.0, "training_date": ""}

    lib = _app_reads_everything(tmp_path, caplog)
    assert lib.count() == 4
    ours = {e.model_id: {k: v for k, v in asdict(e).items() if k not in ("problem", "problem_detail")}  # ours only, never in the index
            for e in ModelLibrary(tmp_path).list_all()}
    for e in lib.list_all():
        assert _same(asdict(e), ours[e.model_id])
        # what the app's CLI and model card print
        f"{e.final_train_loss:.4f} {e.final_val_loss:.4f} {e.save_date[:10]} {e.model_id[:8]}"
        if e.vocoder is not None:
            f"HiFi-GAN ({e.vocoder.epochs} epochs, loss {e.vocoder.final_loss:.4f}) {e.vocoder.training_date[:10]}"


def test_an_index_the_app_wrote_with_nan_and_its_pickle_models_stay(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ckpt = app.training_checkpoint(cancelled=True, nan_train_loss=True)  # train loss NaN, val loss inf
    cancelled = app.seed_distillgan_dict(name="Cancelled run", via="checkpoint", checkpoint=ckpt)
    older = app.seed_distillgan_dict(name="Older", seed=1, description="rain", tags=["Field"], with_analysis=False,
                                     via="checkpoint", checkpoint=ckpt)
    a = app.app_save_model(cancelled, tmp_path)
    b = app.app_save_model(older, tmp_path)
    assert "NaN" in (tmp_path / INDEX_NAME).read_text()
    ids = {cancelled["metadata"]["model_id"], older["metadata"]["model_id"]}

    lib = ModelLibrary(tmp_path)
    got = {e.model_id: e for e in lib.list_all()}
    assert set(got) == ids  # pickle-era files: listed as the app indexed them, never opened with pickle
    nan_entry = got[cancelled["metadata"]["model_id"]]
    assert math.isnan(nan_entry.final_train_loss) and nan_entry.final_val_loss == math.inf and nan_entry.file_path == a.name

    ours = _save(tmp_path, "Ours", model_id="ours")  # a save on top of the app's index: no error, nothing lost
    assert lib.count() == 3
    app_lib = _app_reads_everything(tmp_path, caplog)
    assert {e.model_id for e in app_lib.list_all()} == ids | {"ours"}
    assert math.isnan(app_lib.get(cancelled["metadata"]["model_id"]).final_train_loss)
    assert app_lib.get("ours").file_path == ours.name

    report = lib.repair_index()  # ours verified from its manifest; the app's kept as listed
    assert sorted(report.legacy) == sorted([a.name, b.name]) and report.invalid == {} and report.removed == []
    assert _app_reads_everything(tmp_path, caplog).count() == 3
    assert distillgan.delete_model(older["metadata"]["model_id"], tmp_path)  # its pickled metadata confirms the id: no conversion
    assert not b.exists() and _app_reads_everything(tmp_path, caplog).count() == 2


def test_our_previous_layout_is_read_and_migrated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = _save(tmp_path, "Old layout", model_id="old", tags=["x"])
    q = _save(tmp_path, "Second", model_id="two")
    entry = {"model_id": "old", "name": "Old layout", "file_path": p.name, "file_size_bytes": p.stat().st_size,
             "description": "", "dataset_name": "", "dataset_file_count": 0, "dataset_total_duration_s": 0.0,
             "training_date": "", "save_date": "2026-01-01", "training_epochs": 0, "final_train_loss": None,
             "final_val_loss": None, "has_analysis": False, "n_active_components": 0, "tags": ["x"],
             "vocoder": {"type": "hifigan", "epochs": None, "final_loss": None, "training_date": ""}}
    second = dict(entry, model_id="two", name="Second", file_path=q.name, vocoder=None)
    (tmp_path / INDEX_NAME).write_text(json.dumps({"version": 2, "models": [entry, second]}, indent=2), encoding="utf-8")

    got = ModelLibrary(tmp_path).get("old")
    assert got is not None and got.final_val_loss == 0.0
    assert got.vocoder == distillgan.VocoderInfo(type="hifigan", epochs=0, final_loss=0.0, training_date="")
    assert isinstance(json.loads((tmp_path / INDEX_NAME).read_text())["models"], list)  # a read writes nothing
    ModelLibrary(tmp_path).repair_index()  # a change (save, delete, repair) writes the app's layout
    raw = json.loads((tmp_path / INDEX_NAME).read_text())
    assert isinstance(raw["models"], dict) and list(raw["models"]) == ["old", "two"]
    assert _app_reads_everything(tmp_path, caplog).count() == 2


def test_search_list_and_count_are_the_apps(tmp_path: Path) -> None:
    specs = [
        ("Drum Loops", "tight kicks", ["Drums", "loop"], "2026-01-03", 0.5),
        ("Choir", "drum-free voices", ["vocal"], "2026-01-01", 0.25),
        ("Rain", "field recording", ["field", "LOOP"], "2026-01-02", float("nan")),
        ("Rain", "same name, other file", [], "2026-01-02", 1.0),
    ]
    for i, (name, desc, tags, date, loss) in enumerate(specs):
        _save(tmp_path, name, model_id=f"m{i}", description=desc, tags=tags, save_date=date, final_val_loss=loss,
              dataset_name="drums dataset")
    ours, theirs = ModelLibrary(tmp_path), app.AppModelLibrary(tmp_path)

    def ids(entries: list[Any]) -> list[str]:
        return [e.model_id for e in entries]

    assert ours.count() == theirs.count() == 4
    for kwargs in ({}, {"sort_by": "name", "reverse": False}, {"sort_by": "training_epochs"}, {"sort_by": "no_such_field"},
                   {"reverse": False}):
        assert ids(ours.list_all(**kwargs)) == ids(theirs.list_all(**kwargs)), kwargs
    for query, tags in [("drum", None), ("DRUM", []), ("", ["loop"]), ("", ["nope", "VOCAL"]), ("rain", ["loop"]),
                        ("dataset", None), ("", None)]:
        assert ids(ours.search(query, tags)) == ids(theirs.search(query, tags)), (query, tags)
    assert ids(ours.search("drum")) == ["m0", "m1"]  # name OR description; never the dataset name
    assert ids(ours.search(tags=["LOOP", "vocal"])) == ["m0", "m2", "m1"]  # any tag
    assert len(ours.list_all(sort_by="vocoder")) == 4  # the one field the app cannot sort by is made orderable
    with pytest.raises(distillgan.InputError):
        ours.list_all(sort_by=3)  # type: ignore[arg-type]


def test_repair_index_unpacks_as_the_apps_counts(tmp_path: Path) -> None:
    a = _save(tmp_path, "A", model_id="a")
    _save(tmp_path, "B", model_id="b")
    (tmp_path / INDEX_NAME).write_text(json.dumps({"version": 2, "models": {}}), encoding="utf-8")
    a.unlink()
    removed, added = ModelLibrary(tmp_path).repair_index()
    assert (removed, added) == (0, 1)


def test_add_entry_refuses_what_the_app_could_not_read(tmp_path: Path) -> None:
    lib = ModelLibrary(tmp_path)
    _save(tmp_path, "A", model_id="a")
    bad = distillgan.ModelEntry(model_id="x", name="x", file_path="a.distillgan", final_val_loss=None)  # type: ignore[arg-type]
    with pytest.raises(distillgan.InputError) as e:
        lib.add_entry(bad)
    assert e.value.code == "invalid-input" and "final_val_loss" in str(e.value)
    with pytest.raises(distillgan.InputError):
        lib.add_entry(distillgan.ModelEntry(model_id="y", name="\udc80", file_path="a.distillgan"))
    with pytest.raises(distillgan.InputError):
        lib.add_entry(distillgan.ModelEntry(model_id="z", name="z", file_path="../outside.distillgan"))
    assert [e.model_id for e in lib.list_all()] == ["a"]
