"""Full-size rehearsal: MM-IMDb-sized data generated from mmimdb-lite, then the offline pipeline timed.

    python -m train.benchmarks.rehearsal [--source ../shared/mmimdb-lite] [--out /tmp/mmgenre-rehearsal-25959]
                                         [--n-movies 25959] [--models all] [--skip-train]

Steps, each printed with its figures:
1. generate (or reuse) the folder with ``mmgenre.rehearsal.make_rehearsal`` (never inside the repository);
2. validation (every poster decoded) and a plain read of the folder, timed;
3. feature extraction with the default encoders, timed per encoder in its own process
   (``train.benchmarks.features.measure``), into ``--cache`` so that training can reuse it;
4. the cache size, then every head trained from those features (``train.benchmarks.train``);
5. peak RAM: per extraction process and of this process (generation, reading, training), with the
   training's anonymous memory apart from the memory-mapped cache pages it touched.

``--features-from SMALL_FOLDER`` skips step 3: the cache is copied row by row from a smaller
rehearsal's complete cache (``mmgenre.rehearsal_features``; extraction speed is per item, measure it
there), so that training, its memory and the predictions are measured at full size in minutes.

At full size this takes hours on 2 cores; ``--n-movies 600`` checks it end to end in minutes.
A rerun reuses a complete folder and cache (the extraction figures are then cache reads, said so).
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main(argv=None) -> int:
    from mmgenre.data import MMIMDb
    from mmgenre.rehearsal import make_rehearsal

    from . import features as feature_bench  # light: torch only in its spawned processes
    from .memory import PeakMemory
    from ..config import FEATURE_PRECISIONS, TrainConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(REPO.parent / "shared" / "mmimdb-lite"))
    p.add_argument("--n-movies", type=int, default=25959)
    p.add_argument("--out", help="rehearsal folder (default: <tmp>/mmgenre-rehearsal-<n-movies>)")
    p.add_argument("--cache", help="feature cache (default: <out>-cache)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--models", default="all")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--feature-precision", choices=FEATURE_PRECISIONS, default="fp32",
                   help="extract (or copy) and train on features of this precision")
    p.add_argument("--features-from", help="a smaller rehearsal folder whose cache (<it>-cache) lends its "
                   "rows instead of extracting (see the docstring)")
    args = p.parse_args(argv)
    out = Path(args.out or Path(tempfile.gettempdir()) / f"mmgenre-rehearsal-{args.n_movies}")
    cache = Path(args.cache or f"{out}-cache")
    size = "FULL SIZE" if args.n_movies == 25959 else f"SMALL ({args.n_movies} movies, not full size)"
    print(f"== rehearsal, {size}: data {out}, cache {cache}")

    t0 = time.perf_counter()
    meta = make_rehearsal(args.source, out, n_movies=args.n_movies, seed=args.seed, progress=True)
    posters = meta["posters"]
    print(f"generate: {time.perf_counter() - t0:.1f} s, splits {meta['splits']}, posters linked {posters['link']}, "
          f"copied {posters['copy']}, already there {posters['kept']}"
          + (" (a complete folder, reused)" if not any(posters.values()) else ""))

    t0 = time.perf_counter()
    ds = MMIMDb.load(out, check_images=True)
    validate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds = MMIMDb.load(out)
    read_s = time.perf_counter() - t0
    print(f"validation (every poster decoded): {validate_s:.1f} s; read: {read_s:.1f} s; "
          f"{len(ds)} movies, {len(ds) - len(ds.report.missing_posters)} posters, "
          f"{len(ds.report.bad_files)} bad files")

    feature_root = cache / "features"
    cfg = TrainConfig()
    rows = []
    if args.features_from:
        from mmgenre.rehearsal_features import copy_rehearsal_features

        from ..data import encoder_names
        small = Path(args.features_from)
        t0 = time.perf_counter()
        copied = copy_rehearsal_features(out, small, Path(f"{small}-cache") / "features", feature_root,
                                         encoder_names(cfg), progress=True,
                                         precision=args.feature_precision)
        print(f"features COPIED from the {small} rehearsal's cache, NOT extracted "
              f"({time.perf_counter() - t0:.1f} s; extraction speed: measure it on that folder):")
        for kind, r in copied.items():
            print(f"  {kind}: {r['rows']} rows, {r['mib']:.0f} MiB{'' if r['copied'] else ' (already there)'}")
    else:
        reused = feature_root.is_dir() and any(feature_root.iterdir())
        rows = feature_bench.measure(str(out), feature_bench.default_encoders(cfg), args.batch_size,
                                     cache_root=str(feature_root),
                                     precision=args.feature_precision)
        print(f"features{' (REUSED cache: these are cache reads, not extraction)' if reused else ''}:")
        feature_bench.print_rows(rows, indent="  ")
    print(f"feature cache: {_folder_bytes(feature_root) / 2**20:.1f} MiB in {feature_root}")

    if not args.skip_train:
        from . import train as train_bench  # imports torch: after the extraction processes started, as a
        # spawned child's peak RSS starts from its parent's at the fork
        os.environ["MMGENRE_CACHE"] = str(cache)  # train's default cache root is $MMGENRE_CACHE/features
        print("training (every head from the cached features, test F1 meaningless on re-sampled data):")
        with tempfile.TemporaryDirectory(prefix="mmgenre-rehearsal-ckpt-") as ckpt, PeakMemory() as peak:
            train_bench.main(["--data", str(out), "--models", args.models, "--out", ckpt,
                              "--feature-precision", args.feature_precision])
        if PeakMemory.available():
            print(f"training memory: peak RSS {peak.rss_mb:.0f} MB = anonymous (heap) up to {peak.anon_mb:.0f} MB "
                  f"+ memory-mapped cache pages up to {peak.file_mb:.0f} MB (page cache: dropped under pressure)")
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    extraction = f"extraction {max(r['peak_rss_mb'] for r in rows)} MB (largest encoder process), " if rows else ""
    print(f"peak RAM: {extraction}this process {self_mb:.0f} MB (generation, reading"
          f"{', training' if not args.skip_train else ''})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
