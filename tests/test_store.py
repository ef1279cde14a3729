"""Explanation stores (mmgenre.explain_store, mmgenre.explain_split, ``python -m mmgenre
explain-split``): round trip, resume after a kill, fingerprints, corrupt files, the deep method and
the CLI, on the tiny generated dataset (12 test movies) and the tiny UI checkpoints."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import mmgenre.explain_split as split_mod
from mmgenre.data import MMIMDb
from mmgenre.explain_store import (MANIFEST, Lookup, checkpoint_fingerprint, load_explanation, read_manifest, read_shard,
                                   read_store, shard_path, store_dir, write_shard)
from mmgenre.explain_store_format import encode
from mmgenre.explain_split import explain_split
from mmgenre.predict import Predictor

SHARD = 5  # 12 test movies: shards of 5, 5 and 2


def _copy(ui_checkpoints: Path, model: str, to: Path) -> Path:
    shutil.copytree(ui_checkpoints / model, to / model)
    return to / model


@pytest.fixture(scope="module")
def gmu_store(ui_checkpoints, tiny_data, tmp_path_factory) -> Path:
    """A copy of the gmu checkpoint with the store of the whole tiny test split."""
    ckpt = _copy(ui_checkpoints, "gmu", tmp_path_factory.mktemp("stored"))
    explain_split(ckpt, tiny_data, "test", shard_size=SHARD, progress=False)
    return ckpt


@pytest.fixture(scope="module")
def ds(tiny_data) -> MMIMDb:
    return MMIMDb.load(tiny_data, skip_bad=True)


def _same_record(a, b) -> None:
    """Two explanations agree within the store's rounding (float16 maps, float32 scores)."""
    (arr_a, rec_a), (arr_b, rec_b) = encode(a), encode(b)
    rec_a.pop("timings"), rec_b.pop("timings")
    for key in ("words", "genres", "predicted", "text_method", "text_steps", "cams", "scores", "cut_short"):
        assert rec_a[key] == rec_b[key], key
    assert json.dumps(rec_a.get("cross_attention")) == json.dumps(rec_b.get("cross_attention"))
    for key in ("probabilities", "ig_delta", "modality", "faithfulness"):
        flat_a, flat_b = _flatten(rec_a[key]), _flatten(rec_b[key])
        assert flat_a.keys() == flat_b.keys(), key
        for k in flat_a:
            assert flat_a[k] == pytest.approx(flat_b[k], abs=1e-4), (key, k)
    assert arr_a.keys() == arr_b.keys()
    for k in arr_a:
        np.testing.assert_allclose(arr_a[k].astype(np.float32), arr_b[k].astype(np.float32), atol=2e-3, err_msg=k)


def _flatten(obj, prefix="") -> dict:
    if isinstance(obj, dict):
        return {k2: v for k, v in obj.items() for k2, v in _flatten(v, f"{prefix}/{k}").items()}
    return {prefix: obj}


# ------------------------------------------------------------------------------ round trip
def test_a_shard_gives_back_what_was_written(ui_checkpoints, ds, tmp_path):
    p = Predictor.from_checkpoint(ui_checkpoints / "cross_attention")  # CAMs, word scores, attention
    movie = next(m for m in ds.split("test") if m.has_poster and m.has_plot)
    live = p.explain(poster=movie.poster_path, plot=movie.plot, genres=["Drama", "Comedy"])
    path = tmp_path / "shard.safetensors"
    write_shard(path, {"ids": [movie.imdb_id, "tt0000000"]}, {movie.imdb_id: live, "tt0000000": "no poster"})
    back = read_shard(path, {"ids": [movie.imdb_id, "tt0000000"]})
    assert back["tt0000000"] == "no poster"
    got = back[movie.imdb_id]
    _same_record(got, live)
    assert max(got.poster_cam["Drama"].shape) == 64 and got.cross_attention["text_to_image_mean"].shape == \
        live.cross_attention["text_to_image_mean"].shape


