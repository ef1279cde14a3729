"""Explanations of one prediction: Grad-CAM on the poster, Integrated Gradients on the plot,
cross-attention maps, modality shares and removal tests, detected objects, faithfulness figures.

    p = Predictor.from_checkpoint("checkpoints/gmu")
    exp = p.explain(poster="poster.jpeg", plot="A detective ...")    # -> Explanation
    exp.poster_cam["Drama"], exp.token_scores["Drama"], exp.to_dict()

The encoders are frozen but not run under ``no_grad``, so gradients reach the pixels' feature maps
(Grad-CAM) and the word embeddings (IG). Each explainer holds the other modality fixed: Grad-CAM
sees a model of the pixels only, IG a model of the token ids only.
"""
from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from mmgenre.encoders import build_encoder, default_encoder
from mmgenre.errors import EncoderUnavailableError, InputError
from mmgenre.explain.cross_attention import cross_attention_maps
from mmgenre.explain.faithfulness import gradcam_deletion, ig_completeness
from mmgenre.explain.gradcam import PixelsToLogits, gradcam_maps, to_poster
from mmgenre.explain.modality import ablation_batch, ablation_table, modality_shares
from mmgenre.explain.text_attr import IdsToLogits, WordAttribution, integrated_gradients, tfidf_word_scores
from mmgenre.genres import GENRE_INDEX, GENRES, normalize_genre
from mmgenre.models import is_baseline
from mmgenre.viz import resize_map

__all__ = ["Explanation", "explain_prediction", "choose_genres"]


@dataclass
class Explanation:
    """Everything explained about one prediction (see the module docstring of each part)."""

    model: str
    genres: list[str]                       # the explained genres
    probabilities: dict[str, float]         # every genre, highest first
    predicted: list[str]
    poster: np.ndarray | None               # (H, W, 3) uint8, upright
    poster_cam: dict[str, np.ndarray]       # genre -> (H, W) float32 in [0, 1]
    words: list[str]
    token_scores: dict[str, np.ndarray]     # genre -> (n_words,) attribution per word
    ig_delta: dict[str, float]              # genre -> captum convergence delta (0 for tf-idf: exact)
    cross_attention: dict | None
    modality: dict
    objects: list[dict]
    faithfulness: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self, *, cam_side: int | None = 64, digits: int = 4) -> dict:
        """JSON-serialisable dict: arrays become lists rounded to ``digits``, non-finite -> None.

        The poster itself is left out (``poster_size`` = [width, height] instead) and each CAM is
        resized so its longer side is at most ``cam_side`` pixels (None: full size).
        """
        cams = {}
        for g, cam in self.poster_cam.items():
            h, w = cam.shape
            if cam_side is not None and max(h, w) > cam_side:
                s = cam_side / max(h, w)
                cam = resize_map(cam, (max(1, round(h * s)), max(1, round(w * s))))
            cams[g] = cam
        out = {"model": self.model, "genres": self.genres, "probabilities": self.probabilities,
               "predicted": self.predicted,
               "poster_size": None if self.poster is None else [int(self.poster.shape[1]), int(self.poster.shape[0])],
               "poster_cam": cams, "words": self.words, "token_scores": self.token_scores,
               "ig_delta": self.ig_delta, "cross_attention": self.cross_attention, "modality": self.modality,
               "objects": self.objects, "faithfulness": self.faithfulness, "timings": self.timings}
        return _jsonable(out, digits)


def _jsonable(obj, digits: int):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, digits) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "fc":
            arr = np.round(obj.astype(np.float64), digits)
            return _jsonable(arr.tolist(), digits) if not np.isfinite(arr).all() else arr.tolist()
        return obj.tolist()
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return round(float(obj), digits) if math.isfinite(obj) else None
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.detach().cpu().numpy(), digits)
    return obj


