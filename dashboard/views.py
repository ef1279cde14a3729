"""Pictures and texts of an ``mmgenre.explain.Explanation`` shared by the Streamlit and Gradio
front ends. Drawing is :mod:`mmgenre.viz`'s; this module only picks the genre and phrases the
faithfulness figures. Every returned string is plain text (no markup) unless named ``*_html``,
and ``*_html`` strings come from ``mmgenre.viz``, which escapes every word."""
from __future__ import annotations

from PIL import Image

from mmgenre import viz
from mmgenre.explain.text_attr import TEXT_METHOD_DESCRIPTIONS


def cam_overlay(expl, genre: str) -> Image.Image | None:
    """The poster with the Grad-CAM of ``genre`` on top (None: no poster or no CAM)."""
    cam = expl.poster_cam.get(genre)
    if expl.poster is None or cam is None:
        return None
    return viz.overlay_heatmap(expl.poster, cam)


def words_html(expl, genre: str) -> str | None:
    """Escaped HTML of the plot with each word coloured by its attribution to ``genre``."""
    scores = expl.token_scores.get(genre)
    if scores is None or not expl.words:
        return None
    return viz.highlight_words_html(expl.words, scores, genre)


def objects_image(expl) -> Image.Image | None:
    if expl.poster is None or not expl.objects:
        return None
    return viz.draw_objects(expl.poster, expl.objects)


def deletion_text(expl, genre: str) -> str | None:
    """One sentence on the Grad-CAM deletion test of ``genre`` (None if not run)."""
    d = (expl.faithfulness or {}).get("deletion", {}).get(genre)
    if not d:
        return None
    verdict = "more than" if d.get("beats_random") else "not more than"
    return (f"Faithfulness: blurring the 20% of the poster the map ranks highest lowers the "
            f"{genre} logit by {d['top_drop']:+.3f}, {verdict} random regions of the same size "
            f"({d['random_drop']:+.3f}).")


def completeness_text(expl, genre: str) -> str | None:
    """One sentence on how well the word attributions add up to the logit change."""
    c = (expl.faithfulness or {}).get("ig_completeness", {}).get(genre)
    if not c:
        return None
    return (f"Faithfulness: the word scores add up to the {genre} logit change within "
            f"{c['abs']:.3f} ({100 * c['rel']:.1f}% of it; Integrated Gradients completeness).")


def modality_text(expl) -> str | None:
    m = expl.modality or {}
    if m.get("gate_text_share") is not None:
        t = float(m["gate_text_share"])
        return f"Gate: {100 * t:.0f}% text, {100 * (1 - t):.0f}% poster."
    if m.get("weights"):
        return "Modality weights: " + ", ".join(f"{k} {float(v):.2f}" for k, v in m["weights"].items()) + "."
    return None


METHOD_LABELS = {"fast": "fast (encoder-output IG)", "deep": "exact (full-depth IG)"}  # selectors: short, they sit in narrow columns


def method_text(expl) -> str | None:
    """Which plot-attribution method produced the word scores, and its IG steps (None: no IG)."""
    method = getattr(expl, "text_method", None)
    if method is None:
        return None
    steps = getattr(expl, "text_steps", None)
    return f"Plot attributions: {TEXT_METHOD_DESCRIPTIONS.get(method, method)}" + (f", {steps} steps." if steps else ".")
