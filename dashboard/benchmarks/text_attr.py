"""Plot attributions on long plots: the fast method (IG at the text encoder output) vs deep (IG at
the word embeddings), with the time of one prediction of the same movie measured in the same run.

    python -m dashboard.benchmarks.text_attr --checkpoint checkpoints/text_only \\
        --data ../shared/mmimdb-lite --n 10 [--split dev] [--min-words 200] [--threads 2] [--no-deep]
    python -m dashboard.benchmarks.text_attr --mpnet-random-head --data ../shared/mmimdb-lite --n 3

Per method it prints the median / max seconds of the plot attributions (``text_attribution``) and
of the full explanation (default genres: predicted, else top 3), their median ratio to one
prediction (``Predictor.predict``) of the same movie, the IG steps used, the completeness gap
median |sum(word scores) - (f(x) - f(b))| / |f(x) - f(b)|, the word deletion test (share of
(movie, genre) pairs where deleting the top 20% words lowers the logit more than deleting random
20% of the words, mean of 3 draws), the Grad-CAM deletion share when the model has a poster
branch, and the median Spearman correlation of the word scores with the deep method's.
``--mpnet-random-head`` times IG alone for an MPNet text encoder under a random text_only head.
The first movie is a warm-up and is not counted. Nothing is written.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

DELETE_SHARE, RANDOM_DRAWS = 0.2, 3


def _logits(predictor, poster, plot: str) -> np.ndarray:
    from mmgenre.inputs import prepare_inputs
    p = np.clip(predictor.model.probabilities(prepare_inputs(poster, plot)).astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def _without(words: list[str], drop) -> str:
    drop = set(int(i) for i in drop)
    kept = [w for i, w in enumerate(words) if i not in drop]
    return " ".join(kept) or "."


def _word_deletion(predictor, poster, exp, base: np.ndarray, random_logits: list[np.ndarray]) -> list[bool]:
    """Per explained genre: does deleting its top words lower the logit more than random deletions?"""
    from mmgenre.genres import GENRE_INDEX
    k = max(1, int(round(DELETE_SHARE * len(exp.words))))
    out = []
    for g, scores in exp.token_scores.items():
        t = GENRE_INDEX[g]
        top = _logits(predictor, poster, _without(exp.words, np.argsort(-scores)[:k]))
        out.append(bool(base[t] - top[t] > np.mean([base[t] - r[t] for r in random_logits])))
    return out


def _mpnet_random_head(args, movies) -> int:
    import torch

    from mmgenre.batching import live_batch
    from mmgenre.encoders import build_encoder
    from mmgenre.explain.text_attr import IdsToLogits, TokenIntegratedGradients, WordIntegratedGradients
    from mmgenre.heads import build_head
    from mmgenre.inputs import prepare_inputs

    enc = build_encoder("text", "mpnet")
    torch.manual_seed(args.seed)
    head = build_head("text_only", {"text": enc.dim}).eval()
    print(f"mpnet ({enc.dim}-d) under a random text_only head, {len(movies) - 1} movies, 3 genres")
    secs: dict[str, list[float]] = {"predict": [], "fast": [], "deep": []}
    for i, movie in enumerate(movies):
        inputs = prepare_inputs(None, movie.plot)
        t0 = time.perf_counter()
        with torch.no_grad():
            batch = live_batch({"text": enc}, inputs, None)
            head(batch)
        t_pred = time.perf_counter() - t0
        t0 = time.perf_counter()
        fast = TokenIntegratedGradients(head, enc, batch, None).attribute(movie.plot, [0, 1, 2], n_steps=args.ig_steps)
        t_fast = time.perf_counter() - t0
        t_deep = float("nan")
        if not args.no_deep:
            t0 = time.perf_counter()
            WordIntegratedGradients(IdsToLogits(head, enc, batch, None), enc).attribute(movie.plot, [0, 1, 2],
                                                                                        n_steps=args.ig_steps)
            t_deep = time.perf_counter() - t0
        if i:
            secs["predict"].append(t_pred), secs["fast"].append(t_fast), secs["deep"].append(t_deep)
            print(f"  movie {movie.imdb_id}: predict {t_pred:.2f}s  fast IG {t_fast:.2f}s ({fast.n_steps} steps)  "
                  + (f"deep IG {t_deep:.2f}s" if not args.no_deep else ""))
    for name in ("predict", "fast") + (() if args.no_deep else ("deep",)):
        v = np.asarray(secs[name])
        print(f"{name:8s} median {np.median(v):.2f}s  max {np.max(v):.2f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint")
    p.add_argument("--data", help="MM-IMDb folder (default: $MMGENRE_DATA)")
    p.add_argument("--split", default="dev")
    p.add_argument("--n", type=int, default=10, help="number of long-plot movies (a seeded sample)")
    p.add_argument("--min-words", type=int, default=200, help="a long plot has at least this many words")
    p.add_argument("--ig-steps", type=int, default=32)
    p.add_argument("--no-deep", action="store_true", help="skip the deep method (no Spearman then)")
    p.add_argument("--mpnet-random-head", action="store_true", help="time IG for MPNet under a random head")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch
    from scipy.stats import spearmanr

    from mmgenre.data import MMIMDb, resolve_data_dir
    from mmgenre.predict import Predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    ds = MMIMDb.load(resolve_data_dir(args.data))
    movies = [m for m in ds.split(args.split) if m.plot and len(m.plot.split()) >= args.min_words]
    rng = np.random.default_rng(args.seed)
    movies = [movies[i] for i in rng.permutation(len(movies))[: args.n + 1]]
    if len(movies) < 2:
        print(f"not enough {args.split} movies with a plot of {args.min_words}+ words in {ds.root}", file=sys.stderr)
        return 2
    if args.mpnet_random_head:
        return _mpnet_random_head(args, movies)
    if not args.checkpoint:
        p.error("--checkpoint is required (or --mpnet-random-head)")

    predictor = Predictor.from_checkpoint(args.checkpoint)
    methods = ["fast"] + ([] if args.no_deep else ["deep"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"model {predictor.name}  checkpoint {args.checkpoint}  {args.split} movies {len(movies) - 1} "
          f"(plots of {args.min_words}+ words)  torch threads {torch.get_num_threads()}  load average {load:.2f}")
    rows = {m: {"ig": [], "total": [], "ratio": [], "steps": [], "rel": [], "words": [], "cam": [], "rho": []}
            for m in methods}
    pred_secs = []
    for k, movie in enumerate(movies):
        poster = movie.poster_path if movie.has_poster else None
        t0 = time.perf_counter()
        predictor.predict(poster, movie.plot)
        t_pred = time.perf_counter() - t0
        exps = {}
        for m in methods:
            t0 = time.perf_counter()
            exps[m] = predictor.explain(poster, movie.plot, ig_steps=args.ig_steps, text_method=m,
                                        random_seed=args.seed)
            total = time.perf_counter() - t0
            if k:
                r = rows[m]
                r["ig"].append(exps[m].timings.get("text_attribution", 0.0))
                r["total"].append(total)
                r["ratio"].append(total / t_pred)
                r["steps"].append(exps[m].text_steps or 0)
                r["rel"] += [c["rel"] for c in exps[m].faithfulness.get("ig_completeness", {}).values()]
                r["cam"] += [d["beats_random"] for d in exps[m].faithfulness.get("deletion", {}).values()]
        if not k:
            continue
        pred_secs.append(t_pred)
        words = exps["fast"].words
        n_del = max(1, int(round(DELETE_SHARE * len(words))))
        base = _logits(predictor, poster, movie.plot)
        random_logits = [_logits(predictor, poster, _without(words, rng.permutation(len(words))[:n_del]))
                         for _ in range(RANDOM_DRAWS)]
        for m in methods:
            rows[m]["words"] += _word_deletion(predictor, poster, exps[m], base, random_logits)
            if "deep" in exps:
                rows[m]["rho"] += [float(spearmanr(exps[m].token_scores[g], exps["deep"].token_scores[g])[0])
                                   for g in exps[m].token_scores]
        print(f"  {movie.imdb_id} ({len(words)} words): predict {t_pred:.2f}s  " + "  ".join(
            f"{m} IG {rows[m]['ig'][-1]:.2f}s total {rows[m]['total'][-1]:.2f}s" for m in methods), flush=True)
    print(f"one prediction: median {np.median(pred_secs):.3f}s  max {np.max(pred_secs):.3f}s")
    for m in methods:
        r = rows[m]
        cam = f"  Grad-CAM deletion beats random {np.mean(r['cam']):.0%}" if r["cam"] else ""
        rho = f"  Spearman vs deep median {np.median(r['rho']):.3f}" if r["rho"] else ""
        print(f"{m}: IG median {np.median(r['ig']):.2f}s max {np.max(r['ig']):.2f}s | full explanation median "
              f"{np.median(r['total']):.2f}s max {np.max(r['total']):.2f}s | ratio to one prediction median "
              f"{np.median(r['ratio']):.1f}x max {np.max(r['ratio']):.1f}x | steps median {np.median(r['steps']):.0f} "
              f"max {np.max(r['steps']):.0f} | "
              f"completeness gap median {np.median(r['rel']):.2%} | word deletion beats random "
              f"{np.mean(r['words']):.0%} of {len(r['words'])} pairs{cam}{rho}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
