"""How far two models' explanations of the same movie agree.

    ag = agreement(exp_a, exp_b, "Drama")
    ag.word_rank_correlation, ag.cam_iou, ag.probability_difference, ag.reasons

* word_rank_correlation: Spearman's rank correlation of the two models' word scores for the genre,
  over the words both explanations hold. Words are the plot's whitespace words for every model
  (``mmgenre.encoders.text.words``, tf-idf alike), but an encoder leaves out the words past its
  window and words without tokens, so the lists are aligned first (``difflib``, in order).
* cam_iou: intersection over union of the top ``top_share`` (20%) of the two Grad-CAMs, both
  resized to a common grid (the smaller of the two, longer side at most ``cam_side`` pixels).
* probability_difference: B's minus A's probability, every genre.

A figure a model cannot give (no poster branch, no plot branch, the genre not explained) is None
with its reason in ``reasons``. Explanations of different posters or plots raise InputError.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr

from mmgenre.errors import InputError
from mmgenre.explain.explanation import Explanation
from mmgenre.explain.faithfulness import top_mask
from mmgenre.genres import GENRE_INDEX, GENRES, normalize_genre
from mmgenre.viz import resize_map

MIN_WORDS = 3            # fewer common words give no rank correlation
MIN_WORD_OVERLAP = 0.5   # share of the shorter word list the two must have in common (same plot)


@dataclass
class Agreement:
    models: tuple[str, str]
    genre: str | None
    word_rank_correlation: float | None = None
    words_compared: int = 0
    cam_iou: float | None = None
    cam_grid: tuple[int, int] | None = None
    probability_difference: dict[str, float] = field(default_factory=dict)  # B - A, GENRES order
    predicted_by_both: list[str] = field(default_factory=list)
    predicted_only_by_a: list[str] = field(default_factory=list)
    predicted_only_by_b: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # "word_rank_correlation" / "cam_iou" -> why None

    @property
    def mean_abs_probability_difference(self) -> float:
        return float(np.mean(np.abs(list(self.probability_difference.values()))))

    def to_dict(self) -> dict:
        return {"models": list(self.models), "genre": self.genre,
                "word_rank_correlation": self.word_rank_correlation, "words_compared": self.words_compared,
                "cam_iou": self.cam_iou, "cam_grid": None if self.cam_grid is None else list(self.cam_grid),
                "probability_difference": self.probability_difference,
                "mean_abs_probability_difference": self.mean_abs_probability_difference,
                "predicted_by_both": self.predicted_by_both, "predicted_only_by_a": self.predicted_only_by_a,
                "predicted_only_by_b": self.predicted_only_by_b,
                "reasons": self.reasons}


def aligned_words(a: list[str], b: list[str]) -> list[tuple[int, int]]:
    """Pairs (i, j) with a[i] == b[j], in order: the longest matching blocks of the two lists."""
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return [(m.a + k, m.b + k) for m in matcher.get_matching_blocks() for k in range(m.size)]


def _check_same_movie(a: Explanation, b: Explanation) -> list[tuple[int, int]]:
    if a.poster is not None and b.poster is not None and (
            a.poster.shape != b.poster.shape or not np.array_equal(a.poster, b.poster)):
        raise InputError("the two explanations are of different posters (not the same movie)")
    pairs = aligned_words(a.words, b.words) if a.words and b.words else []
    if a.words and b.words and len(pairs) < MIN_WORD_OVERLAP * min(len(a.words), len(b.words)):
        raise InputError(f"the two explanations share {len(pairs)} of {min(len(a.words), len(b.words))} "
                         "words: they are of different plots (not the same movie)")
    return pairs


def _pick_genre(genre, a: Explanation, b: Explanation) -> str | None:
    if genre is not None:
        canon = normalize_genre(genre) if isinstance(genre, str) else None
        if canon not in GENRE_INDEX:
            raise InputError(f"unknown genre {str(genre)[:80]!r}; choose from {', '.join(GENRES)}")
        return canon
    common = [g for g in a.genres if g in b.genres]
    return (common or a.genres or b.genres or [None])[0]


def _missing(exp: Explanation, genre: str, part: str) -> str:
    if genre not in exp.genres:
        return f"{exp.model} did not explain {genre}"
    if part == "words":
        return f"{exp.model} has no word scores (it does not read the plot, or the plot is empty)"
    if exp.poster is None:
        return "there is no poster"
    return f"{exp.model} has no Grad-CAM (it does not read the poster, or only its detected objects)"


def common_grid(a: tuple[int, int], b: tuple[int, int], side: int) -> tuple[int, int]:
    """The smaller of two map shapes, scaled down so its longer side is at most ``side``."""
    h, w = min(a[0], b[0]), min(a[1], b[1])
    s = min(1.0, side / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def top_region_iou(cam_a: np.ndarray, cam_b: np.ndarray, grid: tuple[int, int], share: float) -> float:
    """IoU of the top ``share`` of two maps on ``grid`` (ties broken alike: the same seed for both)."""
    ma = top_mask(resize_map(cam_a, grid), share, np.random.default_rng(0))
    mb = top_mask(resize_map(cam_b, grid), share, np.random.default_rng(0))
    union = int((ma | mb).sum())
    return float((ma & mb).sum() / union) if union else 1.0


def agreement(a: Explanation, b: Explanation, genre: str | None = None, *, top_share: float = 0.2,
              cam_side: int = 64) -> Agreement:
    """Agreement figures of two explanations of one movie for ``genre`` (default: the first genre
    both explain, else A's first)."""
    for name, exp in (("a", a), ("b", b)):
        if not isinstance(exp, Explanation):
            raise InputError(f"{name} must be a mmgenre.explain.Explanation, got {type(exp).__name__}")
    if isinstance(top_share, bool) or not isinstance(top_share, (int, float)) or not 0 < top_share < 1:
        raise InputError(f"top_share must be a number in (0, 1), got {top_share!r}")
    if isinstance(cam_side, bool) or not isinstance(cam_side, int) or cam_side < 2:
        raise InputError(f"cam_side must be an int >= 2, got {cam_side!r}")
    pairs = _check_same_movie(a, b)
    g = _pick_genre(genre, a, b)
    out = Agreement(models=(a.model, b.model), genre=g)
    pa, pb = a.probabilities, b.probabilities
    out.probability_difference = {x: float(pb[x]) - float(pa[x]) for x in GENRES if x in pa and x in pb}
    sa, sb = set(a.predicted), set(b.predicted)
    out.predicted_by_both = [x for x in GENRES if x in sa & sb]
    out.predicted_only_by_a = [x for x in GENRES if x in sa - sb]
    out.predicted_only_by_b = [x for x in GENRES if x in sb - sa]
    if g is None:
        out.reasons = {k: "neither explanation explains a genre" for k in ("word_rank_correlation", "cam_iou")}
        return out
    _words(out, a, b, g, pairs)
    _cams(out, a, b, g, top_share, cam_side)
    return out


def _words(out: Agreement, a: Explanation, b: Explanation, g: str, pairs) -> None:
    for exp in (a, b):
        if g not in exp.token_scores or not exp.words:
            out.reasons["word_rank_correlation"] = _missing(exp, g, "words")
            return
    out.words_compared = len(pairs)
    if len(pairs) < MIN_WORDS:
        out.reasons["word_rank_correlation"] = f"only {len(pairs)} words in common (need {MIN_WORDS})"
        return
    x = np.asarray([a.token_scores[g][i] for i, _ in pairs], dtype=np.float64)
    y = np.asarray([b.token_scores[g][j] for _, j in pairs], dtype=np.float64)
    for exp, v in ((a, x), (b, y)):
        if np.ptp(v) == 0:
            out.reasons["word_rank_correlation"] = f"{exp.model} scores every common word the same"
            return
    out.word_rank_correlation = float(spearmanr(x, y).statistic)


def _cams(out: Agreement, a: Explanation, b: Explanation, g: str, share: float, side: int) -> None:
    for exp in (a, b):
        if g not in exp.poster_cam:
            out.reasons["cam_iou"] = _missing(exp, g, "cam")
            return
    ca, cb = a.poster_cam[g], b.poster_cam[g]
    out.cam_grid = common_grid(ca.shape, cb.shape, side)
    out.cam_iou = top_region_iou(ca, cb, out.cam_grid, share)