def choose_genres(genres, probs: np.ndarray, predicted: list[str], top: int = 3) -> list[int]:
    """Indices of the genres to explain: the given names (validated), else the predicted ones,
    else the ``top`` most probable."""
    if genres is None or (not isinstance(genres, str) and len(genres) == 0):
        if predicted:
            return [GENRE_INDEX[g] for g in predicted]
        return [int(i) for i in np.argsort(-probs)[:top]]
    if isinstance(genres, str):
        genres = [genres]
    out: list[int] = []
    for g in genres:
        canon = normalize_genre(g)
        if canon not in GENRE_INDEX:
            raise InputError(f"genres: unknown genre {str(g)[:80]!r}; choose from {', '.join(GENRES)}")
        if GENRE_INDEX[canon] not in out:
            out.append(GENRE_INDEX[canon])
    return out


@functools.lru_cache(maxsize=1)
def default_detector():
    """The offline default detector (Haar cascades), built once."""
    return build_encoder("detector", default_encoder("detector"))


def detect_objects(predictor, poster) -> list[dict]:
    """Detections on the poster by the predictor's detector, else the default one ([] if unavailable)."""
    if poster is None:
        return []
    det = predictor.encoders.get("detector")
    if det is None:
        try:
            det = default_detector()
        except EncoderUnavailableError:
            return []
    return [{"label": d.label, "box": [float(v) for v in d.box], "score": float(d.score)}
            for d in det.detect(poster)]


