"""Feature-extraction speed: items/s and peak memory per encoder on this machine.

    python -m train.benchmarks.features --data ../shared/mmimdb-lite [--encoders text:minilm,image:efficientnet-lite0,detector:haar]

Each encoder runs in a fresh cache folder (nothing is reused), in its own process so that
peak RSS is that encoder's alone.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import resource
import tempfile
import time


def _run(kind: str, name: str, data: str, batch_size: int, queue, cache_root: str | None = None) -> None:
    import torch

    from mmgenre.data import MMIMDb
    from mmgenre.features import extract_features
    ds = MMIMDb.load(data)
    # cache_root (the rehearsal's) keeps the features for training; it must start empty to time extraction
    with contextlib.nullcontext(cache_root) if cache_root else tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fs = extract_features(ds, kind, name, cache_root=tmp, batch_size=batch_size, progress=True)
        seconds = time.perf_counter() - t0
    n = int(fs.present.sum())
    queue.put({"kind": kind, "encoder": name, "items": n, "seconds": round(seconds, 1),
               "items_per_s": round(n / seconds, 1), "torch_threads": torch.get_num_threads(),
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)})


def measure(data: str, encoders: str, batch_size: int = 32, cache_root: str | None = None) -> list[dict]:
    """One row per ``kind:name`` of ``encoders`` (comma-separated), each extracted in its own process."""
    ctx = mp.get_context("spawn")
    rows = []
    for spec in encoders.split(","):
        kind, name = spec.split(":", 1)
        queue = ctx.Queue()
        proc = ctx.Process(target=_run, args=(kind, name, data, batch_size, queue, cache_root))
        proc.start()
        rows.append(queue.get())
        proc.join()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--encoders", default="text:minilm,image:efficientnet-lite0,detector:haar")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    rows = measure(args.data, args.encoders, args.batch_size)
    print(f"{'encoder':<28}{'items':>7}{'seconds':>9}{'items/s':>9}{'peak MB':>9}")
    for r in rows:
        print(f"{r['kind'] + ':' + r['encoder']:<28}{r['items']:>7}{r['seconds']:>9}{r['items_per_s']:>9}{r['peak_rss_mb']:>9}")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