def test_the_store_holds_every_movie_as_a_live_explanation_would(gmu_store, ds):
    manifest = read_manifest(store_dir(gmu_store, "test"))
    assert manifest["complete"] and manifest["ids"] == ds.splits["test"] and manifest["text_method"] == "fast"
    assert manifest["checkpoint"]["fingerprint"] == checkpoint_fingerprint(gmu_store)
    assert manifest["data"] == {"fingerprint": ds.fingerprint(), "folder": Path(ds.root).name}
    assert sorted(p.name for p in store_dir(gmu_store, "test").iterdir()) == [
        MANIFEST, "shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"]
    p = Predictor.from_checkpoint(gmu_store)
    for movie in ds.split("test")[:3]:
        found = load_explanation(gmu_store, ds.fingerprint(), movie.imdb_id, split="test")
        assert found.explanation is not None and found.note is None, found
        stored = found.explanation
        assert len(stored.genres) == 3 and stored.poster is None  # --genres top, --top 3
        live = p.explain(poster=movie.poster_path, plot=movie.plot, genres=stored.genres)
        _same_record(stored, live)
        if live.poster is not None:  # with the poster: maps at its size, close to the live ones
            shown = load_explanation(gmu_store, ds.fingerprint(), movie.imdb_id, split="test",
                                     poster=movie.poster_path).explanation
            assert np.array_equal(shown.poster, live.poster)
            for g, cam in live.poster_cam.items():
                assert shown.poster_cam[g].shape == cam.shape and np.abs(shown.poster_cam[g] - cam).mean() < 0.02
    # A genre the store does not explain for this movie: no explanation, a plain note.
    movie = ds.split("test")[0]
    other = next(g for g in ("Western", "Film-Noir", "News") if g not in
                 load_explanation(gmu_store, ds.fingerprint(), movie.imdb_id, split="test").explanation.genres)
    found = load_explanation(gmu_store, ds.fingerprint(), movie.imdb_id, split="test", genres=[other])
    assert found.explanation is None and not found.problem and other in found.note


# ------------------------------------------------------------------------------ resume
def test_a_killed_run_resumes_to_the_same_store(ui_checkpoints, tiny_data, ds, tmp_path, monkeypatch):
    whole = _copy(ui_checkpoints, "text_only", tmp_path / "whole")
    killed = _copy(ui_checkpoints, "text_only", tmp_path / "killed")
    explain_split(whole, tiny_data, "test", shard_size=SHARD, progress=False)
    real, calls = split_mod._explain_movie, []

    def dies_after_7(*args, **kwargs):
        if len(calls) == 7:
            raise KeyboardInterrupt  # what a kill leaves: shard 0 written, shard 1 half done
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(split_mod, "_explain_movie", dies_after_7)
    with pytest.raises(KeyboardInterrupt):
        explain_split(killed, tiny_data, "test", shard_size=SHARD, progress=False)
    folder = store_dir(killed, "test")
    assert shard_path(folder, 0).is_file() and not shard_path(folder, 1).exists()
    assert not read_manifest(folder)["complete"]
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "no temporary file is left"
    first, later = ds.splits["test"][0], ds.splits["test"][SHARD]
    assert load_explanation(killed, ds.fingerprint(), first, split="test").explanation is not None
    assert "not hold this movie yet" in load_explanation(killed, ds.fingerprint(), later, split="test").note

    calls.clear()
    monkeypatch.setattr(split_mod, "_explain_movie", lambda *a, **k: calls.append(1) or real(*a, **k))
    summary = explain_split(killed, tiny_data, "test", shard_size=SHARD, progress=False)
    assert len(calls) == 12 - SHARD and summary["explained_now"] == 12 - SHARD
    assert summary["already_stored"] == SHARD and summary["complete"] and summary["shards"] == "3/3"
    a, b = read_store(killed, folder), read_store(whole, store_dir(whole, "test"))
    assert a.explanations.keys() == b.explanations.keys() and a.errors == b.errors
    assert len(a.explanations) + len(a.errors) == 12
    for imdb_id, exp in a.explanations.items():
        _same_record(exp, b.explanations[imdb_id])
    # A complete store: a rerun has nothing to do.
    calls.clear()
    assert explain_split(killed, tiny_data, "test", shard_size=SHARD, progress=False)["explained_now"] == 0
    assert not calls


# ------------------------------------------------------------------------------ bad stores
def test_a_store_of_other_data_or_another_checkpoint_is_ignored_with_a_note(gmu_store, ds, tiny_data, tmp_path):
    movie = ds.splits["test"][0]
    found = load_explanation(gmu_store, "0123456789abcdef", movie, split="test")
    assert found.explanation is None and found.problem and "other data" in found.note
    assert "explain-split" in found.note and str(gmu_store.parent) not in found.note  # no server path
    changed = tmp_path / "gmu"
    shutil.copytree(gmu_store, changed)
    cfg = json.loads((changed / "config.json").read_text())
    cfg["note"] = "retrained"
    (changed / "config.json").write_text(json.dumps(cfg))
    found = load_explanation(changed, ds.fingerprint(), movie, split="test")
    assert found.explanation is None and found.problem and "another checkpoint" in found.note
    contents = read_store(changed, store_dir(changed, "test"), ds.fingerprint())
    assert not contents.usable and not contents.explanations and "ignored" in contents.notes[0]
    # explain-split replaces such a store, and says so.
    notes = []
    explain_split(changed, tiny_data, "test", shard_size=SHARD, limit=1, progress=False, log=notes.append)
    assert any("replacing it" in n for n in notes)
    assert load_explanation(changed, ds.fingerprint(), movie, split="test").explanation is not None


