"""The explain entry point: a model's explanation stages, run in order within an optional deadline.

A model (``mmgenre.models``) answers ``explanation(inputs, options)`` with its probabilities and
a list of :class:`Stage`; this module picks the genres, runs the stages, detects objects and
times every part. It never asks what kind of model it explains.

With a ``deadline`` (``mmgenre.budget.Deadline``), the first genre is explained first; once the
deadline has expired, the remaining optional stages are skipped and named in
``Explanation.cut_short``: ``extra_genres`` (the genres after the first), ``ablation``,
``faithfulness``, ``objects``. A stage that has started always finishes.
"""
from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mmgenre.budget import Deadline
from mmgenre.encoders import build_encoder, default_encoder
from mmgenre.errors import EncoderUnavailableError, InputError
from mmgenre.explain.explanation import Explanation
from mmgenre.explain.text_attr import TEXT_METHODS
from mmgenre.genres import GENRE_INDEX, GENRES, normalize_genre
from mmgenre.inputs import Inputs
from mmgenre.scheduling import Account

__all__ = ["ExplainOptions", "Stage", "choose_genres", "detect_objects", "explain_prediction"]


@dataclass(frozen=True)
class ExplainOptions:
    ig_steps: int = 32          # Integrated Gradients steps (fast method: the first try, doubled as needed)
    faithfulness: bool = True   # include the faithfulness stage
    random_seed: int = 0        # seeds the random deletion masks
    text_method: str = "fast"   # plot attributions: "fast" (at the encoder output) or "deep" (word embeddings)
    ig_tolerance: float = 0.01  # fast method: convergence delta allowed, as a share of max(|f(x) - f(b)|, 1)


@dataclass(frozen=True)
class Stage:
    """One step of an explanation: ``run(exp, targets)`` fills its part of ``exp``.

    ``name`` keys its time in ``Explanation.timings``. ``optional``: the name recorded in
    ``cut_short`` when a deadline skips it (None: it always runs). ``per_genre``: it explains
    the genres it is given, so with a deadline it runs for the first genre, then for the rest.
    """

    name: str
    run: Callable[[Explanation, list[int]], None]
    optional: str | None = None
    per_genre: bool = False


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


def detect_objects(encoders: dict, poster) -> list[dict]:
    """Detections on the poster by the model's detector, else the default one ([] if unavailable)."""
    if poster is None:
        return []
    det = encoders.get("detector")
    if det is None:
        try:
            det = default_detector()
        except EncoderUnavailableError:
            return []
    return [{"label": d.label, "box": [float(v) for v in d.box], "score": float(d.score)}
            for d in det.detect(poster)]


class _Timer:
    """Seconds per named part: ``with timer.part("gradcam"): ...`` (repeated parts add up)."""

    def __init__(self):
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def part(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0


def explain_prediction(predictor, inputs: Inputs, genres=None, *, ig_steps: int = 32, faithfulness: bool = True,
                       random_seed: int = 0, deadline: Deadline | None = None, text_method: str = "fast",
                       ig_tolerance: float = 0.01) -> Explanation:
    """Explain ``predictor``'s prediction for ``inputs`` (``mmgenre.inputs.prepare_inputs``).

    ``genres``: names to explain (default: the predicted genres, else the 3 most probable).
    ``ig_steps``: Integrated Gradients steps. ``faithfulness``: attach the Grad-CAM deletion test
    and IG completeness per genre. ``random_seed``: seeds the random deletion masks.
    ``deadline``: skip the optional stages left once it has expired (see the module docstring).
    ``text_method``: "fast" (default: IG at the text encoder's output, the step count doubled until
    the delta is within ``ig_tolerance`` of the logit gap; the encoder runs once) or "deep" (IG at
    the word embeddings, ``ig_steps`` steps, the exact full-depth method, 10-40x slower). ``Explanation.text_method`` / ``text_steps``
    say which ran.
    """
    if not isinstance(inputs, Inputs):
        raise InputError(f"explain_prediction: inputs must be mmgenre.inputs.Inputs (use prepare_inputs), "
                         f"got {type(inputs).__name__}")
    if isinstance(ig_steps, bool) or not isinstance(ig_steps, int) or ig_steps < 2:
        raise InputError(f"ig_steps must be an int >= 2, got {ig_steps!r}")
    if text_method not in TEXT_METHODS:
        raise InputError(f"text_method must be one of {', '.join(TEXT_METHODS)}, got {str(text_method)[:40]!r}")
    if isinstance(ig_tolerance, bool) or not isinstance(ig_tolerance, (int, float)) or not 0 < ig_tolerance < 1:
        raise InputError(f"ig_tolerance must be a number in (0, 1), got {ig_tolerance!r}")
    if deadline is not None and not isinstance(deadline, Deadline):
        raise InputError(f"deadline must be a mmgenre.budget.Deadline, got {type(deadline).__name__}")
    predictor.check_modalities(inputs)
    options = ExplainOptions(ig_steps=ig_steps, faithfulness=bool(faithfulness), random_seed=random_seed,
                             text_method=text_method, ig_tolerance=float(ig_tolerance))
    timer, cut = _Timer(), []
    t0 = time.perf_counter()

    def over() -> bool:
        return deadline is not None and deadline.expired

    # The models are shared: each stage holds the lock on its own, so a request that has had
    # less model time can run between two stages of this one (mmgenre.scheduling).
    account = Account()

    @contextlib.contextmanager
    def step(name: str):
        with predictor._lock.hold(account), timer.part(name):  # stage timings exclude the wait
            yield

    with step("forward"):
        probs, stages = predictor.model.explanation(inputs, options)
        prediction = predictor.format(probs, inputs)
        targets = choose_genres(genres, probs, prediction["predicted"])
    exp = Explanation.start(predictor.name, prediction, inputs.poster, targets)
    per_genre = [s for s in stages if s.per_genre]
    # a deadline that can expire: the first genre first, so a late request still explains one
    split = deadline is not None and not math.isinf(deadline.remaining) and len(targets) > 1
    done = targets[:1] if split else targets
    for stage in per_genre:
        with step(stage.name):
            stage.run(exp, done)
    if split:
        if over():
            cut.append("extra_genres")
        else:
            for stage in per_genre:
                with step(stage.name):
                    stage.run(exp, targets[1:])
            done = targets
    exp.genres = [GENRES[t] for t in done]
    for stage in stages:
        if stage.per_genre:
            continue
        if stage.optional and over():
            cut.append(stage.optional)
            continue
        with step(stage.name):
            stage.run(exp, done)
    if over():
        cut.append("objects")
    else:
        with step("objects"):
            exp.objects = detect_objects(predictor.encoders, inputs.poster)
    timer.timings["total"] = time.perf_counter() - t0
    exp.timings, exp.cut_short = timer.timings, cut
    return exp
