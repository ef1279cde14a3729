"""Experiment tracking (``--track mlflow``): MLflow's local file store, through Accelerate's tracker API.

One MLflow run per trained model, in the experiment "mmgenre" of ``--track-uri`` (default
``./mlruns``; no server): the run key as params (config, encoder names, data fingerprint), per
epoch ``train_loss`` and ``dev_macro_f1``, at the end ``dev/<metric>`` and ``test/<metric>``, and the checkpoint
folder as the artefact "checkpoint". A resumed run continues the same MLflow run (its id is in the
training state). ``mlflow ui --backend-store-uri ./mlruns`` (the full ``mlflow`` package) shows them.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from accelerate import Accelerator

from mmgenre.errors import InputError

from .config import TrainConfig

EXPERIMENT = "mmgenre"
DEFAULT_URI = "mlruns"
FINAL_KEYS = ("micro_f1", "macro_f1", "samples_f1", "weighted_f1", "map_macro", "roc_auc_macro")


def tracking_folder(cfg: TrainConfig) -> Path | None:
    """The local folder runs go to (None for a non-file URI, or no tracking)."""
    if not cfg.track:
        return None
    uri = cfg.track_uri or DEFAULT_URI
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else uri).expanduser().resolve()
    return None


def check_tracking(cfg: TrainConfig) -> str | None:
    """Before any work: the tracking URI, once its folder is known to be writable (InputError if not)."""
    if not cfg.track:
        return None
    folder = tracking_folder(cfg)
    if folder is None:
        return cfg.track_uri
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as exc:
        raise InputError(f"--track {cfg.track}: cannot write its folder {folder} ({exc.strerror or exc}); "
                         "pass a writable --track-uri") from None
    # MLflow 3 keeps the file store in maintenance mode behind this switch; it needs no server.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return folder.as_uri()


def _param(value) -> str | int | float | bool:
    return value if isinstance(value, (str, int, float, bool)) else json.dumps(value, sort_keys=True)


class Run:
    """The tracked run of one model (does nothing without ``cfg.track``); a context manager."""

    def __init__(self, acc: Accelerator, cfg: TrainConfig, uri: str | None):
        self.acc, self.cfg, self.uri = acc, cfg, uri
        self.on = bool(cfg.track)
        self.run_id: str | None = None

    def start(self, key: dict, encoders: dict[str, str], run_id: str | None = None) -> "Run":
        if not self.on:
            return self
        params = {k: _param(v) for k, v in key["train"].items()}
        params.update({f"encoder.{k}": v for k, v in encoders.items()})
        params["data.fingerprint"] = key["fingerprint"]
        try:
            if self.acc.is_main_process:
                import mlflow
                mlflow.set_tracking_uri(self.uri)
            self.acc.init_trackers(EXPERIMENT, config=params,
                                   init_kwargs={"mlflow": {"run_name": self.cfg.model, "run_id": run_id}})
        except Exception as exc:  # MLflow's own errors (bad URI, store refused): before any work
            raise InputError(f"--track {self.cfg.track}: cannot start a run at {self.uri}: {exc}") from None
        if self.acc.is_main_process:
            self.run_id = self.acc.get_tracker("mlflow").tracker.info.run_id
        return self

    def epoch(self, record: dict) -> None:
        if self.on:
            self.acc.log({k: v for k, v in record.items() if k != "epoch"}, step=record["epoch"])

    def finish(self, results: dict, checkpoint: Path) -> None:
        if not self.on:
            return
        final = {f"{split}/{k}": results[split][k] for split in ("dev", "test") for k in FINAL_KEYS
                 if k in results[split]}
        final["train_seconds"] = results["train_seconds"]
        self.acc.log(final)
        if self.acc.is_main_process:
            self.acc.get_tracker("mlflow").log_artifacts(str(checkpoint), artifact_path="checkpoint")

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if not self.on:
            return
        if exc_type is not None and self.acc.is_main_process:
            import mlflow
            mlflow.end_run(status="FAILED")  # so a later run in this process can start
        else:  # not acc.end_training(): that also ends the process group the next model needs
            for tracker in self.acc.trackers:
                tracker.finish()
        self.acc.trackers = []
