"""Fine-tuning against frozen features: seconds per epoch, peak RAM, checkpoint size, dev and test F1.

    python -m train.benchmarks.tuning --data ../shared/mmimdb-lite [--models text_only,gmu]
        [--rows frozen-minilm,frozen-mpnet,lora-mpnet,lora-minilm,full-minilm] [--epochs 1] [--out FILE]

Rows (``--rows``): ``frozen-*`` train the head on cached encoder features under the frozen protocol
(``--frozen-epochs``, early stopping); ``lora-*`` tune LoRA adapters of rank ``--lora-rank`` on every
encoder the model reads (text attention; for fusion heads also EfficientNet's pointwise convs) with
the head; ``full-minilm`` tunes every encoder weight. Fine-tuning rows run ``--epochs`` (default 1).

Each row runs in its own process; its peak RAM is that process's ``ru_maxrss`` (from ``os.wait4``).
``s/epoch`` is the time of the engine's epoch loop (training batches + the dev evaluation of each
epoch) per epoch; feature extraction, encoder loading and the final dev/test scoring are in
``other s``. Rows named by ``--bounded`` (default ``lora-mpnet``: a full epoch takes too long on 2
CPU cores) train only the first ``--max-batches`` batches of each epoch: their s/epoch is
extrapolated to the full epoch and marked ``*``, and their F1 are those of that shorter training.

F1 intervals: percentile bootstrap over movies (mmgenre.metrics.bootstrap_ci, ``--n-boot``) at the
thresholds tuned on dev. Dev is the protocol's tuning split (train-holdout: 20% of train).
On a GPU (``--device auto`` or ``cuda``) every row also runs in bf16 (``--precisions no,bf16``),
and ``speed-up`` is its fp32 s/epoch over its bf16 s/epoch; ``--baseline FILE.json`` (the JSON
of an earlier run, e.g. on the CPU) adds the speed-up over that run's same row.
``--limit N`` keeps the first N movies of each split (a quick check of the script).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = {  # name -> TrainConfig fields (the LoRA rank is filled in from --lora-rank)
    "frozen-minilm": {"text_encoder": "minilm"},
    "frozen-mpnet": {"text_encoder": "mpnet"},
    "lora-mpnet": {"text_encoder": "mpnet", "lora": "rank"},
    "lora-minilm": {"text_encoder": "minilm", "lora": "rank"},
    "full-minilm": {"text_encoder": "minilm", "finetune": True},
}
MODELS = "text_only,gmu"


# ---------------------------------------------------------------------------------------------
# one row, in a child process


class _EpochClock:
    """Times the engine's epoch loop and the dev evaluations inside it; caps the batches per epoch."""

    def __init__(self, engine, max_batches: int | None):
        self.loop = self.dev_eval = 0.0
        self.inside = False
        train, predict, batches = engine.train, engine.predict, engine.EpochBatches
        clock = self

        def timed_train(*args, **kwargs):
            clock.inside, t0 = True, time.perf_counter()
            try:
                return train(*args, **kwargs)
            finally:
                clock.loop += time.perf_counter() - t0
                clock.inside = False

        def timed_predict(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return predict(*args, **kwargs)
            finally:
                if clock.inside:
                    clock.dev_eval += time.perf_counter() - t0

        class Bounded(batches):
            def __iter__(self):
                return itertools.islice(super().__iter__(), max_batches)

            def __len__(self):  # the LR schedule is laid out over the batches that run
                return min(max_batches, super().__len__())

        engine.train, engine.predict = timed_train, timed_predict
        if max_batches:
            engine.EpochBatches = Bounded


def run_row(spec: dict) -> dict:
    """Train one (model, row, precision) as ``spec`` says; its figures (peak RAM: the parent's)."""
    import math

    import torch

    from mmgenre.data import MMIMDb
    from train import engine
    from train.config import TrainConfig
    from train.loop import fit

    opts = {k: (spec["lora_rank"] if v == "rank" else v) for k, v in ROWS[spec["row"]].items()}
    tuned = spec["row"] != "frozen-minilm" and spec["row"] != "frozen-mpnet"
    cfg = TrainConfig(data=spec["data"], model=spec["model"], out=spec["out"], cache=spec["cache"],
                      epochs=spec["epochs"] if tuned else spec["frozen_epochs"], n_boot=spec["n_boot"],
                      device=spec["device"], mixed_precision=spec["precision"], progress=False,
                      **({"batch_size": spec["batch_size"]} if tuned else {}), **opts)
    ds = MMIMDb.load(cfg.data, splits_file=spec.get("splits_file") or "split.json")
    max_batches = spec["max_batches"] if tuned and spec["row"] in spec["bounded"] else None
    clock = _EpochClock(engine, max_batches)
    t0 = time.perf_counter()
    res = fit(cfg, ds)
    total = time.perf_counter() - t0
    epochs = len(res.history)
    full = math.ceil(res.metrics["n"]["train"] / cfg.batch_size)
    ran = min(full, max_batches or full)
    batches = (clock.loop - clock.dev_eval) / epochs
    files = {f.name: f.stat().st_size for f in res.path.iterdir() if f.is_file()}
    scores = {f"{split}_{key}": [res.metrics[split][key], *res.metrics[split].get("ci", {}).get(key, [None, None])]
              for split in ("dev", "test") for key in ("micro_f1", "macro_f1")}
    return {"model": spec["model"], "row": spec["row"], "precision": spec["precision"],
            "device": "cuda" if torch.cuda.is_available() and spec["device"] != "cpu" else "cpu",
            "epochs": epochs, "batches": ran, "batches_per_epoch": full, "batch_size": cfg.batch_size,
            "s_per_epoch": batches * full / ran + clock.dev_eval / epochs, "extrapolated": ran < full,
            "other_s": total - clock.loop, "total_s": total, "n": res.metrics["n"],
            "checkpoint_bytes": sum(files.values()), "encoder_bytes": files.get("encoders.safetensors", 0),
            "torch_threads": torch.get_num_threads(), **scores}


# ---------------------------------------------------------------------------------------------
# the parent: one child per row, the table


def _child(spec: dict) -> dict:
    """Run ``spec`` in a fresh interpreter; its result with its own peak RSS."""
    with tempfile.TemporaryDirectory(prefix="mmgenre-bench-tuning-") as tmp:
        result = Path(tmp) / "result.json"
        spec = {**spec, "out": str(Path(tmp) / "out")}
        proc = subprocess.Popen([sys.executable, "-m", "train.benchmarks.tuning", "--child", json.dumps(spec),
                                 "--result", str(result)], cwd=Path(__file__).resolve().parents[2])
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0 or not result.is_file():
            return {**{k: spec[k] for k in ("model", "row", "precision")}, "error": f"exit code {proc.returncode}"}
        return {**json.loads(result.read_text()), "peak_rss_bytes": usage.ru_maxrss * 1024}  # Linux: KiB


def _ci(row: dict, key: str) -> str:
    value, lo, hi = row[key]
    return f"{value:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")


