"""``NeuralModel``: a genre head (``mmgenre.heads``) over its encoders; every registered head.

Trained on cached encoder features (``fit``), run on live encoder outputs at prediction and
explanation time; the checkpoint holds the head's weights and config, and names the encoders.
A fine-tuned checkpoint (``config["tuning"]``, ``encoders.safetensors``; see ``mmgenre.tuning``)
gets private encoders rebuilt from their base with the tuned weights; frozen ones are shared.
"""
from __future__ import annotations

import copy
import functools

import numpy as np
import torch

from mmgenre.batching import build_table, live_batch, predict_table
from mmgenre.encoders import build_encoder
from mmgenre.errors import InputError
from mmgenre.explain.faithfulness import randomize_head
from mmgenre.explain.neural import NeuralExplainer
from mmgenre.families.base import Model
from mmgenre.genres import GENRES
from mmgenre.heads import HEADS, build_head
from mmgenre.heads.base import Head
from mmgenre.tuning import FROZEN, TuningSpec, restore_tuned


@functools.lru_cache(maxsize=8)
def _shared_encoder(kind: str, name: str, weights: str | None, pretrained: bool):
    # Encoders are frozen and stateless at inference, so checkpoints that use the same one share it.
    return build_encoder(kind, name, weights=weights, pretrained=pretrained)


class NeuralModel(Model):
    """``head`` over ``encoders`` ({kind: encoder}); ``max_tokens``: the head's plot-token window."""

    def __init__(self, head: Head, encoders: dict, max_tokens: int | None):
        self.head, self.encoders, self.max_tokens = head, encoders, max_tokens
        self.name = head.name

    @classmethod
    def modalities_of(cls, name: str) -> tuple[str, ...]:
        return HEADS[name].modalities

    # -- training and storage ----------------------------------------------------------------
    @classmethod
    def fit(cls, name, movies, features, labels, trainer):
        head_cls = HEADS[name]
        max_tokens = trainer.max_tokens or head_cls.default_max_tokens
        tables = {s: build_table(features, [m.imdb_id for m in ms], sequences=head_cls.uses_sequences,
                                 max_tokens=max_tokens) for s, ms in movies.items()}
        head, history = trainer.fit_head(name, tables["train"], labels["train"], tables["dev"], labels["dev"])
        model = cls(head, {}, max_tokens)
        return model, {s: predict_table(head, t) for s, t in tables.items()}, history

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        weights = {k: v.detach().cpu().numpy() for k, v in self.head.state_dict().items()}
        return weights, {"name": self.name, "dims": dict(self.head.dims), "n_genres": self.head.n_genres,
                         "hparams": self.head.hparams(), "uses_sequences": self.head.uses_sequences,
                         "max_tokens": self.max_tokens}

    @classmethod
    def from_checkpoint(cls, ckpt, *, encoders=None):
        head = _build_head(ckpt)
        spec, tensors = _tuning_of(ckpt)
        tuned = sorted({key.partition(".")[0] for key in tensors})
        built = dict(encoders or {})
        for kind in cls.encoder_kinds_of(ckpt.model):
            info = ckpt.config.get("encoders", {}).get(kind)
            given = kind in built  # a caller's encoder (tests: small random ones) is taken as it is
            if kind in tuned:
                # A tuned encoder is this checkpoint's own: a private copy (of a given one, or freshly
                # built from its base), never one of the encoders shared by frozen checkpoints.
                built[kind] = _tuned_base(ckpt, kind, info, built.get(kind))
            elif not given:
                weights = _check_info(ckpt, kind, info)
                built[kind] = _shared_encoder(kind, info["name"], weights, bool(info.get("pretrained", True)))
            if not given:
                _check_digest(ckpt, kind, info, built[kind])
        if tensors:
            missing = sorted(set(tuned) - set(built))
            if missing:
                raise InputError(f"checkpoint {ckpt.path}: its encoders.safetensors tunes a {missing[0]} encoder "
                                 f"that the model {ckpt.model} does not read")
            try:
                restore_tuned({k: built[k] for k in tuned}, spec, {k: torch.from_numpy(v) for k, v in tensors.items()})
            except InputError as exc:
                raise InputError(f"checkpoint {ckpt.path}: {exc}") from None
        return cls(head, built, ckpt.config["head"].get("max_tokens"))

    # -- one movie -------------------------------------------------------------------------
    def probabilities(self, inputs) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(self.head(live_batch(self.encoders, inputs, self.max_tokens)).logits)[0].numpy()

    def explanation(self, inputs, options):
        explainer = NeuralExplainer(self.head, self.encoders, self.max_tokens, inputs, options)
        return explainer.probabilities, explainer.stages()

    def randomized(self, seed: int) -> "NeuralModel":
        clone = copy.copy(self)
        clone.head = randomize_head(self.head, seed)
        return clone


ENCODERS_FILE = "encoders.safetensors"  # mmgenre.checkpoint.ENCODERS_FILE (importing it would be a cycle)


