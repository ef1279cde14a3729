"""The dashboard at full MM-IMDb size: 25,959 movies, 10 checkpoints' predictions over 7,799 test movies.

    python -m dashboard.benchmarks.rehearsal [--source ../shared/mmimdb-lite] [--n-movies 25959]
        [--checkpoints checkpoints] [--repeats 3] [--browser]

1. writes (or reuses) the rehearsal folder (``mmgenre.rehearsal.make_rehearsal``, as
   ``python -m train.benchmarks.rehearsal`` does; never inside the repository);
2. builds ``<folder>-checkpoints``: the shipped checkpoints with a prediction row for every rehearsal
   test movie (``mmgenre.rehearsal.rehearsal_checkpoints``: each row is the source movie's own
   prediction under the new id, so page timings see the real number of rows; the Compare page's
   figures on it mean nothing);
3. runs ``dashboard.benchmarks.pages`` on the two (first load = the cold run of the first page,
   then every page cold and warm, the movie picker, error browsing, Gradio) and prints the peak
   RAM of this process, which ran the Streamlit script and the Gradio app.
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    from mmgenre.data import MMIMDb
    from mmgenre.rehearsal import make_rehearsal, rehearsal_checkpoints

    from . import pages

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(REPO.parent / "shared" / "mmimdb-lite"))
    p.add_argument("--n-movies", type=int, default=25959)
    p.add_argument("--out", help="rehearsal folder (default: <tmp>/mmgenre-rehearsal-<n-movies>)")
    p.add_argument("--checkpoints", default=str(REPO / "checkpoints"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-gradio", action="store_true")
    p.add_argument("--browser", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out or Path(tempfile.gettempdir()) / f"mmgenre-rehearsal-{args.n_movies}")
    size = "FULL SIZE" if args.n_movies == 25959 else f"SMALL ({args.n_movies} movies, not full size)"
    print(f"== dashboard rehearsal, {size}: data {out}")

    t0 = time.perf_counter()
    meta = make_rehearsal(args.source, out, n_movies=args.n_movies, seed=args.seed, progress=True)
    print(f"generate: {time.perf_counter() - t0:.1f} s, splits {meta['splits']}")
    t0 = time.perf_counter()
    ckpt = Path(f"{out}-checkpoints")
    built = rehearsal_checkpoints(out, args.checkpoints, ckpt)
    size_mb = sum(f.stat().st_size for f in ckpt.rglob("predictions.csv")) / 2**20
    print(f"checkpoints: {len(built['models'])} in {ckpt}, {built['test_rows']} test + {built['dev_rows']} dev "
          f"prediction rows each, predictions.csv {size_mb:.1f} MiB in all ({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    ds = MMIMDb.load(out)
    print(f"read the folder (no poster decoding): {time.perf_counter() - t0:.1f} s, {len(ds)} movies")
    del ds

    pages.main(["--data", str(out), "--checkpoints", str(ckpt), "--repeats", str(args.repeats)]
               + (["--skip-gradio"] if args.skip_gradio else []) + (["--browser"] if args.browser else []))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RAM of this process (Streamlit pages{'' if args.skip_gradio else ' + Gradio'}): {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
