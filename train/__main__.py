"""``python -m train --data DIR --models all --out checkpoints/`` (choices come from the registries)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from mmgenre.checkpoint import load_checkpoint
from mmgenre.encoders import list_encoders
from mmgenre.errors import EncoderUnavailableError, InputError
from mmgenre.leaderboard import write_leaderboard
from mmgenre.models import list_models

from .config import DEVICES, FEATURE_PRECISIONS, MIXED_PRECISION, PROTOCOLS, TRACKERS, TrainConfig, build_configs

QUICK_MODEL = "gmu"


def parse_models(text: str) -> list[str]:
    known = list_models()
    if text == "all":
        return known
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"unknown model(s) {', '.join(unknown)}; choose from: all, {', '.join(known)}")
    return names


def _checked(cast, ok, what: str):
    """An argparse type: ``cast(text)`` that must satisfy ``ok`` (argparse reports ``what``)."""
    def parse(text: str):
        value = cast(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r}: must be {what}")
        return value
    parse.__name__ = cast.__name__  # argparse's "invalid int value: 'x'"
    return parse


POSITIVE_INT = _checked(int, lambda v: v > 0, "a positive integer")
COUNT = _checked(int, lambda v: v >= 0, "an integer >= 0")
POSITIVE_FLOAT = _checked(float, lambda v: 0 < v < float("inf"), "a positive number")
FRACTION = _checked(float, lambda v: 0 <= v < 1, "in [0, 1)")


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    p.add_argument("--data", help="MM-IMDb folder (default: $MMGENRE_DATA)")
    p.add_argument("--models", default=QUICK_MODEL, help=f"'all' or a comma list of: {', '.join(list_models())}")
    p.add_argument("--out", default=d.out)
    p.add_argument("--text-encoder", default=d.text_encoder, help=f"one of {list_encoders('text')} or a HF id/folder")
    p.add_argument("--image-encoder", default=d.image_encoder, help=f"one of {list_encoders('image')} or a timm name")
    p.add_argument("--detector", default=d.detector, choices=list_encoders("detector"))
    p.add_argument("--epochs", type=POSITIVE_INT, default=d.epochs)
    p.add_argument("--batch-size", type=POSITIVE_INT, default=d.batch_size)
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=d.lr)
    p.add_argument("--hidden", type=POSITIVE_INT, default=d.hidden)
    p.add_argument("--dropout", type=FRACTION, default=d.dropout)
    p.add_argument("--loss", choices=("bce", "focal"), default=d.loss)
    p.add_argument("--label-smoothing", type=FRACTION, default=d.label_smoothing)
    p.add_argument("--patience", type=POSITIVE_INT, default=d.patience)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--protocol", choices=list(PROTOCOLS), default=d.protocol,
                   help="; ".join(f"{k}: {v}" for k, v in PROTOCOLS.items()).replace("%", "%%")
                   + " (default: %(default)s)")
    p.add_argument("--train-on-dev-fraction", type=FRACTION, default=d.train_on_dev_fraction)
    p.add_argument("--cache", help="feature cache folder (default: $MMGENRE_CACHE or ~/.cache/mmgenre)")
    p.add_argument("--feature-precision", choices=FEATURE_PRECISIONS, default=d.feature_precision,
                   help="the frozen encoders' precision while extracting features: bf16 runs MPNet ~1.7x faster on "
                        "CPUs with AVX512-BF16/AMX, its own cache (default: %(default)s)")
    p.add_argument("--cv", type=COUNT, default=0, help="K-fold cross-validation on --cv-split instead of one fit")
    p.add_argument("--cv-split", default=d.cv_split)
    p.add_argument("--n-boot", type=COUNT, default=d.n_boot)
    p.add_argument("--quick", action="store_true", help=f"3 epochs of {QUICK_MODEL} only (a quick demo)")
    p.add_argument("--modality-dropout", type=FRACTION, default=d.modality_dropout)
    p.add_argument("--finetune", action="store_true", help="end-to-end fine-tuning of the encoders (use a GPU)")
    p.add_argument("--lora", type=int, metavar="R", help="fine-tune with LoRA adapters of rank R (implies --finetune)")
    p.add_argument("--lora-targets", type=lambda t: [x.strip() for x in t.split(",") if x.strip()],
                   metavar="A,B", help="modules LoRA wraps (bare: text encoder; image:NAME: image encoder)")
    p.add_argument("--tune-layers", type=int, metavar="N",
                   help="fine-tune only the encoders' last N blocks (implies --finetune)")
    p.add_argument("--device", default=d.device, choices=DEVICES)
    p.add_argument("--mixed-precision", default=d.mixed_precision, choices=MIXED_PRECISION,
                   help="autocast through Accelerate (bf16 also on CPU)")
    p.add_argument("--grad-accum", type=POSITIVE_INT, default=d.grad_accum, metavar="N",
                   help="step the optimiser every N batches")
    p.add_argument("--track", choices=TRACKERS, help="log runs to MLflow's local store (off by default)")
    p.add_argument("--track-uri", help="MLflow store: a folder or file: URI (default ./mlruns)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable movies, listing them, instead of stopping")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--force", action="store_true",
                   help="retrain models whose checkpoint in --out already matches this config and data, "
                        "and discard a killed run's state of another config")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        models = [QUICK_MODEL] if args.quick else parse_models(args.models)
        options = {**vars(args), "progress": not args.no_progress, "epochs": 3 if args.quick else args.epochs}
        configs = build_configs(options, models)
        from .loop import fit, load_dataset
        from .cv import cross_validate
        from .resume import EpochState, checkpoint_is_current
        from .runtime import check_world, process_state
        from .tracking import check_tracking
        for cfg in configs:   # every check that needs no data, before any is read
            check_world(cfg)
            check_tracking(cfg)
            if cfg.finetune:
                cfg.tuning()
        main_process = process_state(configs[0]).is_main_process
        ds = load_dataset(configs[0])
        if main_process:
            print(ds.report.summary(), file=sys.stderr)
        for cfg in configs:
            name = cfg.model
            t0 = time.perf_counter()
            skipped = False
            if args.cv:
                res = cross_validate(cfg, ds)["out_of_fold"]
            elif not args.force and checkpoint_is_current(cfg.out, cfg, ds.fingerprint()):
                if main_process:
                    print(f"{name}: {cfg.out}/{name} already holds this run (same config and data); "
                          "skipped (--force retrains)", file=sys.stderr)
                    EpochState(cfg.out, cfg, ds.fingerprint()).clear_if_this_run()  # killed after the checkpoint
                res, skipped = load_checkpoint(f"{cfg.out}/{name}").metrics["test"], True
            else:
                res = fit(cfg, ds, fresh=args.force).metrics["test"]
            if main_process:
                print(json.dumps({"model": name, "seconds": round(time.perf_counter() - t0, 1), "skipped": skipped,
                                  **{k: round(res[k], 4) for k in ("micro_f1", "macro_f1", "samples_f1", "map_macro")}}),
                      flush=True)
        if not args.cv and main_process:
            print(f"leaderboard: {write_leaderboard(args.out)}", file=sys.stderr)
    except (InputError, EncoderUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
