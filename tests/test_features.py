"""Feature cache: shapes, missing modalities, resumption after an interruption, atomicity."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmgenre.data import MMIMDb
from mmgenre.errors import InputError
from mmgenre.features import cache_dir, extract_features, load_features


@pytest.fixture(scope="module")
def tiny(tiny_data):
    return MMIMDb.load(tiny_data)


@pytest.mark.parametrize("kind,name", [("text", "minilm"), ("image", "efficientnet-lite0"), ("detector", "haar")])
def test_extract_shapes_and_missing_rows(tiny, tmp_path, kind, name):
    fs = extract_features(tiny, kind, name, cache_root=tmp_path, progress=False, shard_size=16)
    assert fs.ids == [m.imdb_id for m in tiny]
    assert fs.pooled.dtype == np.float16 and fs.pooled.shape[0] == len(tiny)
    expected = [m.has_plot for m in tiny] if kind == "text" else [m.has_poster for m in tiny]
    assert fs.present.tolist() == expected
    missing = ~fs.present
    assert missing.any(), "the tiny set has movies without this modality"
    assert np.all(fs.pooled[missing] == 0)
    if kind != "detector":  # Haar may rightly find nothing on a generated poster
        assert np.abs(fs.pooled[fs.present].astype(np.float32)).sum(axis=1).min() > 0
    if kind == "detector":
        assert fs.seq is None
    else:
        assert fs.seq.shape[:2] == fs.seq_mask.shape and fs.seq.shape[2] == fs.dim
        assert not fs.seq_mask[missing].any()
        assert fs.seq_mask[fs.present].any(axis=1).all()
    assert fs.meta["encoder_info"]["name"]
    # second call reads the cache (no encoder needed)
    again = extract_features(tiny, kind, name, cache_root=tmp_path, encoder=object(), progress=False)
    np.testing.assert_array_equal(np.asarray(again.pooled), np.asarray(fs.pooled))


def test_interrupted_run_resumes_to_identical_result(tiny, tmp_path):
    full = extract_features(tiny, "text", "minilm", cache_root=tmp_path / "a", progress=False, shard_size=10)
    partial = extract_features(tiny, "text", "minilm", cache_root=tmp_path / "b", progress=False,
                               shard_size=10, stop_after_shards=2)
    assert partial is None
    out = cache_dir(tmp_path / "b", "text", "minilm", tiny.fingerprint())
    assert not (out / "meta.json").exists()
    with pytest.raises(InputError, match="not a complete feature cache"):
        load_features(out)
    assert len(list((out / "shards").glob("shard-*.npz"))) == 2
    # a half-written temp file left by a kill is ignored
    (out / "shards" / ".shard-00002.npz.garbage.tmp").write_bytes(b"\x00" * 10)
    resumed = extract_features(tiny, "text", "minilm", cache_root=tmp_path / "b", progress=False, shard_size=10)
    for key in ("pooled", "seq", "seq_mask", "present"):
        np.testing.assert_array_equal(np.asarray(getattr(resumed, key)), np.asarray(getattr(full, key)))
    assert json.loads((out / "ids.json").read_text()) == full.ids


def test_damaged_shard_is_recomputed(tiny, tmp_path):
    extract_features(tiny, "detector", "haar", cache_root=tmp_path, progress=False, shard_size=10,
                     stop_after_shards=1)
    out = cache_dir(tmp_path, "detector", "haar", tiny.fingerprint())
    (out / "shards" / "shard-00000.npz").write_bytes(b"not an npz")
    fs = extract_features(tiny, "detector", "haar", cache_root=tmp_path, progress=False, shard_size=10)
    assert fs.pooled.shape[0] == len(tiny)


def test_unknown_ids_raise_input_error(tiny, tmp_path):
    fs = extract_features(tiny, "detector", "haar", cache_root=tmp_path, progress=False)
    with pytest.raises(InputError, match="no cached detector features"):
        fs.rows(["0000000"])


def test_poster_prefetch_gives_the_features_of_decoding_in_turn(tiny, tmp_path):
    # The next shard's posters are decoded in a thread during the current shard's forward pass;
    # the cache must not depend on it (order, values, bad files per shard).
    runs = {p: extract_features(tiny, "image", "efficientnet-lite0", cache_root=tmp_path / str(p),
                                progress=False, shard_size=7, prefetch=p) for p in (True, False)}
    assert runs[True].ids == runs[False].ids == [m.imdb_id for m in tiny]
    for key in ("pooled", "seq", "seq_mask", "present"):
        np.testing.assert_array_equal(np.asarray(getattr(runs[True], key)), np.asarray(getattr(runs[False], key)))


def test_a_bad_poster_found_ahead_stops_after_the_shards_before_it(tiny_data, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    ds = MMIMDb.load(root)
    victim = [m for m in ds if m.has_poster][-1]
    bad_shard = [m.imdb_id for m in ds].index(victim.imdb_id) // 7
    assert bad_shard >= 2
    victim.poster_path.write_bytes(b"not a jpeg")
    with pytest.raises(InputError):
        extract_features(ds, "image", "efficientnet-lite0", cache_root=tmp_path / "c", progress=False, shard_size=7)
    out = cache_dir(tmp_path / "c", "image", "efficientnet-lite0", ds.fingerprint())
    shards = sorted((out / "shards").glob("shard-*.npz"))
    assert len(shards) == bad_shard                          # every shard before the bad one written
    assert not (out / "meta.json").exists()


def test_consolidation_appends_shards_into_the_npy_files(tmp_path):
    from mmgenre.features import _consolidate

    rng = np.random.default_rng(0)
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    parts = [{"ids": np.array([f"{s}{i:06d}" for i in range(n)]), "bad": np.array([[f"p{s}", "broken"]] * s, dtype=str),
              "pooled": rng.standard_normal((n, 4)).astype(np.float16),
              "seq": rng.standard_normal((n, 3, 4)).astype(np.float16),
              "present": rng.random(n) > 0.3} for s, n in enumerate((5, 5, 2))]
    for s, arrays in enumerate(parts):
        np.savez(shard_dir / f"shard-{s:05d}.npz", **arrays)

    class Encoder:
        def describe(self):
            return {"name": "fake"}

    class Data:
        def fingerprint(self):
            return "fp"

    _consolidate(tmp_path, shard_dir, 3, "text", Encoder(), "fake", Data())
    fs = load_features(tmp_path, mmap=False)
    assert fs.ids == [i for p in parts for i in p["ids"].tolist()]
    for key in ("pooled", "seq", "present"):
        np.testing.assert_array_equal(getattr(fs, key), np.concatenate([p[key] for p in parts]))
    assert fs.meta["n_present"] == sum(int(p["present"].sum()) for p in parts)
    assert fs.meta["bad_files"] == [["p1", "broken"], ["p2", "broken"], ["p2", "broken"]]
    assert not shard_dir.exists()


@pytest.mark.parametrize("kind,name", [("text", "minilm"), ("image", "efficientnet-lite0")])
def test_bf16_extraction_has_its_own_cache_and_the_fp32_features(tiny, tmp_path, kind, name):
    fp32 = extract_features(tiny, kind, name, cache_root=tmp_path, progress=False)
    bf16 = extract_features(tiny, kind, name, cache_root=tmp_path, progress=False, precision="bf16")
    out = cache_dir(tmp_path, kind, name, tiny.fingerprint(), "bf16")
    assert Path(bf16.meta["path"]) == out and out.name.endswith("-bf16") and out != Path(fp32.meta["path"])
    assert bf16.meta["precision"] == "bf16" and fp32.meta["precision"] == "fp32"
    assert bf16.ids == fp32.ids and np.array_equal(bf16.present, fp32.present)
    a = np.asarray(fp32.pooled, dtype=np.float32)[fp32.present]
    b = np.asarray(bf16.pooled, dtype=np.float32)[bf16.present]
    assert not np.array_equal(a, b)  # really computed in bfloat16
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() > 0.995, cosine.min()
    # read back from its own cache, not recomputed and not the fp32 one
    again = extract_features(tiny, kind, name, cache_root=tmp_path, progress=False, precision="bf16")
    np.testing.assert_array_equal(np.asarray(again.pooled), np.asarray(bf16.pooled))


def test_an_unknown_precision_fails_before_any_work(tiny, tmp_path):
    with pytest.raises(InputError, match="precision 'fp8' is not one of fp32, bf16"):
        extract_features(tiny, "text", "minilm", cache_root=tmp_path, progress=False, precision="fp8")
    assert not any(tmp_path.iterdir())
