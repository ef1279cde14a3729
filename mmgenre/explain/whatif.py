"""What-if: edit one movie's poster or plot, re-predict and re-explain, and see every genre move.

    w = what_if(predictor, poster, plot, Edit(grey_cells=(0, 5), delete_words=(3,)), original=exp)
    w.original["probabilities"], w.edited["probabilities"], w.change, w.explanation, w.notes

Edits, in any combination: grey cells of an R x C grid over the poster, or the pixels that hold
the top share of a genre's Grad-CAM; delete or replace words (positions in ``Explanation.words``,
else in the plot's whitespace words); drop the poster or the plot; swap in another poster.
Greyed pixels get a flat grey (``Edit.fill="grey"``, the default) or a blurred copy of the poster
(``fill="blur"``, what the Grad-CAM deletion test does), and the CAM's top share is chosen by
``top_mask`` with the same seed as that test (``mmgenre.explain.faithfulness``), so blurring a
CAM's top 20% here is exactly that test's top-20% image and the numbers are comparable.

An edit may leave the model without an input it needs (the whole plot of a text-only model
deleted, the poster of an image-only model dropped): the result then has the original prediction,
no edited one, and a note saying why. A whole poster greyed out is still a poster (a grey one).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mmgenre.data import clean_plot
from mmgenre.errors import InputError
from mmgenre.explain.explanation import Explanation
from mmgenre.explain.faithfulness import delete_region, deletion_fill, top_mask
from mmgenre.explain.run import explain_prediction
from mmgenre.genres import GENRE_INDEX, GENRES, normalize_genre
from mmgenre.inputs import Inputs, prepare_inputs
from mmgenre.schema import SOURCE

MAX_GRID = 32              # cells per side
MAX_REPLACEMENT_CHARS = 200
DROPPABLE = ("poster", "plot")
_WORD = re.compile(r"\S+")  # the encoders' words (mmgenre.encoders.text.words): whitespace-separated


FILLS = ("grey", "blur")  # what greyed pixels become: a flat grey, or a blurred copy of the poster


@dataclass(frozen=True)
class Edit:
    """What to change. Cells are numbered row by row from the top-left cell, 0 first."""

    grid: tuple[int, int] = (4, 4)                 # (rows, columns) of the poster grid
    grey_cells: tuple[int, ...] = ()
    cam_share: float = 0.0                         # grey the top share of ``cam_genre``'s Grad-CAM (0: off)
    cam_genre: str | None = None                   # default: the first explained genre
    delete_words: tuple[int, ...] = ()             # word positions
    replace_words: Mapping[int, str] = field(default_factory=dict)  # word position -> new text
    drop: str | None = None                        # "poster" or "plot"
    poster: object = None                          # another poster (path, PIL image, array) to use instead
    fill: str = "grey"                             # greyed pixels: "grey" (flat) or "blur" (the deletion test's)


@dataclass
class WhatIf:
    """The original and edited predictions (``Predictor.format`` dicts) of one movie."""

    model: str
    original: dict
    edited: dict | None                 # None: the edited input cannot be predicted (see notes)
    explanation: Explanation | None     # of the edited input (None: not asked for, or no edited prediction)
    poster: np.ndarray | None           # the edited poster (H, W, 3) uint8, None when there is none
    plot: str                           # the edited, cleaned plot
    applied: list[str] = field(default_factory=list)  # one plain-text line per edit
    notes: list[str] = field(default_factory=list)

    @property
    def change(self) -> dict[str, float] | None:
        """Edited minus original probability, every genre in ``GENRES`` order."""
        if self.edited is None:
            return None
        a, b = self.original["probabilities"], self.edited["probabilities"]
        return {g: float(b[g]) - float(a[g]) for g in GENRES}

    def table(self) -> list[dict]:
        """Rows {genre, original, edited, change}, highest original probability first."""
        change = self.change
        rows = [{"genre": g, "original": float(p),
                 "edited": None if change is None else float(self.edited["probabilities"][g]),
                 "change": None if change is None else change[g]}
                for g, p in self.original["probabilities"].items()]
        return sorted(rows, key=lambda r: -r["original"])


# ------------------------------------------------------------------------------ the edits
def _check_grid(grid) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in grid)
    except (TypeError, ValueError):
        raise InputError(f"grid must be (rows, columns), got {grid!r}") from None
    if not (1 <= rows <= MAX_GRID and 1 <= cols <= MAX_GRID):
        raise InputError(f"grid must have 1 to {MAX_GRID} rows and columns, got {rows} x {cols}")
    return rows, cols


def _indices(values, n: int, what: str) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InputError(f"{what}: positions must be integers, got {str(v)[:40]!r}")
        if not 0 <= int(v) < n:
            raise InputError(f"{what}: position {int(v)} is out of range (0 to {n - 1})")
        out.append(int(v))
    return sorted(set(out))


def cell_boxes(shape: tuple[int, int], grid: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(row0, col0, row1, col1) pixel bounds of every cell of an R x C grid over an (H, W) image."""
    rows, cols = _check_grid(grid)
    ys = np.linspace(0, shape[0], rows + 1).round().astype(int)
    xs = np.linspace(0, shape[1], cols + 1).round().astype(int)
    return [(ys[r], xs[c], ys[r + 1], xs[c + 1]) for r in range(rows) for c in range(cols)]


