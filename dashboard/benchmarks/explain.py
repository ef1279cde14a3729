"""Explanation speed and faithfulness over test movies that have a poster.

    python -m dashboard.benchmarks.explain --checkpoint checkpoints/cross_attention \\
        --data ../shared/mmimdb-lite --n 20 [--sanity] [--ig-steps 32] [--threads 2]

Per movie it explains the default genres (predicted, else top 3; with --top K its K most probable
genres) and reports:
  * seconds of a full explanation and of Grad-CAM per genre (median, p90, max);
  * the ratio of the full explanation to one prediction of the same movie, timed just before it
    in the same run (so a noisy, shared machine slows both);
  * Grad-CAM deletion: share of movies where blurring the CAM's top 20% (the default deletion) lowers the logit more
    than blurring random 20% blobs (mean drop over the movie's genres; goal >= 80%), and the
    same share over (movie, genre) pairs;
  * Integrated Gradients completeness: median relative gap |sum(attr) - (f(x) - f(b))| / |f(x) - f(b)|
    (goal < 5%);
  * with --sanity, the model-randomisation check: median Spearman correlation between the maps of
    the trained head and of a re-initialised copy (low = the maps depend on the model).
The first explanation is a warm-up and is not timed. Nothing is written.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def _quantiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    v = np.asarray(values, dtype=np.float64)
    return f"median {np.median(v):.3f}  p90 {np.percentile(v, 90):.3f}  max {v.max():.3f}  (n={len(v)})"


def _median(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return f"{np.median(vals):.3f} (n={len(vals)})" if vals else "n/a"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", help="MM-IMDb folder (default: $MMGENRE_DATA)")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=20, help="number of movies (a seeded sample of those with a poster)")
    p.add_argument("--ig-steps", type=int, default=32)
    p.add_argument("--top", type=int, help="explain each movie's TOP most probable genres (default: the predicted)")
    p.add_argument("--sanity", action="store_true", help="also run the model-randomisation check")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch

    from mmgenre.data import MMIMDb, resolve_data_dir
    from mmgenre.explain import explain_prediction
    from mmgenre.explain.sanity import randomisation_sanity
    from mmgenre.genres import GENRES
    from mmgenre.inputs import prepare_inputs
    from mmgenre.predict import Predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = Predictor.from_checkpoint(args.checkpoint)
    ds = MMIMDb.load(resolve_data_dir(args.data))
    movies = [m for m in ds.split(args.split) if m.has_poster and m.plot]
    rng = np.random.default_rng(args.seed)
    movies = [movies[i] for i in rng.permutation(len(movies))[: args.n + 1]]
    if len(movies) < 2:
        print(f"not enough {args.split} movies with a poster in {ds.root}", file=sys.stderr)
        return 2

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"model {predictor.name}  checkpoint {args.checkpoint}  movies {len(movies) - 1}  ig_steps {args.ig_steps}  "
          f"torch threads {torch.get_num_threads()}  load average at start {load:.2f}")
    totals, predictions, ratios, cam_per_genre, ig_secs, n_genres, n_tokens = [], [], [], [], [], [], []
    parts: dict[str, list[float]] = {}
    steps: list[float] = []
    movie_beats, pair_beats, ig_rel, cam_rho, tok_rho = [], [], [], [], []
    for k, movie in enumerate(movies):
        inputs = prepare_inputs(movie.poster_path, movie.plot)
        t0 = time.perf_counter()
        probs = predictor.probabilities(inputs)
        predicted = time.perf_counter() - t0
        genres = [GENRES[i] for i in np.argsort(-probs)[:args.top]] if args.top else None
        t0 = time.perf_counter()
        exp = explain_prediction(predictor, inputs, genres, ig_steps=args.ig_steps, random_seed=args.seed)
        seconds = time.perf_counter() - t0
        if k == 0:
            continue  # warm-up
        totals.append(seconds)
        predictions.append(predicted)
        ratios.append(seconds / predicted)
        for name, sec in exp.timings.items():
            parts.setdefault(name, []).append(sec)
        n_genres.append(len(exp.genres))
        n_tokens.append(len(exp.words))
        if exp.text_steps:
            steps.append(float(exp.text_steps))
        if exp.poster_cam:
            cam_per_genre.append(exp.timings.get("gradcam", 0.0) / len(exp.genres))
        if "text_attribution" in exp.timings:
            ig_secs.append(exp.timings["text_attribution"])
        deletion = exp.faithfulness.get("deletion", {})
        if deletion:
            pair_beats += [d["beats_random"] for d in deletion.values()]
            movie_beats.append(np.mean([d["top_drop"] for d in deletion.values()])
                               > np.mean([d["random_drop"] for d in deletion.values()]))
        ig_rel += [c["rel"] for c in exp.faithfulness.get("ig_completeness", {}).values()]
        if args.sanity:
            res = randomisation_sanity(predictor, inputs, exp, seed=args.seed, ig_steps=args.ig_steps)
            cam_rho += list(res["cam"].values())
            tok_rho += list(res["tokens"].values())
        print(f"  {movie.imdb_id}  {seconds:6.2f}s  ({seconds / predicted:4.1f}x one prediction)  genres {','.join(exp.genres)}  words {len(exp.words)}",
              flush=True)

    print()
    print(f"{'full explanation (s)':<34}{_quantiles(totals)}")
    print(f"{'one prediction (s)':<34}{_quantiles(predictions)}")
    print(f"{'explanation / prediction':<34}{_quantiles(ratios)}")
    print(f"{'Grad-CAM per genre (s)':<34}{_quantiles(cam_per_genre)}")
    print(f"{'Integrated Gradients (s)':<34}{_quantiles(ig_secs)}")
    print("  median seconds per part: " + ", ".join(f"{k} {np.median(v):.3f}" for k, v in parts.items()))
    print(f"{'genres explained per movie':<34}{_quantiles([float(g) for g in n_genres])}")
    print(f"{'words per plot':<34}{_quantiles([float(w) for w in n_tokens])}")
    print(f"{'IG steps (most over genres)':<34}{_quantiles(steps)}")
    if movie_beats:
        print(f"{'deletion beats random (movies)':<34}{np.mean(movie_beats):.0%} of {len(movie_beats)}  (goal >= 80%)")
        print(f"{'deletion beats random (pairs)':<34}{np.mean(pair_beats):.0%} of {len(pair_beats)}")
    if ig_rel:
        print(f"{'IG relative delta':<34}median {np.median(ig_rel):.2%}  p90 {np.percentile(ig_rel, 90):.2%}"
              f"  (goal median < 5%)")
    if args.sanity:
        print(f"{'randomised head: CAM Spearman':<34}median {_median(cam_rho)}")
        print(f"{'randomised head: words Spearman':<34}median {_median(tok_rho)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