def _prec(row: dict) -> str:
    return "fp32" if row["precision"] == "no" else row["precision"]


def table(rows: list[dict], baseline: dict | None = None) -> str:
    speed = {(r["model"], r["row"]): r["s_per_epoch"] for r in rows if r.get("precision") == "no" and "error" not in r}
    head = (f"{'model':<10} {'row':<14} {'prec':<5} {'on':<5} {'epochs':>6} {'s/epoch':>9} {'other s':>8} "
            f"{'peak RAM GB':>11} {'ckpt MB':>8} {'enc MB':>7} {'dev micro-F1':>22} {'dev macro-F1':>22} "
            f"{'test micro-F1':>22} {'test macro-F1':>22} {'speed-up':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['model']:<10} {r['row']:<14} {_prec(r):<5} failed: {r['error']}")
            continue
        mark = "*" if r["extrapolated"] else " "
        ups = []
        if r["precision"] != "no" and (r["model"], r["row"]) in speed:
            ups.append(f"{speed[(r['model'], r['row'])] / r['s_per_epoch']:.1f}x")
        if baseline and (r["model"], r["row"]) in baseline:
            ups.append(f"{baseline[(r['model'], r['row'])] / r['s_per_epoch']:.1f}x base")
        lines.append(
            f"{r['model']:<10} {r['row']:<14} {_prec(r):<5} {r['device']:<5} {r['epochs']:>6} "
            f"{r['s_per_epoch']:>8.1f}{mark} {r['other_s']:>8.0f} {r['peak_rss_bytes'] / 2**30:>11.2f} "
            f"{r['checkpoint_bytes'] / 1e6:>8.1f} {r['encoder_bytes'] / 1e6:>7.1f} {_ci(r, 'dev_micro_f1'):>22} "
            f"{_ci(r, 'dev_macro_f1'):>22} {_ci(r, 'test_micro_f1'):>22} {_ci(r, 'test_macro_f1'):>22} "
            f"{' '.join(ups) or '-':>9}")
    bounded = [r for r in rows if r.get("extrapolated")]
    if bounded:
        lines.append("* s/epoch extrapolated from the first " + ", ".join(sorted(
            {f"{r['batches']} of {r['batches_per_epoch']} batches" for r in bounded}))
            + " of each epoch; these rows' F1 are of a model trained on those batches only")
    if any(r["model"] != "text_only" and r["row"].startswith(("lora", "full")) for r in rows):
        lines.append("fusion rows tune the image encoder (EfficientNet-Lite0) the same way as the text encoder")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.benchmarks.tuning", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="the MM-IMDb folder (default: $MMGENRE_DATA)")
    p.add_argument("--models", default=MODELS)
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma list of: {', '.join(ROWS)}")
    p.add_argument("--epochs", type=int, default=1, help="epochs of the fine-tuning rows")
    p.add_argument("--frozen-epochs", type=int, default=40, help="most epochs of the frozen rows (early stopping)")
    p.add_argument("--batch-size", type=int, default=16, help="batch of the fine-tuning rows")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--bounded", default="lora-mpnet",
                   help="rows that train --max-batches batches per epoch (none: every row full epochs)")
    p.add_argument("--max-batches", type=int, default=40)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precisions", help="comma list of no, bf16, fp16 (default: no; no,bf16 on a GPU)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--cache", help="feature cache (default: mmgenre's; a temporary one with --limit)")
    p.add_argument("--limit", type=int, help="only the first N movies of each split")
    p.add_argument("--baseline", help="JSON of an earlier run (--out's .json): adds the speed-up over it")
    p.add_argument("--out", help="also write the table here, and the rows as JSON beside it (.json)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        Path(args.result).write_text(json.dumps(run_row(json.loads(args.child))))
        return 0
    import torch

    from mmgenre.data import MMIMDb, resolve_data_dir
    from mmgenre.errors import InputError
    from mmgenre.models import list_models

    rows, models = args.rows.split(","), args.models.split(",")
    try:
        for name, known in (("row", list(ROWS)), ("model", list_models())):
            bad = [x for x in (rows if name == "row" else models) if x not in known]
            if bad:
                raise InputError(f"unknown {name} {bad[0]!r}; choose from {', '.join(known)}")
        data = resolve_data_dir(args.data)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gpu = args.device != "cpu" and torch.cuda.is_available()
    precisions = (args.precisions or ("no,bf16" if gpu else "no")).split(",")
    baseline = None
    if args.baseline:
        baseline = {(r["model"], r["row"]): r["s_per_epoch"] for r in json.loads(Path(args.baseline).read_text())
                    if r.get("precision") == "no" and "error" not in r}
    with tempfile.TemporaryDirectory(prefix="mmgenre-bench-tuning-") as tmp:
        splits_file, cache = None, args.cache
        if args.limit:
            full = MMIMDb.load(data).splits
            splits_file = str(Path(tmp) / "split.json")
            Path(splits_file).write_text(json.dumps({s: ids[:args.limit] for s, ids in full.items()}))
            cache = cache or str(Path(tmp) / "cache")
        common = {"data": str(data), "cache": cache, "splits_file": splits_file, "epochs": args.epochs,
                  "frozen_epochs": args.frozen_epochs, "batch_size": args.batch_size, "lora_rank": args.lora_rank,
                  "bounded": args.bounded.split(","), "max_batches": args.max_batches, "device": args.device,
                  "n_boot": args.n_boot}
        started, load = time.perf_counter(), os.getloadavg()
        results = []
        for model, row, precision in itertools.product(models, rows, precisions):
            print(f"[{time.perf_counter() - started:6.0f} s] {model} {row} {precision}", file=sys.stderr, flush=True)
            results.append(_child({**common, "model": model, "row": row, "precision": precision}))
    text = "\n".join([
        table(results, baseline),
        f"data {data} ({', '.join(f'{s} {n}' for s, n in next((r['n'] for r in results if 'n' in r), {}).items())}); "
        f"device {'cuda' if gpu else 'cpu'}, {results[0].get('torch_threads', '?')} torch threads, "
        f"{os.cpu_count()} CPUs; load average at start {load[0]:.2f}, at end {os.getloadavg()[0]:.2f}; "
        f"wall {time.perf_counter() - started:.0f} s"])
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
