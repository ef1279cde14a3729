"""Tracked training runs read back from MLflow's local file store (``python -m train --track mlflow``).

:func:`read_runs` turns the runs of one experiment into a table, one row per run: the model, when
it started, its status, the main training params (encoders, lr, epochs, tuning, protocol) and the
final ``dev/<metric>`` / ``test/<metric>`` figures. It uses MLflow's own client (``mlflow-skinny``),
imported only when called, and needs no server.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from mmgenre.errors import InputError

EXPERIMENT = "mmgenre"            # the experiment train/tracking.py logs into
PARAM_COLUMNS = ("protocol", "lr", "epochs", "batch_size", "seed")
FINAL_PREFIXES = ("dev/", "test/")


def is_store(folder: str | Path) -> bool:
    """True when ``folder`` looks like an MLflow file store: a folder with at least one
    experiment folder holding a ``meta.yaml``."""
    folder = Path(folder).expanduser()
    try:
        return folder.is_dir() and any((d / "meta.yaml").is_file() for d in folder.iterdir() if d.is_dir())
    except OSError:
        return False


def _client(folder: Path):
    # MLflow 3 keeps the plain-folder store behind this switch (see train/tracking.py).
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise InputError("reading tracked runs needs MLflow: pip install mlflow-skinny") from None
    return MlflowClient(folder.resolve().as_uri())


def _tuning(params: dict[str, str]) -> str:
    """"frozen", "full", "lora r=<rank>" or "last <n> blocks" from the run's params."""
    def value(key: str):
        try:
            return json.loads(params.get(key, "null"))
        except ValueError:
            return params[key]
    if value("lora") is not None:
        return f"lora r={value('lora')}"
    if value("tune_layers") is not None:
        return f"last {value('tune_layers')} blocks"
    return "full" if str(params.get("finetune", "False")).lower() == "true" else "frozen"


def _number(text: str | None):
    """A param as int or float when it is one (params are stored as strings)."""
    for kind in (int, float):
        try:
            return kind(text)
        except (TypeError, ValueError):
            pass
    return text


def read_runs(store: str | Path = "mlruns", experiment: str = EXPERIMENT) -> pd.DataFrame:
    """The runs of ``experiment`` in the MLflow file store ``store``, newest first.

    Columns: ``run`` (the run name: the model), ``start_time`` (UTC), ``status``, ``encoders``
    (``kind:name``, comma-separated), ``tuning``, the params of :data:`PARAM_COLUMNS`, every final
    ``dev/...`` and ``test/...`` metric, ``train_seconds`` and ``run_id``. An empty frame when the
    experiment has no runs; :class:`InputError` when ``store`` is not an MLflow store.
    """
    folder = Path(store).expanduser()
    if not is_store(folder):
        raise InputError(f"{folder}: not an MLflow run store (train with --track mlflow --track-uri {folder})")
    client = _client(folder)
    try:
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"]) if exp else []
    except Exception as exc:  # MLflow's own errors on a damaged store
        raise InputError(f"{folder}: cannot read the MLflow store ({exc})") from None
    rows = []
    for r in runs:
        params, metrics = r.data.params, r.data.metrics
        row = {"run": r.info.run_name,
               "start_time": pd.to_datetime(r.info.start_time, unit="ms", utc=True),
               "status": r.info.status,
               "encoders": ", ".join(f"{k.removeprefix('encoder.')}:{v}" for k, v in sorted(params.items())
                                     if k.startswith("encoder.")),
               "tuning": _tuning(params)}
        row.update({k: _number(params.get(k)) for k in PARAM_COLUMNS})
        row.update({k: v for k, v in sorted(metrics.items()) if k.startswith(FINAL_PREFIXES)})
        row["train_seconds"] = metrics.get("train_seconds")
        row["run_id"] = r.info.run_id
        rows.append(row)
    return pd.DataFrame(rows)
