"""The explanation stages of a neural model (a head over frozen encoders), for ``explain_prediction``.

Forward: the movie's batch from the live encoders, then the head on three rows (as given, without
the poster, without the plot). Stages: Grad-CAM on the poster (image encoder), Integrated
Gradients on the plot (text encoder; ``options.text_method``: at its output, or "deep" at the
word embeddings), the head's own extras (``Head.explain_extras``), the removal
table and the faithfulness tests. Each explainer sees one forward callable with the other
modality held fixed.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from mmgenre.batching import live_batch
from mmgenre.explain.explanation import Explanation
from mmgenre.explain.extras import ExtrasContext
from mmgenre.explain.faithfulness import gradcam_deletion, ig_completeness
from mmgenre.explain.gradcam import GradCam, PixelsToLogits, to_poster
from mmgenre.explain.modality import ablation_batch, ablation_table
from mmgenre.explain.run import ExplainOptions, Stage
from mmgenre.explain.text_attr import IdsToLogits, TokenIntegratedGradients, WordIntegratedGradients
from mmgenre.genres import GENRES
from mmgenre.inputs import Inputs


class NeuralExplainer:
    """One movie's explanation by ``head`` over ``encoders`` ({kind: encoder})."""

    def __init__(self, head, encoders: dict, max_tokens: int | None, inputs: Inputs, options: ExplainOptions):
        self.head, self.encoders, self.inputs, self.options = head, encoders, inputs, options
        self.max_tokens = max_tokens
        self.image, self.text = encoders.get("image"), encoders.get("text")
        grid: list[tuple[int, int]] = []
        encoded: list[tuple[torch.Tensor, torch.Tensor]] = []  # the plot's (input_ids, output tokens)
        hooks = []
        if self.image is not None:
            hooks.append(self.image.register_forward_hook(lambda m, a, out: grid.append(tuple(out.grid))))
        if self.text is not None:
            hooks.append(self.text.register_forward_hook(lambda m, a, out: encoded.append((a[0], out.tokens)) if a else None))
        try:
            with torch.no_grad():
                batch = live_batch(encoders, inputs, max_tokens)
        finally:
            for hook in hooks:
                hook.remove()
        # the fast plot attributions start from this pass instead of running the encoder again
        self.encoded = encoded[-1] if encoded and inputs.has_plot else None
        self.grid = grid[-1] if grid and inputs.has_poster else None
        self.batch = {k: v.detach() for k, v in batch.items()}
        with torch.no_grad():
            self.out = head(ablation_batch(self.batch))
        self.logits = self.out.logits.double()
        self.probs3 = torch.sigmoid(self.logits).numpy()   # (3, n_genres): given, no poster, no plot
        self.cam_model = PixelsToLogits(head, self.image, self.batch) if self.image is not None else None
        self.words = None                                   # the last WordAttribution
        self.completeness: dict[int, tuple[float, float]] = {}  # target -> (sum of scores, f(x) - f(base))

    @property
    def probabilities(self) -> np.ndarray:
        return self.probs3[0]

    def stages(self) -> list[Stage]:
        stages = []
        if self.cam_model is not None and self.inputs.has_poster:
            stages.append(Stage("gradcam", self.gradcam, per_genre=True))
        if self.text is not None and self.inputs.has_plot:
            stages.append(Stage("text_attribution", self.text_attribution, per_genre=True))
        stages += [Stage("extras", self.extras), Stage("ablation", self.ablation, optional="ablation")]
        if self.options.faithfulness:
            stages.append(Stage("faithfulness", self.faithfulness, optional="faithfulness"))
        return stages

    # -- stages ----------------------------------------------------------------------------
    def gradcam(self, exp: Explanation, targets: list[int]) -> None:
        enc, poster = self.image, self.inputs.poster
        maps = GradCam(self.cam_model, enc.target_layers, enc.reshape_transform).attribute(enc.pixels([poster]), targets)
        exp.poster_cam.update({GENRES[t]: to_poster(m, enc, poster.size) for t, m in zip(targets, maps)})

    def text_attribution(self, exp: Explanation, targets: list[int]) -> None:
        opts = self.options
        if opts.text_method == "fast" and hasattr(self.text, "_features"):
            wa = TokenIntegratedGradients(self.head, self.text, self.batch, self.max_tokens).attribute(
                self.inputs.plot, targets, n_steps=opts.ig_steps, tol=opts.ig_tolerance, encoded=self.encoded)
        else:  # "deep", or an encoder whose pooling the fast method cannot reach (the record says so)
            forward = IdsToLogits(self.head, self.text, self.batch, self.max_tokens)
            wa = WordIntegratedGradients(forward, self.text).attribute(self.inputs.plot, targets,
                                                                       n_steps=opts.ig_steps)
        exp.attach_words(wa, targets)
        self.words = wa
        for i, t in enumerate(targets):
            self.completeness[t] = (float(wa.scores[i].sum()) if wa.words else 0.0, float(wa.f_diff[i]))

    def extras(self, exp: Explanation, targets: list[int]) -> None:
        wa = self.words
        ctx = ExtrasContext(targets=targets, row=0, words=None if wa is None else wa.words,
                            positions=None if wa is None else wa.positions, grid=self.grid)
        parts = self.head.explain_extras(self.out, ctx)
        exp.modality.update(parts.get("modality", {}))
        exp.cross_attention = parts.get("cross_attention")

    def ablation(self, exp: Explanation, targets: list[int]) -> None:
        exp.modality["ablation"] = ablation_table(self.probs3, targets)

    def faithfulness(self, exp: Explanation, targets: list[int]) -> None:
        exp.faithfulness = {}
        if exp.poster_cam:
            deletion = gradcam_deletion(self._logits_of_images, exp.poster,
                                        {t: exp.poster_cam[GENRES[t]] for t in targets},
                                        seed=self.options.random_seed, base_logits=self.logits[0].numpy())
            exp.faithfulness["deletion"] = {GENRES[t]: d for t, d in deletion.items()}
        if self.completeness:
            exp.faithfulness["ig_completeness"] = {GENRES[t]: ig_completeness(*self.completeness[t])
                                                   for t in targets if t in self.completeness}

    def _logits_of_images(self, images: list[np.ndarray]) -> np.ndarray:
        pixels = self.image.pixels([Image.fromarray(im) for im in images])
        with torch.no_grad():
            return self.cam_model(pixels).double().numpy()
