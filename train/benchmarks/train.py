"""Training speed: every registered model trained from cached features, timed.

    python -m train.benchmarks.train --data ../shared/mmimdb-lite [--out /tmp/bench_ckpt]

Features must already be cached (``python -m mmgenre features``) so this times the heads only.
Checkpoints go to a temporary folder unless --out is given.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from mmgenre.models import list_models


def main(argv=None) -> int:
    from train.config import FEATURE_PRECISIONS, TrainConfig
    from train.loop import fit, load_dataset
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--out")
    p.add_argument("--models", default="all")
    p.add_argument("--n-boot", type=int, default=0)
    p.add_argument("--feature-precision", choices=FEATURE_PRECISIONS, default="fp32",
                   help="which cached features to train on")
    args = p.parse_args(argv)
    models = list_models() if args.models == "all" else args.models.split(",")
    out = args.out or tempfile.mkdtemp(prefix="mmgenre-bench-")
    ds = load_dataset(TrainConfig(data=args.data))
    total = 0.0
    print(f"{'model':<20}{'seconds':>9}{'epochs':>8}{'test micro-F1':>15}{'test macro-F1':>15}")
    for m in models:
        t0 = time.perf_counter()
        res = fit(TrainConfig(data=args.data, model=m, out=out, n_boot=args.n_boot, progress=False,
                              feature_precision=args.feature_precision), ds)
        sec = time.perf_counter() - t0
        total += sec
        print(f"{m:<20}{sec:>9.1f}{len(res.history):>8}{res.metrics['test']['micro_f1']:>15.3f}"
              f"{res.metrics['test']['macro_f1']:>15.3f}")
    print(f"{'all models':<20}{total:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
