"""mmgenre.rehearsal: an MM-IMDb-shaped folder re-sampled from a source set (small n here)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mmgenre.data import MMIMDb
from mmgenre.errors import InputError
from mmgenre.rehearsal import META_FILE, _scaled_splits, make_rehearsal, rehearsal_checkpoints

N = 120


@pytest.fixture(scope="module")
def rehearsal(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rehearsal") / "data"
    make_rehearsal(tiny_data, out, n_movies=N, seed=3, plot_words=(120, 0.5, 40, 400))
    return out


def test_layout_sizes_and_valid_json(rehearsal, tiny_data):
    assert {p.name for p in rehearsal.iterdir()} == {"split.json", "dataset", META_FILE}
    splits = json.loads((rehearsal / "split.json").read_text())
    assert {k: len(v) for k, v in splits.items()} == dict(zip(("train", "dev", "test"), _scaled_splits(N)))
    ids = [i for v in splits.values() for i in v]
    assert len(ids) == len(set(ids)) == N and all(len(i) == 7 and i.isdigit() for i in ids)
    files = sorted(p.name for p in (rehearsal / "dataset").iterdir())
    assert not [f for f in files if f.startswith(".")]                    # no temporary files left
    for i in ids:
        rec = json.loads((rehearsal / "dataset" / f"{i}.json").read_text(encoding="utf-8"))
        assert rec["imdb_id"] == i and rec["genres"] and isinstance(rec["plot"], list) and 1 <= len(rec["plot"]) <= 3
        assert len(" ".join(rec["plot"]).split()) >= 40                     # lengthened to the drawn size
        src = MMIMDb.load(tiny_data)[rec["sources"]["rehearsal_of"]]
        assert rec["genres"] == list(src.genres)
        poster = rehearsal / "dataset" / f"{i}.jpeg"
        assert poster.is_file() == (src.poster_path is not None)
        if poster.is_file():  # a hard link on one filesystem: no extra disk
            assert os.path.samefile(poster, src.poster_path)


def test_no_id_collides_with_the_source_and_each_split_draws_from_its_own(rehearsal, tiny_data):
    source = MMIMDb.load(tiny_data)
    ds = MMIMDb.load(rehearsal, check_images=True)                         # validation passes
    assert len(ds) == N and not ds.report.bad_files and not ds.report.duplicate_ids
    assert not set(ds.movies) & set(source.movies)
    for name in ("train", "dev", "test"):
        for i in ds.splits[name]:
            rec = json.loads((rehearsal / "dataset" / f"{i}.json").read_text())
            assert source[rec["sources"]["rehearsal_of"]].split == name


def test_a_killed_run_is_finished_by_a_rerun_with_the_same_result(rehearsal, tiny_data, tmp_path):
    out = tmp_path / "data"
    make_rehearsal(tiny_data, out, n_movies=N, seed=3, plot_words=(120, 0.5, 40, 400))
    want = MMIMDb.load(out).fingerprint()
    assert want == MMIMDb.load(rehearsal).fingerprint()                   # deterministic
    # As if killed mid-way: no split.json yet, some movies missing, a stale temporary file.
    (out / "split.json").unlink()
    victims = sorted((out / "dataset").glob("*.json"))[::3]
    for f in victims:
        f.unlink()
        f.with_suffix(".jpeg").unlink(missing_ok=True)
    (out / "dataset" / ".x.json.999.tmp").write_text("{half")
    posters = make_rehearsal(tiny_data, out, n_movies=N, seed=3, plot_words=(120, 0.5, 40, 400))["posters"]
    assert posters["kept"] > 0 and posters["link"] + posters["copy"] > 0
    assert MMIMDb.load(out).fingerprint() == want
    assert make_rehearsal(tiny_data, out, n_movies=N, seed=3, plot_words=(120, 0.5, 40, 400))["posters"] == \
        {"link": 0, "copy": 0, "kept": 0}                                 # complete: reused as it is


def test_bad_parameters_and_folders_are_refused(rehearsal, tiny_data, tmp_path):
    with pytest.raises(InputError, match="other parameters.*seed"):
        make_rehearsal(tiny_data, rehearsal, n_movies=N, seed=4, plot_words=(120, 0.5, 40, 400))
    with pytest.raises(InputError, match="summing to n_movies"):
        make_rehearsal(tiny_data, tmp_path / "a", n_movies=10, splits=(5, 2, 2))
    with pytest.raises(InputError, match="inside the repository"):
        make_rehearsal(tiny_data, Path(__file__).resolve().parents[1] / "rehearsal", n_movies=10)
    with pytest.raises(InputError, match="inside the source folder"):
        make_rehearsal(tiny_data, tiny_data / "more", n_movies=10)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        make_rehearsal(tiny_data, tmp_path / "busy", n_movies=10)


def test_full_size_defaults_are_the_official_splits():
    assert _scaled_splits(25959) == (15552, 2608, 7799)


def _fake_checkpoint(root: Path, name: str, source: MMIMDb, splits=("dev", "test")) -> Path:
    """A checkpoint folder as the dashboard reads it: config, weights, one prediction row per movie."""
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model": name}))
    (d / "model.safetensors").write_bytes(b"weights")
    rows = ["imdb_id,split,true_genres,p_Drama"]
    for k, s in enumerate(splits):
        rows += [f"{i},{s},{'|'.join(source[i].genres)},0.{k}{j % 10}" for j, i in enumerate(source.splits[s])]
    (d / "predictions.csv").write_text("\n".join(rows) + "\n")
    return d


def test_rehearsal_checkpoints_give_every_test_movie_its_source_prediction(rehearsal, tiny_data, tmp_path):
    import pandas as pd

    source = MMIMDb.load(tiny_data)
    shipped = tmp_path / "shipped"
    for name in ("gmu", "text_only"):
        _fake_checkpoint(shipped, name, source)
    (shipped / "leaderboard.csv").write_text("model\ngmu\n")
    out = tmp_path / "ckpt"
    built = rehearsal_checkpoints(rehearsal, shipped, out)
    splits = json.loads((rehearsal / "split.json").read_text())
    assert built == {"models": ["gmu", "text_only"], "test_rows": len(splits["test"]), "dev_rows": len(splits["dev"])}
    assert (out / "leaderboard.csv").is_file() and os.path.samefile(out / "gmu" / "model.safetensors",
                                                                    shipped / "gmu" / "model.safetensors")
    src = pd.read_csv(shipped / "gmu" / "predictions.csv", dtype={"imdb_id": str}).set_index("imdb_id")
    got = pd.read_csv(out / "gmu" / "predictions.csv", dtype={"imdb_id": str}).set_index("imdb_id")
    assert sorted(got.index) == sorted(splits["dev"] + splits["test"])
    for i, row in got.iterrows():
        of = json.loads((rehearsal / "dataset" / f"{i}.json").read_text())["sources"]["rehearsal_of"]
        assert row.to_dict() == src.loc[of].to_dict()                     # the source's row, new id
    # Checkpoints without a prediction for some source test movie: refused, nothing half-written.
    bad = tmp_path / "bad"
    _fake_checkpoint(bad, "gmu", source, splits=("dev",))
    with pytest.raises(InputError, match="no prediction for source movie"):
        rehearsal_checkpoints(rehearsal, bad, tmp_path / "ckpt2")
    assert not (tmp_path / "ckpt2" / "gmu" / "predictions.csv").exists()
    with pytest.raises(InputError, match="not a complete rehearsal"):
        rehearsal_checkpoints(tiny_data, shipped, tmp_path / "ckpt3")
