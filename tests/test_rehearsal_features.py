"""mmgenre.rehearsal_features: a big rehearsal's cache copied row by row from a small one's."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mmgenre import atomic
from mmgenre.data import MMIMDb
from mmgenre.errors import InputError
from mmgenre.features import cache_dir, extract_features
from mmgenre.rehearsal import make_rehearsal
from mmgenre.rehearsal_features import copy_rehearsal_features

PLOTS = (60, 0.5, 20, 200)


def _fake_cache(ds: MMIMDb, root, kind="text", encoder="fake", precision="fp32"):
    """A complete cache whose every value is its row number (so copies can be traced)."""
    out = cache_dir(root, kind, encoder, ds.fingerprint(), precision)
    out.mkdir(parents=True)
    movies = list(ds)
    n = len(movies)
    present = np.array([m.has_plot for m in movies])
    atomic.write_npy(out / "pooled.npy", np.repeat(np.arange(n, dtype=np.float16)[:, None], 4, axis=1))
    atomic.write_npy(out / "seq.npy", np.broadcast_to(np.arange(n, dtype=np.float16)[:, None, None], (n, 5, 4)).copy())
    atomic.write_npy(out / "seq_mask.npy", np.ones((n, 5), dtype=bool))
    atomic.write_npy(out / "present.npy", present)
    atomic.write_json(out / "ids.json", [m.imdb_id for m in movies])
    atomic.write_json(out / "meta.json", {"format_version": 1, "kind": kind, "encoder": encoder,
                                          "encoder_info": {"dim": 4}, "fingerprint": ds.fingerprint(),
                                          "n": n, "n_present": int(present.sum()), "bad_files": []})


def _source(root, imdb_id):
    return json.loads((root / "dataset" / f"{imdb_id}.json").read_text())["sources"]["rehearsal_of"]


@pytest.fixture(scope="module")
def pair(tiny_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("rehearsal_features")
    small, big = base / "small", base / "big"
    make_rehearsal(tiny_data, small, n_movies=40, seed=1, plot_words=PLOTS)
    make_rehearsal(tiny_data, big, n_movies=150, seed=2, plot_words=PLOTS)
    _fake_cache(MMIMDb.load(small), base / "small-cache")
    return small, big, base


def test_every_big_movie_gets_the_rows_of_a_small_movie_copying_the_same_source(pair):
    small, big, base = pair
    report = copy_rehearsal_features(big, small, base / "small-cache", base / "big-cache", {"text": "fake"})
    assert report["text"]["copied"] and report["text"]["rows"] == 150
    big_ds, small_ds = MMIMDb.load(big), MMIMDb.load(small)
    # read back as the big folder's own cache: no encoder is built, nothing extracted
    fs = extract_features(big_ds, "text", "fake", cache_root=base / "big-cache", progress=False)
    assert fs.ids == [m.imdb_id for m in big_ds] and fs.seq.shape == (150, 5, 4)
    assert fs.meta["rehearsal_copy_of"]["dataset"] == str(small.resolve())
    small_ids = [m.imdb_id for m in small_ds]
    small_sources = {_source(small, i) for i in small_ids}
    same = 0
    for r, imdb_id in enumerate(fs.ids):
        donor = small_ids[int(fs.pooled[r, 0])]
        assert np.all(fs.seq[r] == fs.pooled[r, 0])                    # one donor row for every array
        assert bool(fs.present[r]) == small_ds[donor].has_plot
        if _source(big, imdb_id) in small_sources:
            assert _source(small, donor) == _source(big, imdb_id)      # the same lite movie
            same += 1
        else:  # a movie of the same split with the same poster / plot presence lends its rows
            assert (small_ds[donor].has_poster, small_ds[donor].has_plot) == (big_ds[imdb_id].has_poster,
                                                                               big_ds[imdb_id].has_plot)
    assert same > 0
    again = copy_rehearsal_features(big, small, base / "small-cache", base / "big-cache", {"text": "fake"})
    assert not again["text"]["copied"]                                  # complete: kept


def test_a_missing_small_cache_or_a_plain_folder_is_refused(pair, tiny_data):
    small, big, base = pair
    with pytest.raises(InputError, match="no complete image:nothing cache"):
        copy_rehearsal_features(big, small, base / "small-cache", base / "other", {"image": "nothing"})
    with pytest.raises(InputError, match="not a rehearsal copy"):
        copy_rehearsal_features(tiny_data, small, base / "small-cache", base / "other", {"text": "fake"})


def test_a_bf16_cache_is_copied_into_a_bf16_cache(pair):
    small, big, base = pair
    _fake_cache(MMIMDb.load(small), base / "small-cache-bf16", precision="bf16")
    with pytest.raises(InputError, match="no complete text:fake cache"):  # only a bf16 one there
        copy_rehearsal_features(big, small, base / "small-cache-bf16", base / "big-bf16", {"text": "fake"})
    report = copy_rehearsal_features(big, small, base / "small-cache-bf16", base / "big-bf16", {"text": "fake"},
                                     precision="bf16")
    assert report["text"]["path"] == str(cache_dir(base / "big-bf16", "text", "fake",
                                                   MMIMDb.load(big).fingerprint(), "bf16"))
    assert report["text"]["path"].endswith("-bf16") and report["text"]["rows"] == len(MMIMDb.load(big))