def cells_mask(shape: tuple[int, int], grid: tuple[int, int], cells) -> np.ndarray:
    """Boolean (H, W) mask of the chosen cells."""
    boxes = cell_boxes(shape, grid)
    mask = np.zeros(shape, dtype=bool)
    for i in _indices(cells, len(boxes), "grey_cells"):
        r0, c0, r1, c1 = boxes[i]
        mask[r0:r1, c0:c1] = True
    return mask


def cam_mask(cam: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """The ``share`` of pixels a CAM ranks highest, ties broken as the deletion test breaks them."""
    return top_mask(cam, share, np.random.default_rng(seed))


def plot_words(plot) -> list[str]:
    """The words a position refers to without an explanation: the cleaned plot's whitespace words."""
    return _WORD.findall(clean_plot(plot))


def word_spans(plot: str, words: list[str]) -> list[tuple[int, int]]:
    """(start, end) in ``plot`` of each of ``words``, an in-order subset of its whitespace words
    (an explanation leaves out words past the encoder's window and words without tokens)."""
    spans = [(m.start(), m.end()) for m in _WORD.finditer(plot)]
    out, j = [], 0
    for w in words:
        while j < len(spans) and plot[spans[j][0]:spans[j][1]] != w:
            j += 1
        if j == len(spans):
            raise InputError("the explanation's words are not the words of this plot")
        out.append(spans[j])
        j += 1
    return out


def edit_plot(plot: str, words: list[str], delete=(), replace: Mapping[int, str] | None = None) -> str:
    """``plot`` with the words at ``delete`` removed and those at ``replace`` replaced (cleaned)."""
    replace = dict(replace or {})
    gone = _indices(delete, len(words), "delete_words")
    changed = _indices(replace, len(words), "replace_words")
    if set(gone) & set(changed):
        raise InputError(f"words {sorted(set(gone) & set(changed))} are both deleted and replaced")
    new = {i: "" for i in gone}
    for i in changed:
        text = replace[i]
        if not isinstance(text, str) or len(text) > MAX_REPLACEMENT_CHARS:
            raise InputError(f"replace_words: the new text of word {i} must be a string of at most "
                             f"{MAX_REPLACEMENT_CHARS} characters")
        new[i] = text
    spans = word_spans(plot, words)
    out, last = [], 0
    for i in sorted(new):
        a, b = spans[i]
        out += [plot[last:a], new[i]]
        last = b
    return clean_plot("".join(out) + plot[last:])


# ------------------------------------------------------------------------------ what-if
def _genre(name) -> str:
    canon = normalize_genre(name) if isinstance(name, str) else None
    if canon not in GENRE_INDEX:
        raise InputError(f"unknown genre {str(name)[:80]!r}; choose from {', '.join(GENRES)}")
    return canon


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _reads(predictor, source: str) -> bool:
    """Whether the model reads ``source`` ("poster" or "plot") through any of its modalities."""
    return any(SOURCE[m] == source for m in predictor.modalities)


def what_if(predictor, poster, plot, edit: Edit, *, genres=None, original: Explanation | None = None,
            explain: bool = True, seed: int = 0, **explain_kwargs) -> WhatIf:
    """Predict the movie as given and as edited by ``edit``; explain the edited one.

    ``predictor``: a ``mmgenre.predict.Predictor``. ``original``: its explanation of the same
    movie, whose probabilities are the original ones, whose words the word positions refer to and
    whose CAM the CAM share uses (without it: a prediction, the plot's whitespace words, and a
    Grad-CAM computed here). ``genres``: the genres to explain
    (default: those of ``original``, else the edited prediction's). ``seed``: the tie-break of the
    CAM's top pixels (the deletion test's ``random_seed``). ``explain_kwargs`` go to
    ``explain_prediction`` (``ig_steps``, ``deadline``, ``text_method`` ...).
    """
    if not isinstance(edit, Edit):
        raise InputError(f"edit must be a mmgenre.explain.whatif.Edit, got {type(edit).__name__}")
    if edit.drop not in (None, *DROPPABLE):
        raise InputError(f"drop must be 'poster', 'plot' or None, got {str(edit.drop)[:40]!r}")
    if edit.fill not in FILLS:
        raise InputError(f"fill must be 'grey' or 'blur', got {str(edit.fill)[:40]!r}")
    if isinstance(edit.cam_share, bool) or not isinstance(edit.cam_share, (int, float)) \
            or not 0.0 <= edit.cam_share <= 1.0:
        raise InputError(f"cam_share must be a number in [0, 1], got {edit.cam_share!r}")
    inputs = prepare_inputs(poster, plot)
    predictor.check_modalities(inputs)
    if original is not None and (not isinstance(original, Explanation) or original.model != predictor.name):
        raise InputError("original must be the Explanation of this predictor's model for this movie")
    # the original explanation's forward already gave the original probabilities
    before = predictor.format(_probs(original) if original is not None else predictor.probabilities(inputs), inputs)
    result = WhatIf(predictor.name, before, None, None, None, inputs.plot)
    poster_arr = _edited_poster(predictor, inputs, edit, original, seed, result, explain_kwargs)
    words = original.words if original is not None else plot_words(inputs.plot)
    text = inputs.plot
    if edit.delete_words or edit.replace_words:
        text = edit_plot(inputs.plot, words, edit.delete_words, edit.replace_words)
        if edit.delete_words:
            result.applied.append(f"deleted {_count(len(set(edit.delete_words)), 'word')} of {len(words)}")
        if edit.replace_words:
            result.applied.append(f"replaced {_count(len(edit.replace_words), 'word')}")
    if edit.drop == "poster":
        poster_arr = None
        result.applied.append("dropped the poster")
    elif edit.drop == "plot":
        text = ""
        result.applied.append("dropped the plot")
    result.poster, result.plot = poster_arr, text
    if text == "" and inputs.plot and edit.drop != "plot":
        result.notes.append("The edits leave the plot empty.")
    poster_changed = (poster_arr is None) != (inputs.poster is None) or (
        poster_arr is not None and not np.array_equal(poster_arr, np.asarray(inputs.poster)))
    for source, changed in (("poster", poster_changed), ("plot", text != inputs.plot)):
        if changed and not _reads(predictor, source):
            result.notes.append(f"{predictor.name} does not read the {source}, so editing it changes nothing.")
    if poster_arr is None and not text:
        result.notes.append("The edits leave neither a poster nor a plot: nothing to predict from.")
        return result
    edited_inputs = Inputs(None if poster_arr is None else prepare_inputs(poster_arr).poster, text)
    try:
        predictor.check_modalities(edited_inputs)
    except InputError as exc:
        result.notes.append(f"No edited prediction: {exc}.")
        return result
    if explain:  # its forward gives the edited probabilities too
        chosen = genres if genres is not None else (original.genres if original is not None else None)
        result.explanation = explain_prediction(predictor, edited_inputs, genres=chosen, **explain_kwargs)
        probs = _probs(result.explanation)
    else:
        probs = predictor.probabilities(edited_inputs)
    result.edited = predictor.format(probs, edited_inputs)
    return result


def _probs(exp: Explanation) -> np.ndarray:
    return np.asarray([exp.probabilities[g] for g in GENRES], dtype=np.float64)


def _edited_poster(predictor, inputs: Inputs, edit: Edit, original, seed: int, result: WhatIf,
                   explain_kwargs: dict) -> np.ndarray | None:
    """The poster after the swap and the greying (None without a poster)."""
    img = inputs.poster
    if edit.poster is not None:
        img = prepare_inputs(edit.poster).poster
        result.applied.append("swapped in another poster")
    if (edit.grey_cells or edit.cam_share) and img is None:
        raise InputError("there is no poster to grey out (this movie has none and none was swapped in)")
    if img is None:
        return None
    arr = np.asarray(img, dtype=np.uint8)
    mask = np.zeros(arr.shape[:2], dtype=bool)
    if edit.grey_cells:
        mask |= cells_mask(arr.shape[:2], edit.grid, edit.grey_cells)
        rows, cols = _check_grid(edit.grid)
        result.applied.append(f"greyed {_count(len(set(edit.grey_cells)), 'cell')} of a {rows} x {cols} grid")
    if edit.cam_share:
        if edit.poster is not None:
            raise InputError("the CAM's top share refers to the movie's own poster, not a swapped one")
        genre = _genre(edit.cam_genre) if edit.cam_genre is not None else None
        cam = _cam(predictor, inputs, genre, original, explain_kwargs)
        mask |= cam_mask(cam, float(edit.cam_share), seed)
        result.applied.append(f"greyed the top {100 * edit.cam_share:.0f}% of the Grad-CAM")
    if mask.any():
        result.applied.append(f"{100 * mask.mean():.1f}% of the poster greyed"
                              + (" (with a blurred copy)" if edit.fill == "blur" else ""))
    if not mask.any():
        return arr
    return delete_region(arr, mask, deletion_fill(arr, 128 if edit.fill == "grey" else edit.fill))


def _cam(predictor, inputs: Inputs, genre: str | None, original, explain_kwargs: dict) -> np.ndarray:
    if original is not None and genre is None and original.genres:
        genre = original.genres[0]
    cam = original.poster_cam.get(genre) if original is not None else None
    if cam is None:
        if not _reads(predictor, "poster"):
            raise InputError(f"{predictor.name} does not read the poster, so it has no Grad-CAM to grey")
        kwargs = {k: v for k, v in explain_kwargs.items() if k in ("deadline", "random_seed")}
        exp = explain_prediction(predictor, inputs, genres=None if genre is None else [genre],
                                 faithfulness=False, **kwargs)
        genre = genre or exp.genres[0]
        cam = exp.poster_cam.get(genre)
        if cam is None:
            raise InputError(f"{predictor.name} gives no Grad-CAM for {genre} (it reads only detected objects)")
    if cam.shape != np.asarray(inputs.poster).shape[:2]:
        raise InputError("the explanation's Grad-CAM is not of this poster")
    return cam

