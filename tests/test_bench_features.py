"""train.benchmarks.features: one encoder's row (load apart, extraction, forward alone) and its table."""
from __future__ import annotations

from mmgenre.data import MMIMDb
from mmgenre.encoders import build_encoder
from train.benchmarks import features as bench


class _Queue:
    def __init__(self):
        self.items = []

    def put(self, item):
        self.items.append(item)


def test_a_row_times_loading_apart_and_the_forward_pass_with_the_same_encoder(tiny_data, monkeypatch):
    built = []
    real = bench.forward_only
    monkeypatch.setattr(bench, "forward_only", lambda enc, *a: built.append(enc) or real(enc, *a))
    q = _Queue()
    bench._run("image", "efficientnet-lite0", str(tiny_data), 32, q, probe=5)
    (row,) = q.items
    n_posters = sum(m.poster_path is not None for m in MMIMDb.load(tiny_data))
    assert row["items"] == n_posters > 0
    assert row["load_seconds"] > 0 and row["seconds"] > 0 and row["forward_items_per_s"] > 0
    assert abs(row["items_per_s"] * row["seconds"] - n_posters) <= 0.05 * n_posters + 1  # both rounded
    assert len(built) == 1 and built[0].name == "efficientnet-lite0"  # the extraction's own encoder
    assert 0 < row["in_model_share"] <= 1  # time inside the forward, during the extraction itself
    assert "forward" not in vars(built[0])  # the timing wrapper is gone again


def test_a_detector_row_has_no_in_model_share(tiny_data):
    q = _Queue()
    bench._run("detector", "haar", str(tiny_data), 32, q, probe=0)
    (row,) = q.items
    assert row["in_model_share"] is None and row["forward_items_per_s"] is None
    bench.print_rows(q.items)


def test_forward_only_batches_posters_as_extraction_does(tiny_data):
    enc = build_encoder("image", "efficientnet-lite0")
    sizes = []
    real = enc.forward
    enc.forward = lambda pixels: sizes.append(pixels.shape[0]) or real(pixels)
    n, seconds = bench.forward_only(enc, "image", list(MMIMDb.load(tiny_data)), 32, 20)
    assert seconds > 0 and sum(sizes[1:]) == n  # the first call is the untimed warm-up
    assert max(sizes) == min(32, enc.cpu_batch)
    assert bench.forward_only(enc, "detector", [], 32, 4) is None


def test_the_table_gives_the_pipeline_to_forward_ratio(capsys):
    bench.print_rows([{"kind": "text", "encoder": "mpnet", "load_seconds": 2.0, "items": 600, "seconds": 200.0,
                       "items_per_s": 3.0, "peak_rss_mb": 1700, "forward_items_per_s": 4.0,
                       "in_model_share": 0.995},
                      {"kind": "detector", "encoder": "haar", "items": 10, "seconds": 1.0,
                       "items_per_s": 10.0, "peak_rss_mb": 300, "forward_items_per_s": None}])
    lines = capsys.readouterr().out.splitlines()
    assert "load s" in lines[0] and "pipeline/forward" in lines[0] and "in model" in lines[0]
    assert lines[1].split()[-3:-1] == ["0.75", "0.995"] and lines[2].split()[-3:-1] == ["-", "-"]


def test_the_default_encoder_list_is_the_default_encoders():
    from mmgenre.encoders import default_encoder
    expected = ",".join(f"{kind}:{default_encoder(kind)}" for kind in ("text", "image", "detector"))
    assert bench.default_encoders() == expected
