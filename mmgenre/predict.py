"""``Predictor``: a trained model (frozen encoders + head) rebuilt from its checkpoint alone.

    p = Predictor.from_checkpoint("checkpoints/gmu")
    p.predict(poster="poster.jpeg", plot="A detective ...")
    -> {"model": "gmu", "probabilities": {"Drama": 0.71, ...}, "predicted": ["Drama", ...], ...}
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .baselines import TfidfLogReg
from .batching import image_batch, text_batch
from .checkpoint import Checkpoint, load_checkpoint
from .data import clean_plot, load_poster
from .encoders import build_encoder
from .errors import InputError
from .genres import GENRES
from .heads import build_head
from .models import encoder_kinds, is_baseline, model_modalities


@dataclass
class Inputs:
    """Validated inputs of one movie: an RGB poster (or None) and a cleaned plot ('' if none)."""

    poster: Image.Image | None
    plot: str

    @property
    def has_poster(self) -> bool:
        return self.poster is not None

    @property
    def has_plot(self) -> bool:
        return bool(self.plot)


def prepare_inputs(poster=None, plot=None) -> Inputs:
    """Check and normalise user inputs; raises InputError with a clear message."""
    if isinstance(poster, np.ndarray):
        if poster.ndim not in (2, 3) or poster.size == 0:
            raise InputError(f"poster array has shape {poster.shape}; expected (H, W) or (H, W, C)")
        poster = Image.fromarray(np.ascontiguousarray(poster.astype(np.uint8)))
    img = load_poster(poster) if poster is not None else None
    text = clean_plot(plot)
    if img is None and not text:
        raise InputError("nothing to predict from: give a poster, a plot, or both")
    return Inputs(img, text)


_MODELS_LOCK = threading.RLock()


@functools.lru_cache(maxsize=8)
def _shared_encoder(kind: str, name: str, weights: str | None, pretrained: bool):
    # Encoders are frozen and stateless at inference, so checkpoints that use the same one share it.
    return build_encoder(kind, name, weights=weights, pretrained=pretrained)


def _build_head(path, ckpt: Checkpoint):
    """The checkpoint's head with its weights loaded; InputError for any config/weights mismatch.

    The head is first built on the meta device (nothing allocated) and its parameter shapes are
    compared with the weights file, so a crafted config (say ``hidden: 10**9``) cannot make us
    allocate terabytes; the real head is then no bigger than the weights file.
    """
    head_cfg = ckpt.config.get("head")
    if not isinstance(head_cfg, dict) or not isinstance(head_cfg.get("hparams", {}), dict):
        raise InputError(f"checkpoint {path}: its head config is incomplete or wrong (expected an object "
                         "with 'dims' and 'hparams')")

    def build():
        return build_head(ckpt.model, head_cfg["dims"], head_cfg.get("n_genres", len(GENRES)),
                          **head_cfg.get("hparams", {}))

    try:
        with torch.device("meta"):
            probe = build()
    except InputError as exc:
        raise InputError(f"checkpoint {path}: {exc}") from None
    except (KeyError, TypeError, ValueError, ArithmeticError, RuntimeError, NotImplementedError) as exc:
        raise InputError(f"checkpoint {path}: its head config is incomplete or wrong ({exc!r})") from None
    expected = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in ckpt.weights.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))[:3]
        unexpected = sorted(set(found) - set(expected))[:3]
        shapes = [f"{k}: {found[k]} vs {expected[k]}" for k in sorted(set(expected) & set(found))
                  if found[k] != expected[k]][:3]
        raise InputError(f"checkpoint {path}: weights do not match the model in its config "
                         f"(missing {missing}, unexpected {unexpected}, shape file vs config {shapes})")
    head = build()
    head.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ckpt.weights.items()}, strict=True)
    return head.eval()


class Predictor:
    def __init__(self, checkpoint: Checkpoint, model, encoders: dict):
        self.checkpoint = checkpoint
        self.model = model
        self.encoders = encoders
        self.name: str = checkpoint.model
        self.thresholds: np.ndarray = checkpoint.thresholds
        self.modalities: tuple[str, ...] = model_modalities(self.name)
        head_cfg = checkpoint.config.get("head", {})
        self.max_tokens: int | None = head_cfg.get("max_tokens")
        # torch modules are not re-entrant across threads, and predictors share encoders
        # (_shared_encoder), on which explanations register hooks: one lock for all of them.
        self._lock = _MODELS_LOCK

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | Path, *, encoders: dict | None = None) -> "Predictor":
        """Rebuild from ``path``; ``encoders`` may replace encoders by kind (tests use random ones)."""
        ckpt = load_checkpoint(path)
        cfg = ckpt.config
        if is_baseline(ckpt.model):
            try:
                model = TfidfLogReg.from_state(ckpt.weights, cfg["head"]["hparams"])
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"checkpoint {path}: baseline weights do not match its config ({exc})") from None
            return cls(ckpt, model, {})
        head = _build_head(path, ckpt)
        built = dict(encoders or {})
        for kind in encoder_kinds(ckpt.model):
            if kind not in built:
                info = cfg.get("encoders", {}).get(kind)
                if info is None:
                    raise InputError(f"checkpoint {path}: config names no {kind} encoder")
                weights = info.get("weights")
                if weights is not None and not isinstance(weights, str):
                    raise InputError(f"checkpoint {path}: encoder {kind!r} 'weights' must be a path string")
                built[kind] = _shared_encoder(kind, info["name"], weights, bool(info.get("pretrained", True)))
        return cls(ckpt, head, built)

    # -- features --------------------------------------------------------------------------
    def batch(self, inputs: Inputs, pixels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The head's batch for one movie from live encoders (gradients flow; no no_grad here)."""
        batch: dict[str, torch.Tensor] = {}
        if "text" in self.encoders:
            enc = self.encoders["text"]
            toks = enc.tokenize([inputs.plot])
            batch.update(text_batch(enc(toks["input_ids"], toks["attention_mask"]), self.max_tokens,
                                    [inputs.has_plot]))
        if "image" in self.encoders:
            enc = self.encoders["image"]
            if pixels is None:
                pixels = (enc.preprocess(inputs.poster) if inputs.has_poster
                          else torch.zeros(3, *enc.input_size))[None]
            batch.update(image_batch(enc(pixels), [inputs.has_poster]))
        if "detector" in self.encoders:
            det = self.encoders["detector"].features(inputs.poster)
            batch["det"] = torch.from_numpy(np.asarray(det, dtype=np.float32))[None]
            batch.setdefault("has_image", torch.tensor([inputs.has_poster]))
        return batch

    def logits(self, inputs: Inputs) -> torch.Tensor:
        return self.model(self.batch(inputs)).logits

    def probabilities(self, inputs: Inputs) -> np.ndarray:
        if is_baseline(self.name):
            return self.model.predict_proba([inputs.plot])[0]
        with self._lock, torch.no_grad():
            return torch.sigmoid(self.logits(inputs))[0].numpy()

    # -- public API ------------------------------------------------------------------------
    def check_modalities(self, inputs: Inputs) -> None:
        if self.modalities == ("text",) and not inputs.has_plot:
            raise InputError(f"model {self.name} reads the plot only, and the plot is empty")
        if set(self.modalities) <= {"image", "det"} and not inputs.has_poster:
            raise InputError(f"model {self.name} reads the poster only, and no poster was given")

    def predict(self, poster=None, plot=None) -> dict:
        inputs = prepare_inputs(poster, plot)
        self.check_modalities(inputs)
        probs = self.probabilities(inputs)
        return self.format(probs, inputs)

    def format(self, probs: np.ndarray, inputs: Inputs) -> dict:
        order = np.argsort(-probs)
        return {"model": self.name,
                "probabilities": {GENRES[i]: float(probs[i]) for i in order},
                "predicted": [GENRES[i] for i in order if probs[i] >= self.thresholds[i]],
                "thresholds": {g: float(t) for g, t in zip(GENRES, self.thresholds)},
                "used": {"poster": inputs.has_poster and any(m in self.modalities for m in ("image", "det")),
                         "plot": inputs.has_plot and "text" in self.modalities}}

    def explain(self, poster=None, plot=None, genres=None, **kwargs):
        """An ``Explanation`` (Grad-CAM, token attributions, attention, modality shares)."""
        from .explain import explain_prediction
        return explain_prediction(self, prepare_inputs(poster, plot), genres=genres, **kwargs)