class _Timer:
    """Seconds per named part: ``with timer.part("gradcam"): ...``."""

    def __init__(self):
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def part(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0


def explain_prediction(predictor, inputs, genres=None, *, ig_steps: int = 32, faithfulness: bool = True,
                       random_seed: int = 0) -> Explanation:
    """Explain ``predictor``'s prediction for ``inputs`` (a ``mmgenre.predict.Inputs``).

    ``genres``: names to explain (default: the predicted genres, else the 3 most probable).
    ``ig_steps``: Integrated Gradients steps. ``faithfulness``: attach the Grad-CAM deletion test
    and IG completeness per genre. ``random_seed``: seeds the random deletion masks.
    """
    from mmgenre.predict import Inputs

    if not isinstance(inputs, Inputs):
        raise InputError(f"explain_prediction: inputs must be mmgenre.predict.Inputs (use prepare_inputs), "
                         f"got {type(inputs).__name__}")
    if isinstance(ig_steps, bool) or not isinstance(ig_steps, int) or ig_steps < 2:
        raise InputError(f"ig_steps must be an int >= 2, got {ig_steps!r}")
    predictor.check_modalities(inputs)
    timer = _Timer()
    t0 = time.perf_counter()
    lock = getattr(predictor, "_lock", None) or contextlib.nullcontext()
    with lock:
        if is_baseline(predictor.name):
            exp = _explain_tfidf(predictor, inputs, genres, timer, faithfulness)
        else:
            exp = _explain_neural(predictor, inputs, genres, timer, ig_steps, faithfulness, random_seed)
    with timer.part("objects"):
        exp.objects = detect_objects(predictor, inputs.poster)
    timer.timings["total"] = time.perf_counter() - t0
    exp.timings = timer.timings
    return exp


def _explain_tfidf(predictor, inputs, genres, timer: _Timer, faithfulness: bool) -> Explanation:
    model = predictor.model
    with timer.part("forward"):
        logits = model.decision_function([inputs.plot])[0]
        probs = 1.0 / (1.0 + np.exp(-logits))
        fmt = predictor.format(probs, inputs)
        targets = choose_genres(genres, probs, fmt["predicted"])
        prior = 1.0 / (1.0 + np.exp(-np.asarray(model.intercept, dtype=np.float64)))  # empty plot
    with timer.part("text_attribution"):
        wa = tfidf_word_scores(model, inputs.plot, targets)
    ablation = {GENRES[t]: {"p": float(probs[t]), "without_poster": float(probs[t]),
                            "without_plot": float(prior[t])} for t in targets}
    exp = _base(predictor, inputs, fmt, targets)
    _attach_words(exp, wa, targets)
    exp.modality = {"gate_text_share": None, "weights": None, "ablation": ablation}
    if faithfulness:
        exp.faithfulness = {"ig_completeness": {GENRES[t]: ig_completeness(wa.scores[i], wa.f_diff[i])
                                                for i, t in enumerate(targets)}}
    return exp


def _base(predictor, inputs, fmt: dict, targets: list[int]) -> Explanation:
    return Explanation(
        model=predictor.name, genres=[GENRES[t] for t in targets], probabilities=fmt["probabilities"],
        predicted=fmt["predicted"], poster=None if inputs.poster is None else np.asarray(inputs.poster, dtype=np.uint8),
        poster_cam={}, words=[], token_scores={}, ig_delta={}, cross_attention=None,
        modality={"gate_text_share": None, "weights": None, "ablation": {}}, objects=[])


def _attach_words(exp: Explanation, wa: WordAttribution, targets: list[int]) -> None:
    exp.words = list(wa.words)
    exp.token_scores = {GENRES[t]: wa.scores[i].astype(np.float32) for i, t in enumerate(targets)}
    exp.ig_delta = {GENRES[t]: float(wa.delta[i]) for i, t in enumerate(targets)}


def _explain_neural(predictor, inputs, genres, timer: _Timer, ig_steps: int, faithfulness: bool,
                    seed: int) -> Explanation:
    head = predictor.model
    image_enc = predictor.encoders.get("image")
    text_enc = predictor.encoders.get("text")
    with timer.part("forward"), torch.no_grad():
        pixels = None
        grid: list[tuple[int, int]] = []
        handle = None
        if image_enc is not None:
            if inputs.has_poster:
                pixels = image_enc.preprocess(inputs.poster)[None]
            handle = image_enc.register_forward_hook(lambda m, a, out: grid.append(tuple(out.grid)))
        try:
            batch = predictor.batch(inputs, pixels=pixels)
        finally:
            if handle is not None:
                handle.remove()
        batch = {k: v.detach() for k, v in batch.items()}
        out = head(ablation_batch(batch))
        logits = out.logits.double()
        probs3 = torch.sigmoid(logits).numpy()
        fmt = predictor.format(probs3[0], inputs)
        targets = choose_genres(genres, probs3[0], fmt["predicted"])
    exp = _base(predictor, inputs, fmt, targets)

    cam_model = PixelsToLogits(head, image_enc, batch) if image_enc is not None else None
    if cam_model is not None and pixels is not None and targets:
        with timer.part("gradcam"):
            maps = gradcam_maps(cam_model, pixels, targets)
            exp.poster_cam = {GENRES[t]: to_poster(m, image_enc, inputs.poster.size) for t, m in zip(targets, maps)}

    wa = None
    if text_enc is not None and inputs.has_plot:
        with timer.part("text_attribution"):
            wa = integrated_gradients(IdsToLogits(head, text_enc, batch, predictor.max_tokens), inputs.plot,
                                      targets, n_steps=ig_steps)
            _attach_words(exp, wa, targets)

    with timer.part("cross_attention"):
        if wa is not None and pixels is not None and grid:
            exp.cross_attention = cross_attention_maps(out.extras, wa.words, wa.positions, grid[-1], row=0)

    with timer.part("modality"):
        exp.modality = {**modality_shares(head.modalities, out.extras, targets, row=0),
                        "ablation": ablation_table(probs3, targets)}

    if faithfulness:
        with timer.part("faithfulness"):
            exp.faithfulness = {}
            if exp.poster_cam:
                def logits_fn(images: list[np.ndarray]) -> np.ndarray:
                    px = torch.stack([image_enc.preprocess(Image.fromarray(im)) for im in images])
                    with torch.no_grad():
                        return cam_model(px).double().numpy()

                deletion = gradcam_deletion(logits_fn, exp.poster, {t: exp.poster_cam[GENRES[t]] for t in targets},
                                            seed=seed, base_logits=logits[0].numpy())
                exp.faithfulness["deletion"] = {GENRES[t]: d for t, d in deletion.items()}
            if wa is not None:
                exp.faithfulness["ig_completeness"] = {
                    GENRES[t]: ig_completeness(wa.scores[i].sum() if wa.words else 0.0, wa.f_diff[i])
                    for i, t in enumerate(targets)}
    return exp
