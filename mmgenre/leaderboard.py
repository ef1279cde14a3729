"""The leaderboard: one row per trained model, read from each checkpoint's metrics.json."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import atomic
from .metrics import LEADERBOARD_KEYS
from .models import list_models, model_modalities

LEADERBOARD_FILE = "leaderboard.csv"
F1_KEYS = ("micro_f1", "macro_f1", "weighted_f1", "samples_f1")


def leaderboard_rows(checkpoints: str | Path, split: str = "test") -> pd.DataFrame:
    """Rows for every ``<checkpoints>/<model>/metrics.json`` whose model is registered."""
    rows = []
    for model in list_models():
        f = Path(checkpoints) / model / "metrics.json"
        if not f.is_file():
            continue
        m = json.loads(f.read_text())
        res = m.get(split, {})
        row = {"model": model, "modalities": "+".join(model_modalities(model))}
        row.update({k: res.get(k) for k in LEADERBOARD_KEYS})
        complete = res.get("complete_pairs", {})
        row.update({f"{k}_complete": complete.get(k) for k in F1_KEYS})
        for k, (lo, hi) in res.get("ci", {}).items():
            row[f"{k}_ci_low"], row[f"{k}_ci_high"] = lo, hi
        row["n_movies"] = res.get("n_samples")
        row["train_seconds"] = m.get("train_seconds")
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.sort_values("micro_f1", ascending=False, ignore_index=True) if len(frame) else frame


def write_leaderboard(checkpoints: str | Path, split: str = "test") -> Path:
    frame = leaderboard_rows(checkpoints, split)
    out = Path(checkpoints) / LEADERBOARD_FILE
    atomic.write_text(out, frame.to_csv(index=False, float_format="%.4f"))
    return out


def read_leaderboard(checkpoints: str | Path) -> pd.DataFrame:
    f = Path(checkpoints) / LEADERBOARD_FILE
    return pd.read_csv(f) if f.is_file() else leaderboard_rows(checkpoints)
