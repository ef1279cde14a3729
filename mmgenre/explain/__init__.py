"""Explanations of one prediction: Grad-CAM on the poster, Integrated Gradients on the plot,
the head's own extras (cross-attention maps, gates, modality weights), a removal test, detected
objects and faithfulness figures.

    p = Predictor.from_checkpoint("checkpoints/gmu")
    exp = p.explain(poster="poster.jpeg", plot="A detective ...")    # -> Explanation
    exp.poster_cam["Drama"], exp.token_scores["Drama"], exp.to_dict()

Each explainer is a small class over a forward callable (``GradCam``, ``WordIntegratedGradients``);
a model family lists its stages (``mmgenre.explain.run.Stage``) and ``explain_prediction`` runs
them, within an optional ``Deadline``. The encoders are frozen but not run under ``no_grad``, so
gradients reach the pixels' feature maps (Grad-CAM) and the word embeddings (IG).
"""
from mmgenre.explain.explanation import Explanation
from mmgenre.explain.run import choose_genres, explain_prediction

__all__ = ["Explanation", "choose_genres", "explain_prediction"]
