"""Feature-extraction speed: items/s and peak memory per encoder on this machine.

    python -m train.benchmarks.features --data ../shared/mmimdb-lite [--encoders text:minilm,image:efficientnet-lite0,detector:haar]

``--encoders`` defaults to the default encoders (the ones ``python -m train`` extracts).

Each encoder runs in a fresh cache folder (nothing is reused), in its own process so that
peak RSS is that encoder's alone. In the same process, the encoder's forward pass alone is timed on
``--probe`` movies whose inputs were prepared beforehand (plots tokenised, posters decoded and
resized), with the encoder the extraction used. Loading the encoder is timed apart (``load s``), so
``items/s`` is the per-item rate that scales with the dataset. ``forward/s`` is what the model itself
can do here, and ``pipeline/forward`` says how much of it the extraction (reading, decoding,
tokenising, writing) keeps. ``in model`` is the share of the extraction's own time spent inside the
encoder's forward, timed on the same batches during the run: 1.0 means reading and tokenising cost
nothing beside it; the probe is a separate measurement and moves with this machine's load.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import resource
import tempfile
import time

from train.config import FEATURE_PRECISIONS, TrainConfig  # light: no torch in the parent process


def forward_only(encoder, kind: str, movies: list, batch_size: int, probe: int) -> tuple[int, float] | None:
    """(items, seconds) of the encoder's forward alone over the first ``probe`` movies having its
    input, batched as extraction batches them; None for a detector (its detection is the work)."""
    import torch

    from mmgenre.poster import load_poster
    if kind == "text":
        plots = [m.plot for m in movies if m.plot.strip()][:probe]
        plots.sort(key=lambda p: -len(p))  # longest first, as extraction orders its batches
        batches = [encoder.tokenize(plots[i:i + batch_size]) for i in range(0, len(plots), batch_size)]
        run = lambda b: encoder(b["input_ids"], b["attention_mask"])  # noqa: E731
        n = len(plots)
    elif kind == "image":
        batch_size = encoder.extraction_batch(batch_size)  # as ImageEncoder.encode batches
        posters = [load_poster(m.poster_path) for m in movies if m.poster_path is not None][:probe]
        batches = [encoder.preprocess_batch(posters[i:i + batch_size]) for i in range(0, len(posters), batch_size)]
        run = encoder
        n = len(posters)
    else:
        return None
    with torch.inference_mode():
        run(batches[0])  # warm-up (first-call allocations), not timed
        t0 = time.perf_counter()
        for b in batches:
            run(b)
        return n, time.perf_counter() - t0


def _run(kind: str, name: str, data: str, batch_size: int, queue, cache_root: str | None = None,
         probe: int = 256, precision: str = "fp32") -> None:
    import torch

    from mmgenre.data import MMIMDb
    from mmgenre.encoders import build_encoder
    from mmgenre.features import extract_features, extraction_autocast
    ds = MMIMDb.load(data)
    # Built once and timed apart (MPNet joins its split zip): a fixed cost, not a per-item one
    t0 = time.perf_counter()
    encoder = build_encoder(kind, name)
    load_seconds = time.perf_counter() - t0
    in_model = _time_forward_calls(encoder)
    # cache_root (the rehearsal's) keeps the features for training; it must start empty to time extraction
    with contextlib.nullcontext(cache_root) if cache_root else tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fs = extract_features(ds, kind, name, cache_root=tmp, encoder=encoder, batch_size=batch_size,
                              progress=True, precision=precision)
        seconds = time.perf_counter() - t0
    if in_model is not None:
        del encoder.forward  # back to the class's forward for the probe below
    n = int(fs.present.sum())
    peak_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    with extraction_autocast(encoder, precision):  # the forward alone in the extraction's precision
        fwd = forward_only(encoder, kind, list(ds)[:4 * probe], batch_size, probe) if probe else None
    queue.put({"kind": kind, "encoder": name, "precision": precision, "items": n, "load_seconds": round(load_seconds, 1),
               "seconds": round(seconds, 1), "items_per_s": round(n / seconds, 1),
               "torch_threads": torch.get_num_threads(), "peak_rss_mb": peak_mb,
               "forward_items_per_s": round(fwd[0] / fwd[1], 1) if fwd else None,
               "in_model_share": round(in_model[0] / seconds, 3) if in_model else None})


def _time_forward_calls(encoder) -> list[float] | None:
    """Wraps ``encoder.forward`` (on the instance) to add up the seconds the extraction spends inside
    the model: ``[seconds]`` (None for a detector, which has no torch forward). Their share of the
    extraction's time is measured on the same batches at the same moments, unlike the separate
    probe (this machine's speed drifts by ~20% over an hour)."""
    real = getattr(encoder, "forward", None)
    if real is None:
        return None
    spent = [0.0]

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0

    encoder.forward = timed
    return spent


def measure(data: str, encoders: str, batch_size: int = 32, cache_root: str | None = None,
            probe: int = 256, precision: str = "fp32") -> list[dict]:
    """One row per ``kind:name`` of ``encoders`` (comma-separated), each extracted in its own process
    (``probe``: movies for the forward-only figure; 0 skips it)."""
    ctx = mp.get_context("spawn")
    rows = []
    for spec in encoders.split(","):
        kind, name = spec.split(":", 1)
        queue = ctx.Queue()
        proc = ctx.Process(target=_run, args=(kind, name, data, batch_size, queue, cache_root, probe, precision))
        proc.start()
        rows.append(queue.get())
        proc.join()
    return rows


def print_rows(rows: list[dict], indent: str = "") -> None:
    print(f"{indent}{'encoder':<32}{'load s':>8}{'items':>7}{'seconds':>9}{'items/s':>9}{'forward/s':>11}"
          f"{'pipeline/forward':>18}{'in model':>10}{'peak MB':>9}")
    for r in rows:
        fwd = r.get("forward_items_per_s")
        ratio = f"{r['items_per_s'] / fwd:.2f}" if fwd else "-"
        name = f"{r['kind']}:{r['encoder']}" + (f" ({r['precision']})" if r.get("precision", "fp32") != "fp32" else "")
        print(f"{indent}{name:<32}{r.get('load_seconds', '-'):>8}{r['items']:>7}{r['seconds']:>9}{r['items_per_s']:>9}"
              f"{fwd if fwd else '-':>11}{ratio:>18}{r.get('in_model_share') or '-':>10}{r['peak_rss_mb']:>9}")


def default_encoders(cfg: TrainConfig | None = None) -> str:
    """``text:...,image:...,detector:...``: the encoders ``cfg`` names (default: what a default
    ``python -m train`` extracts)."""
    cfg = cfg or TrainConfig(data="")
    return f"text:{cfg.text_encoder},image:{cfg.image_encoder},detector:{cfg.detector}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--encoders", default=default_encoders(),
                   help="comma list of kind:name (default: the default encoders, %(default)s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--probe", type=int, default=256, help="movies timed through the forward pass alone (0: skip)")
    p.add_argument("--precision", choices=FEATURE_PRECISIONS, default="fp32", help="the extraction's precision")
    args = p.parse_args(argv)
    rows = measure(args.data, args.encoders, args.batch_size, probe=args.probe, precision=args.precision)
    print_rows(rows)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