def _check_info(ckpt, kind: str, info) -> str | None:
    """``info`` (``config["encoders"][kind]``) is usable; returns its weights path, if any."""
    if info is None:
        raise InputError(f"checkpoint {ckpt.path}: config names no {kind} encoder")
    weights = info.get("weights")
    if weights is not None and not isinstance(weights, str):
        raise InputError(f"checkpoint {ckpt.path}: encoder {kind!r} 'weights' must be a path string")
    return weights


def _tuning_of(ckpt) -> tuple[TuningSpec, dict[str, np.ndarray]]:
    """The checkpoint's tuning spec (frozen when its config has none: older checkpoints) and its
    tuned encoder tensors; InputError when the two disagree."""
    try:
        spec = TuningSpec.from_dict(ckpt.config["tuning"]) if "tuning" in ckpt.config else FROZEN
    except InputError as exc:
        raise InputError(f"checkpoint {ckpt.path}: its 'tuning' config is wrong: {exc}") from None
    tensors = ckpt.encoder_tensors()
    if spec.mode == "frozen" and tensors:
        raise InputError(f"checkpoint {ckpt.path}: it has {ENCODERS_FILE} but its config says the encoders "
                         "were not tuned")
    if spec.mode != "frozen" and not tensors:
        raise InputError(f"checkpoint {ckpt.path}: its config says the encoders were tuned ({spec.mode}) but "
                         f"it has no {ENCODERS_FILE} with the tuned weights")
    return spec, tensors


def _tuned_base(ckpt, kind: str, info, given):
    """A fresh base encoder for the tuned ``kind``: a copy of ``given`` or built from the config."""
    weights = _check_info(ckpt, kind, info)
    base = ckpt.encoder_bases().get(kind)
    name = getattr(given, "name", None) if given is not None else info["name"]
    if base is not None and name != base:
        raise InputError(f"checkpoint {ckpt.path}: a checkpoint tuned on another encoder: its {kind} encoder "
                         f"was tuned on {base!r}, not {name!r}")
    if given is not None:
        return copy.deepcopy(given)
    return build_encoder(kind, info["name"], weights=weights, pretrained=bool(info.get("pretrained", True)))


def _check_digest(ckpt, kind: str, info: dict, encoder) -> None:
    """InputError when the encoder built from the config has other weights than the ones the
    checkpoint was trained on (same name and architecture, another file). Checkpoints from before
    digests were recorded, and randomly initialised encoders, are not checked."""
    expected = info.get("weights_digest")
    digest = getattr(encoder, "weights_digest", None)
    if not isinstance(expected, str) or not info.get("pretrained", True) or digest is None:
        return
    found = digest()
    if found != expected:
        where = info.get("weights") or info.get("source") or info["name"]
        raise InputError(f"checkpoint {ckpt.path}: its {kind} encoder {info['name']!r} was trained on other "
                         f"weights (digest {expected[:16]!r}) than the ones loaded here from {str(where)[:200]!r} "
                         f"(digest {found!r}): its head would read features it never saw. Install the weights it "
                         "names (config.json, 'encoders') or retrain on these.")


# Checkpoints written before the batch schema named the detector modality after its encoder kind
# call it "det" (in the head's dims and its ModuleDict weight names).
_LEGACY_MODALITIES = {"det": "detector"}


def _upgrade_legacy(head_cfg: dict, weights: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    dims = head_cfg.get("dims")
    if not isinstance(dims, dict) or not set(dims) & set(_LEGACY_MODALITIES):
        return head_cfg, weights
    rename = lambda key: ".".join(_LEGACY_MODALITIES.get(part, part) for part in key.split("."))  # noqa: E731
    dims = {_LEGACY_MODALITIES.get(m, m): d for m, d in dims.items()}
    return {**head_cfg, "dims": dims}, {rename(k): v for k, v in weights.items()}


def _build_head(ckpt) -> Head:
    """The checkpoint's head with its weights loaded; InputError for any config/weights mismatch.

    The head is first built on the meta device (nothing allocated) and its parameter shapes are
    compared with the weights file, so a crafted config (say ``hidden: 10**9``) cannot make us
    allocate terabytes; the real head is then no bigger than the weights file.
    """
    path = ckpt.path
    head_cfg = ckpt.config.get("head")
    if not isinstance(head_cfg, dict) or not isinstance(head_cfg.get("hparams", {}), dict):
        raise InputError(f"checkpoint {path}: its head config is incomplete or wrong (expected an object "
                         "with 'dims' and 'hparams')")
    head_cfg, weights = _upgrade_legacy(head_cfg, ckpt.weights)

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
    found = {k: tuple(v.shape) for k, v in weights.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))[:3]
        unexpected = sorted(set(found) - set(expected))[:3]
        shapes = [f"{k}: {found[k]} vs {expected[k]}" for k in sorted(set(expected) & set(found))
                  if found[k] != expected[k]][:3]
        raise InputError(f"checkpoint {path}: weights do not match the model in its config "
                         f"(missing {missing}, unexpected {unexpected}, shape file vs config {shapes})")
    head = build()
    head.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()}, strict=True)
    return head.eval()
