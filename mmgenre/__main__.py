"""Command line: ``python -m mmgenre {predict,explain,explain-split,report,features,validate,models}``."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import EncoderUnavailableError, InputError


def _cmd_predict(args) -> dict:
    from .predict import Predictor
    return Predictor.from_checkpoint(args.checkpoint).predict(poster=args.poster, plot=args.plot)


def _cmd_explain(args) -> dict:
    from .explain.export import export_explanation
    from .predict import Predictor
    pred = Predictor.from_checkpoint(args.checkpoint)
    genres = [g.strip() for g in args.genres.split(",")] if args.genres else None
    return export_explanation(pred, poster=args.poster, plot=args.plot, genres=genres, out=Path(args.out),
                              text_method="deep" if args.deep else "fast")


def _cmd_explain_split(args) -> dict:
    from .explain_split import explain_split
    return explain_split(args.checkpoint, args.data, args.split, genres=args.genres, top=args.top,
                         text_method="deep" if args.deep else "fast", ig_steps=args.ig_steps, workers=args.workers,
                         shard_size=args.shard_size, limit=args.limit)


def _cmd_report(args) -> dict:
    from .report import report_movie
    genres = [g.strip() for g in args.genres.split(",") if g.strip()] if args.genres else None
    return report_movie(args.checkpoint, args.data, args.id, args.out, genres=genres,
                        text_method="deep" if args.deep else "fast")


def _cmd_features(args) -> dict:
    from .data import MMIMDb, resolve_data_dir
    from .encoders import ENCODER_KINDS, default_encoder, option_name
    from .features import extract_features
    ds = MMIMDb.load(resolve_data_dir(args.data), skip_bad=args.skip_bad)
    out = {}
    for kind in args.kinds.split(","):
        name = getattr(args, option_name(kind), None) if kind in ENCODER_KINDS else None
        name = name or default_encoder(kind)
        fs = extract_features(ds, kind, name, cache_root=args.cache, skip_bad=args.skip_bad,
                              batch_size=args.batch_size, shard_size=args.shard_size, precision=args.precision)
        out[kind] = {"encoder": name, "precision": args.precision, "path": fs.meta["path"], "n": len(fs.ids),
                     "present": int(fs.present.sum()), "dim": fs.dim,
                     "bad_files": len(fs.meta.get("bad_files", []))}
    return out


def _cmd_validate(args) -> dict:
    from .data import MMIMDb, resolve_data_dir
    ds = MMIMDb.load(resolve_data_dir(args.data), skip_bad=args.skip_bad, check_images=args.check_images)
    print(ds.report.summary(), file=sys.stderr)
    return ds.report.to_dict()


def _cmd_models(args) -> dict:
    from .encoders import ENCODER_KINDS, encoder_info
    from .models import list_models
    return {"models": list_models(), "encoders": {k: encoder_info(k) for k in ENCODER_KINDS}}


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mmgenre", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, helptext in (("predict", "genre probabilities for one movie"),
                           ("explain", "write Grad-CAM, word attributions and figures for one movie")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--checkpoint", required=True)
        s.add_argument("--poster", help="poster image file")
        s.add_argument("--plot", help="plot text")
        if name == "explain":
            s.add_argument("--genres", help="comma list (default: predicted genres, else top 3)")
            s.add_argument("--out", required=True)
            s.add_argument("--deep", action="store_true",
                           help="exact plot attributions: IG at the word embeddings (10-40x slower than the "
                                "default, IG at the text encoder's output)")
    s = sub.add_parser("explain-split", help="explain every movie of a split into a store inside the checkpoint "
                                             "(read by the dashboard); resumable")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--data", help="the MM-IMDb folder (default: $MMGENRE_DATA)")
    s.add_argument("--split", default="test")
    s.add_argument("--genres", choices=("top", "predicted"), default="top",
                   help="top: the --top most probable genres of each movie (default); predicted: its predicted "
                        "genres, else the 3 most probable")
    s.add_argument("--top", type=_positive_int, default=3)
    s.add_argument("--deep", action="store_true", help="exact plot attributions (IG at the word embeddings)")
    s.add_argument("--ig-steps", type=_positive_int, default=32)
    s.add_argument("--workers", type=_positive_int, default=1,
                   help="processes, each with its share of the torch threads (default 1)")
    s.add_argument("--shard-size", type=_positive_int, default=16,
                   help="movies per store file: a killed run resumes from the last whole shard")
    s.add_argument("--limit", type=_positive_int, help="only the shards holding the first LIMIT movies")
    s = sub.add_parser("report", help="one dataset movie's explanation as a self-contained HTML page and a PDF")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--data", help="the MM-IMDb folder (default: $MMGENRE_DATA)")
    s.add_argument("--id", required=True, help="the movie's IMDb id, as in the data folder")
    s.add_argument("--out", required=True, help="folder for <id>_<model>.html and .pdf")
    s.add_argument("--genres", help="comma list (default: predicted genres, else top 3)")
    s.add_argument("--deep", action="store_true", help="exact plot attributions (IG at the word embeddings)")
    s = sub.add_parser("features", help="extract and cache encoder features for a dataset")
    s.add_argument("--data")
    from .encoders import CLI_FLAGS, ENCODER_KINDS
    from .features import PRECISIONS
    s.add_argument("--kinds", default=",".join(ENCODER_KINDS))
    for kind in ENCODER_KINDS:
        s.add_argument(CLI_FLAGS[kind], help=f"the {kind} encoder (default: the offline default)")
    s.add_argument("--cache")
    s.add_argument("--batch-size", type=_positive_int, default=32)
    s.add_argument("--shard-size", type=_positive_int, default=256,
                   help="movies per cache shard: a killed run resumes from the last whole shard")
    s.add_argument("--skip-bad", action="store_true")
    s.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="the encoders' precision while extracting (bf16: MPNet ~1.7x faster on CPUs with AVX512-BF16)")
    s = sub.add_parser("validate", help="read a dataset and print its validation report")
    s.add_argument("--data")
    s.add_argument("--skip-bad", action="store_true")
    s.add_argument("--check-images", action="store_true")
    sub.add_parser("models", help="list registered models and encoders")
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    commands = {"predict": _cmd_predict, "explain": _cmd_explain, "explain-split": _cmd_explain_split,
                "report": _cmd_report, "features": _cmd_features,
                "validate": _cmd_validate, "models": _cmd_models}
    try:
        result = commands[args.cmd](args)
    except (InputError, EncoderUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
