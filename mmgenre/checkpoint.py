"""Self-describing checkpoints: ``<dir>/model.safetensors`` + ``config.json`` (+ results).

A checkpoint folder is enough to rebuild its model: ``config.json`` names the model, its
hyper-parameters and input sizes, the encoders actually used (with their preprocessing), the
genre order, the tuned thresholds, the training config and the data fingerprint. Weights are
read with safetensors only, so a crafted file cannot run code; a config that names an unknown
model or encoder, or weights whose shapes do not match, are refused with an ``InputError``.

Checkpoints are portable: :func:`portable` rewrites every absolute path the code resolved
(encoder weight files, the data folder) before the config is saved: installed packages as
``site-packages/<package>/...``, paths inside the working folder relative to it, anything else
by its last part. Names the user chose (encoders, given as a registered name, a hub id or a
folder) are kept as given: the model is rebuilt from them.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save as save_numpy_bytes

from . import atomic
from .errors import InputError
from .genres import GENRES

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# Fine-tuned checkpoints only: the tuned encoder part (mmgenre.tuning), keyed "<kind>.<key>"; its
# metadata names the base encoder of each kind it was tuned on.
ENCODERS_FILE = "encoders.safetensors"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
MAX_CONFIG_BYTES = 2 * 2**20
_VERSION_PACKAGES = ("torch", "transformers", "timm", "scikit-learn", "numpy", "safetensors")


_PACKAGE_DIRS = ("site-packages", "dist-packages")
# Values that name what to rebuild, as the user gave them; never rewritten.
_KEPT_KEYS = frozenset({"name", "model", "text_encoder", "image_encoder", "detector"})


def portable_path(text: str) -> str:
    """``text`` unchanged unless it is an absolute path; then a machine-independent name for it."""
    if not text.startswith("/"):
        return text
    parts = Path(text).parts
    inside = [i for i, part in enumerate(parts) if part in _PACKAGE_DIRS]
    if inside:  # an installed package's file: which package is what matters (versions are recorded)
        return "/".join(("site-packages", *parts[inside[-1] + 1:]))
    try:
        return Path(text).relative_to(Path.cwd()).as_posix() or "."
    except ValueError:
        return parts[-1] if len(parts) > 1 else text


def portable(obj):
    """A copy of a JSON-like ``obj`` with every string value passed through :func:`portable_path`,
    except the names under ``_KEPT_KEYS``."""
    if isinstance(obj, dict):
        return {k: v if k in _KEPT_KEYS and isinstance(v, str) else portable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        obj = os.fspath(obj)
    return portable_path(obj) if isinstance(obj, str) else obj


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class Checkpoint:
    path: Path
    config: dict
    weights: dict[str, np.ndarray]
    metrics: dict = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.config["model"]

    @property
    def thresholds(self) -> np.ndarray:
        return np.asarray(self.config["thresholds"], dtype=np.float32)

    def encoder_tensors(self) -> dict[str, np.ndarray]:
        """The tuned encoder tensors of a fine-tuned checkpoint ({} for a frozen one); read on demand."""
        return self._encoders_file()[0]

    def encoder_bases(self) -> dict[str, str]:
        """{kind: base encoder name} the tensors of :meth:`encoder_tensors` were tuned on."""
        return self._encoders_file()[1]

    def _encoders_file(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        f = self.path / ENCODERS_FILE
        if not f.is_file():
            return {}, {}
        try:
            with safe_open(str(f), framework="np") as handle:
                bases = dict(handle.metadata() or {})
            return load_numpy(str(f)), bases
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"{f} is not a readable safetensors file: {exc}") from None

    def predictions(self) -> pd.DataFrame | None:
        f = self.path / PREDICTIONS_FILE
        return pd.read_csv(f, dtype={"imdb_id": str}) if f.exists() else None


def save_checkpoint(out_dir: str | Path, *, weights: dict[str, np.ndarray], config: dict,
                    metrics: dict | None = None, predictions: pd.DataFrame | None = None,
                    extra_files: dict[str, str] | None = None,
                    encoder_tensors: dict | None = None) -> Path:
    """Write a whole checkpoint folder atomically (staged in a sibling temp folder, then swapped).

    ``encoder_tensors`` (numpy arrays or torch tensors, from ``mmgenre.tuning.tuned_tensors``) go to
    ``encoders.safetensors``, with the base encoder names from ``config["encoders"]`` as metadata."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    config = portable(config)
    config.setdefault("format_version", FORMAT_VERSION)
    config.setdefault("genres", list(GENRES))
    config.setdefault("versions", library_versions())
    config.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    _validate_config(config, out_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    # Through atomic.write_*: each file is fsynced before the folder swap makes it visible.
    # np.require, not np.ascontiguousarray: that one turns 0-d arrays (BatchNorm's num_batches_tracked)
    # into shape (1,), which then no longer fits the module at load.
    arrays = {k: np.require(v, requirements="C") for k, v in weights.items()}
    atomic.write_bytes(staging / WEIGHTS_FILE, save_numpy_bytes(arrays))
    atomic.write_json(staging / CONFIG_FILE, config)
    if metrics is not None:
        atomic.write_json(staging / METRICS_FILE, _finite(metrics))
    if predictions is not None:
        atomic.write_text(staging / PREDICTIONS_FILE, predictions.to_csv(index=False, float_format="%.5f"))
    for name, text in (extra_files or {}).items():
        atomic.write_text(staging / name, text)
    if encoder_tensors:
        tuned = {k: np.require(v.detach().cpu().numpy() if hasattr(v, "detach") else v, requirements="C")
                 for k, v in encoder_tensors.items()}
        bases = {kind: str(config.get("encoders", {}).get(kind, {}).get("name"))
                 for kind in sorted({k.partition(".")[0] for k in tuned})}
        atomic.write_bytes(staging / ENCODERS_FILE, save_numpy_bytes(tuned, metadata=bases))
    atomic.replace_dir(staging, out_dir)
    return out_dir


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = atomic.settled_dir(path)  # a writer killed mid-swap left the old copy aside
    cfg_file = path / CONFIG_FILE
    if not path.is_dir() or not cfg_file.is_file():
        raise InputError(f"{path} is not a checkpoint folder: it has no {CONFIG_FILE}")
    if cfg_file.stat().st_size > MAX_CONFIG_BYTES:
        raise InputError(f"{cfg_file} is larger than {MAX_CONFIG_BYTES} bytes; refusing to read it")
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{cfg_file} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise InputError(f"{cfg_file} must hold a JSON object")
    _validate_config(config, path)
    weights_file = path / WEIGHTS_FILE
    if not weights_file.is_file():
        others = sorted(p.name for p in path.glob("*.pt*")) + sorted(p.name for p in path.glob("*.bin"))
        hint = f" (found {others}: pickled weights are not loaded; convert them to safetensors)" if others else ""
        raise InputError(f"{path} has no {WEIGHTS_FILE}{hint}")
    try:
        weights = load_numpy(str(weights_file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{weights_file} is not a readable safetensors file: {exc}") from None
    metrics = {}
    if (path / METRICS_FILE).is_file():
        try:
            metrics = json.loads((path / METRICS_FILE).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            metrics = {}
    return Checkpoint(path=path, config=config, weights=weights, metrics=metrics)


def _validate_config(config: dict, where: Path) -> None:
    from .models import list_models  # late import: the registry imports heads and torch

    def bad(msg: str) -> InputError:
        return InputError(f"checkpoint {where}: {msg}")

    if config.get("format_version") != FORMAT_VERSION:
        raise bad(f"unsupported format_version {config.get('format_version')!r} (expected {FORMAT_VERSION})")
    model = config.get("model")
    if model not in list_models():
        raise bad(f"unknown model {model!r}; known models: {', '.join(list_models())}")
    if list(config.get("genres", [])) != list(GENRES):
        raise bad("its genre list differs from the 23 MM-IMDb genres in mmgenre.genres")
    thr = config.get("thresholds")
    if (not isinstance(thr, list) or len(thr) != len(GENRES)
            or not all(isinstance(t, (int, float)) and 0.0 <= t <= 1.0 for t in thr)):
        raise bad("'thresholds' must be a list of 23 numbers in [0, 1]")
    encoders = config.get("encoders", {})
    if not isinstance(encoders, dict):
        raise bad("'encoders' must be an object")
    from .encoders import ENCODER_KINDS, list_encoders
    for kind, info in encoders.items():
        if kind not in ENCODER_KINDS or not isinstance(info, dict):
            raise bad(f"unknown encoder kind {kind!r}")
        name = info.get("name")
        if not isinstance(name, str) or not name:
            raise bad(f"encoder {kind!r} has no name")
        if name not in list_encoders(kind) and not info.get("custom", False):
            raise bad(f"unknown {kind} encoder {name!r}; known: {', '.join(list_encoders(kind))}")


def _finite(obj):
    """JSON has no NaN: undefined figures (e.g. ROC-AUC of a genre with no positives) become null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