def test_a_corrupt_file_is_reported_and_recomputed(gmu_store, ds, tiny_data, tmp_path):
    ckpt = tmp_path / "gmu"
    shutil.copytree(gmu_store, ckpt)
    folder = store_dir(ckpt, "test")
    first = ds.splits["test"][0]
    data = shard_path(folder, 0).read_bytes()
    for broken in (b"not a safetensors file", data[: len(data) // 2], data[:8] + b"{" * 50 + data[58:]):
        shard_path(folder, 0).write_bytes(broken)
        found = load_explanation(ckpt, ds.fingerprint(), first, split="test")
        assert found.explanation is None and found.problem and "corrupt" in found.note, found
    contents = read_store(ckpt, folder, ds.fingerprint())
    assert contents.usable and len(contents.explanations) + len(contents.errors) == 12 - SHARD
    assert any("corrupt" in n for n in contents.notes)
    notes = []
    summary = explain_split(ckpt, tiny_data, "test", shard_size=SHARD, progress=False, log=notes.append)
    assert summary["explained_now"] == SHARD and any("corrupt" in n for n in notes)
    assert load_explanation(ckpt, ds.fingerprint(), first, split="test").explanation is not None
    (folder / MANIFEST).write_text("{ not json")
    found = load_explanation(ckpt, ds.fingerprint(), first, split="test")
    assert found.explanation is None and found.problem and "unreadable" in found.note


def test_deep_explanations_come_only_from_a_deep_store(ui_checkpoints, tiny_data, ds, tmp_path):
    ckpt = _copy(ui_checkpoints, "text_only", tmp_path)
    movie = next(m for m in ds.split("test") if m.has_plot)
    first = ds.splits["test"].index(movie.imdb_id)
    explain_split(ckpt, tiny_data, "test", shard_size=1, limit=first + 1, progress=False)
    assert load_explanation(ckpt, ds.fingerprint(), movie.imdb_id, text_method="deep") == Lookup(None)
    explain_split(ckpt, tiny_data, "test", shard_size=1, limit=first + 1, text_method="deep", progress=False)
    assert store_dir(ckpt, "test", "deep").name == "test-deep"
    deep = load_explanation(ckpt, ds.fingerprint(), movie.imdb_id, text_method="deep").explanation
    fast = load_explanation(ckpt, ds.fingerprint(), movie.imdb_id).explanation
    assert deep.text_method == "deep" and fast.text_method == "fast"


# ------------------------------------------------------------------------------ CLI
def test_cli_explain_split(ui_checkpoints, tiny_data, tmp_path, capsys):
    from mmgenre.__main__ import main
    ckpt = _copy(ui_checkpoints, "tfidf_logreg", tmp_path)
    assert main(["explain-split", "--checkpoint", str(ckpt), "--data", str(tiny_data), "--shard-size", "4",
                 "--limit", "4", "--genres", "predicted"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["shards"] == "1/3" and summary["explained_now"] == 4 and not summary["complete"]
    assert main(["explain-split", "--checkpoint", str(tmp_path / "nowhere"), "--data", str(tiny_data)]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err
    assert main(["explain-split", "--checkpoint", str(ckpt), "--data", str(tiny_data), "--split", "holdout"]) == 2
    err = capsys.readouterr().err
    assert "unknown split 'holdout'" in err and "test" in err
    assert main(["explain-split", "--checkpoint", str(ckpt), "--data", str(tmp_path / "no_data")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_store_from_the_grey_deletion_test_is_ignored_and_replaced(gmu_store, ds, tiny_data, tmp_path):
    """Stores written before the deletion test blurred (no ``deletion_fill`` in the manifest) hold
    other faithfulness numbers: ignored with a note naming why, and explain-split replaces them."""
    old = tmp_path / "gmu"
    shutil.copytree(gmu_store, old)
    manifest_file = store_dir(old, "test") / MANIFEST
    manifest = json.loads(manifest_file.read_text())
    assert manifest.pop("deletion_fill") == "blur"
    manifest_file.write_text(json.dumps(manifest))
    movie = ds.splits["test"][0]
    found = load_explanation(old, ds.fingerprint(), movie, split="test")
    assert found.explanation is None and found.problem and "'grey'" in found.note and "explain-split" in found.note
    notes = []
    explain_split(old, tiny_data, "test", shard_size=SHARD, limit=1, progress=False, log=notes.append)
    assert any("replacing it" in n for n in notes)
    assert load_explanation(old, ds.fingerprint(), movie, split="test").explanation is not None
