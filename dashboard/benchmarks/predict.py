"""What one prediction costs beyond its encoders: ``Predictor`` against the encoders' own forward.

    python -m dashboard.benchmarks.predict --checkpoints checkpoints --data ../shared/mmimdb-lite \\
        [--models cross_attention,text_only] [--split test] [--n 40] [--repeats 3] [--threads 2]

For ``--n`` seeded movies of ``--split`` with a poster and a plot, and each model, three times of
the same movie, each the fastest of ``--repeats`` runs (interleaved, so a noisy machine slows all
three alike):

* ``encoders``: every encoder of the model on this movie through its own entry point
  (``encode([plot])`` / ``encode([poster])``: tokenising or resizing included), nothing else;
* ``probabilities``: ``Predictor.probabilities`` on the prepared inputs (encoders + head);
* ``predict``: ``Predictor.predict(poster_path, plot)``: reading and checking the poster file,
  cleaning the plot, the model, thresholds and the result dict, as a page or the API calls it.

Prints the median / p90 / max seconds of each and the per-movie ratios probabilities / encoders
and predict / encoders (goal: predict <= 1.3x the encoders). The first movie is a warm-up and is
not counted. Nothing is written.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def _fastest(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _encoders_only(predictor, inputs):
    """A callable running each of the model's encoders on ``inputs``, as feature extraction does."""
    model = predictor.model
    max_tokens = getattr(model, "max_tokens", None) or 128
    calls = []
    for kind, enc in predictor.encoders.items():
        item = inputs.plot if kind == "text" else inputs.poster
        calls.append(lambda enc=enc, item=item: enc.encode([item], batch_size=1, max_tokens=max_tokens))

    def run():
        import torch
        with torch.no_grad():
            for call in calls:
                call()
    return run


def _summary(label: str, values: list[float], unit: str = "s") -> str:
    v = np.asarray(values, dtype=np.float64)
    return (f"  {label:<30}median {np.median(v):7.3f}{unit}  p90 {np.percentile(v, 90):7.3f}{unit}  "
            f"max {v.max():7.3f}{unit}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", default="checkpoints")
    p.add_argument("--data", help="MM-IMDb folder (default: $MMGENRE_DATA)")
    p.add_argument("--models", default="cross_attention,text_only", help="comma list of checkpoint folders")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.n < 1 or args.repeats < 1:
        p.error("--n and --repeats must be >= 1")

    import torch

    from mmgenre.data import MMIMDb, resolve_data_dir
    from mmgenre.inputs import prepare_inputs
    from mmgenre.predict import Predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    ds = MMIMDb.load(resolve_data_dir(args.data))
    movies = [m for m in ds.split(args.split) if m.has_poster and m.plot]
    rng = np.random.default_rng(args.seed)
    movies = [movies[i] for i in rng.permutation(len(movies))[: args.n + 1]]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{len(movies) - 1} {args.split} movies with a poster and a plot; torch threads {torch.get_num_threads()}; "
          f"fastest of {args.repeats} runs each; load average at start {load:.2f}")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        predictor = Predictor.from_checkpoint(os.path.join(args.checkpoints, name))
        kinds = ", ".join(f"{k} {getattr(e, 'name', type(e).__name__)}" for k, e in predictor.encoders.items())
        enc_s, prob_s, pred_s = [], [], []
        for i, m in enumerate(movies):
            inputs = prepare_inputs(m.poster_path, m.plot)
            encoders = _encoders_only(predictor, inputs)
            times = [_fastest(encoders, args.repeats),
                     _fastest(lambda: predictor.probabilities(inputs), args.repeats),
                     _fastest(lambda: predictor.predict(poster=m.poster_path, plot=m.plot), args.repeats)]
            if i == 0:
                continue  # warm-up
            for store, t in zip((enc_s, prob_s, pred_s), times):
                store.append(t)
        enc, prob, pred = (np.asarray(x) for x in (enc_s, prob_s, pred_s))
        print(f"\n{name} ({kinds or 'no neural encoder'})")
        print(_summary("encoders' own forward", enc_s))
        print(_summary("Predictor.probabilities", prob_s))
        print(_summary("Predictor.predict (from file)", pred_s))
        if not predictor.encoders:
            continue
        print(_summary("probabilities / encoders", list(prob / enc), "x"))
        print(_summary("predict / encoders", list(pred / enc), "x") + "   (goal <= 1.3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
