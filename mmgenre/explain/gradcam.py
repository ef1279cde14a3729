"""Grad-CAM of genre logits on the poster (pytorch-grad-cam), the plot held fixed.

``GradCam(forward, target_layers).attribute(pixels, targets)``: ``forward`` is any module from
pixels (B, 3, H, W) to logits, e.g. ``PixelsToLogits`` (a head over an image encoder, with the
movie's text / detector entries computed once, detached and broadcast to the batch). All
requested genres are explained in one forward/backward: the pixels are repeated once per genre
and each row gets its own ``ClassifierOutputTarget``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from mmgenre import schema
from mmgenre.errors import InputError
from mmgenre.viz import resize_map


class PixelsToLogits(nn.Module):
    """pixels (B, 3, H, W) -> logits (B, n_genres) of ``head`` with the other features fixed.

    ``fixed``: the movie's batch entries that do not come from the pixels (one row each, e.g.
    ``text``, ``text_tokens``, ``text_mask``, ``det``, ``has_text``); they are detached and
    expanded to the pixel batch. ``has_image`` is True for every row.
    """

    def __init__(self, head: nn.Module, image_encoder: nn.Module, fixed: dict[str, torch.Tensor]):
        super().__init__()
        self.head, self.image_encoder = head, image_encoder
        image_keys = schema.keys(image_encoder.kind)
        self.fixed = {k: v.detach() for k, v in fixed.items() if k not in image_keys}

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        b = pixels.shape[0]
        batch = {k: v.expand(b, *v.shape[1:]) for k, v in self.fixed.items()}
        batch.update(self.image_encoder.feature_entries(self.image_encoder(pixels), [True] * b))
        return self.head(batch).logits


@contextlib.contextmanager
def gradient_taps(layers: Sequence[nn.Module]) -> Iterator[None]:
    """Make the outputs of ``layers`` require grad although the frozen encoder's inputs do not.

    Each output gets a zero scalar that requires grad added to it, so autograd only runs the
    backward pass from the logits down to these layers (not to the pixels). The gradient with
    respect to each layer's output is unchanged. The hooks must be registered before Grad-CAM's
    own (forward hooks run in registration order and later ones see the returned tensor).
    """
    zero = torch.zeros((), requires_grad=True)

    def tap(module, args, output):
        if torch.is_tensor(output) and not output.requires_grad:
            return output + zero.to(output.dtype)
        return None

    handles = [layer.register_forward_hook(tap) for layer in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def no_param_grads(module: nn.Module) -> Iterator[None]:
    """Temporarily stop ``module``'s parameters from requiring grad (no .grad accumulates on them)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class GradCam:
    """Grad-CAM of the logits of ``forward`` (pixels -> logits) at ``target_layers``.

    ``reshape_transform`` turns a layer's output into (B, C, h, w) (ViT tokens); the encoder's own.
    ``forward``'s parameters get no gradient, and every hook is removed after each call.
    """

    def __init__(self, forward: nn.Module, target_layers: Sequence[nn.Module], reshape_transform=None):
        self.forward, self.target_layers, self.reshape_transform = forward, list(target_layers), reshape_transform

    def attribute(self, pixels: torch.Tensor, targets: Sequence[int]) -> np.ndarray:
        """(G, H_in, W_in) float32 maps in [0, 1], one per target logit, at the input size.

        ``pixels``: (1, 3, H_in, W_in) or (3, H_in, W_in) preprocessed poster.
        """
        if pixels.dim() == 3:
            pixels = pixels[None]
        if pixels.dim() != 4 or pixels.shape[0] != 1:
            raise InputError(f"gradcam: expected pixels of shape (1, 3, H, W), got {tuple(pixels.shape)}")
        if not targets:
            return np.zeros((0, *pixels.shape[2:]), dtype=np.float32)
        repeated = pixels.detach().expand(len(targets), -1, -1, -1).contiguous()
        with no_param_grads(self.forward), gradient_taps(self.target_layers):
            cam = GradCAM(model=self.forward, target_layers=self.target_layers,
                          reshape_transform=self.reshape_transform)
            try:  # not ``with cam``: its __exit__ swallows IndexError
                maps = cam(input_tensor=repeated, targets=[ClassifierOutputTarget(int(t)) for t in targets])
            finally:
                cam.activations_and_grads.release()
        return np.nan_to_num(np.asarray(maps, dtype=np.float32)).clip(0.0, 1.0)


def input_box(image_encoder, poster_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the poster region the encoder's input shows, in poster pixels.

    The bundled encoders resize the whole poster to their input size without cropping, so this
    is the whole poster; an encoder that crops can say so with a ``crop_box(size)`` method.
    """
    w, h = poster_size
    crop = getattr(image_encoder, "crop_box", None)
    if callable(crop):
        x0, y0, x1, y1 = (float(v) for v in crop((w, h)))
        return x0, y0, x1, y1
    return 0.0, 0.0, float(w), float(h)


def to_poster(cam: np.ndarray, image_encoder, poster_size: tuple[int, int]) -> np.ndarray:
    """Map a CAM at the encoder's input size to an (H, W) map at the poster's own size.

    The input shows ``input_box`` of the poster stretched to the input size, so the map is
    stretched back onto that box (bilinear); poster pixels outside the box (a centre crop) were
    never seen by the model and get 0.
    """
    w, h = poster_size
    x0, y0, x1, y1 = input_box(image_encoder, poster_size)
    if (x0, y0, x1, y1) == (0.0, 0.0, float(w), float(h)):
        return resize_map(cam, (h, w)).clip(0.0, 1.0)
    out = np.zeros((h, w), dtype=np.float32)
    c0, r0 = max(0, int(round(x0))), max(0, int(round(y0)))
    c1, r1 = min(w, int(round(x1))), min(h, int(round(y1)))
    if c1 > c0 and r1 > r0:
        out[r0:r1, c0:c1] = resize_map(cam, (r1 - r0, c1 - c0))
    return out.clip(0.0, 1.0)
