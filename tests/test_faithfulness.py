"""Faithfulness checks on toy models where the right answer is known."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn

from mmgenre.encoders import ImageEncoder, ImageFeatures, freeze
from mmgenre.errors import InputError
from mmgenre.explain.faithfulness import (gradcam_deletion, ig_completeness, random_blob_masks, randomize_head,
                                          top_mask)
from mmgenre.explain.gradcam import GradCam, PixelsToLogits, to_poster
from mmgenre.heads import build_head
from mmgenre.heads.base import HeadOutput

H, W = 60, 50
PATCH = (slice(0, 30), slice(0, 20))  # 30 * 20 / (60 * 50) = exactly 20% of the image


def _patch_model(images: list[np.ndarray]) -> np.ndarray:
    """Logit 0 = mean brightness of a fixed patch; logit 1 = mean brightness of the whole image."""
    return np.array([[im[PATCH].mean() / 255.0, im.mean() / 255.0] for im in images])


def test_deletion_cam_on_the_patch_beats_random():
    image = np.full((H, W, 3), 250, dtype=np.uint8)
    right = np.zeros((H, W), dtype=np.float32)
    right[PATCH] = 1.0
    wrong = np.zeros((H, W), dtype=np.float32)
    wrong[30:, 30:] = 1.0  # the opposite corner (also 20%): the model never looks there
    res = gradcam_deletion(_patch_model, image, {0: right}, n_random=4, seed=0, fill=128)[0]
    assert res["beats_random"] and res["top_drop"] > res["random_drop"] > 0
    assert res["top_drop"] == pytest.approx((250 - 128) / 255)  # the whole patch greyed
    bad = gradcam_deletion(_patch_model, image, {0: wrong}, n_random=4, seed=0, fill=128)[0]
    assert not bad["beats_random"] and bad["top_drop"] == pytest.approx(0.0)
    # the same seed gives the same random masks; base_logits skips the original's forward pass
    again = gradcam_deletion(_patch_model, image, {0: right}, n_random=4, seed=0, fill=128,
                             base_logits=_patch_model([image])[0])[0]
    assert again == res


def _texture_model(images: list[np.ndarray]) -> np.ndarray:
    """Logit 0 = contrast (std) inside the fixed patch: what a blur removes, whatever the colour."""
    return np.array([[im[PATCH].astype(float).std() / 255.0] for im in images])


def test_blur_deletion_removes_detail_not_colour():
    """The default deletion replaces pixels by a blurred copy: on a flat image nothing changes,
    on a checkerboard the patch's contrast goes, so the CAM on the patch beats random blobs."""
    flat = np.full((H, W, 3), 250, dtype=np.uint8)
    right = np.zeros((H, W), dtype=np.float32)
    right[PATCH] = 1.0
    assert gradcam_deletion(_patch_model, flat, {0: right}, seed=0)[0]["top_drop"] == pytest.approx(0.0)
    board = np.kron((np.indices((H // 2, W // 2)).sum(0) % 2) * 200 + 25, np.ones((2, 2)))
    board = np.repeat(board[..., None], 3, axis=2).astype(np.uint8)
    res = gradcam_deletion(_texture_model, board, {0: right}, n_random=4, seed=0)[0]
    base = _texture_model([board])[0, 0]
    assert res["top_drop"] > 0.9 * base  # the patch's checkerboard is blurred to near-uniform grey
    assert res["beats_random"] and res["top_drop"] > res["random_drop"]
    with pytest.raises(InputError, match="fill"):
        gradcam_deletion(_patch_model, flat, {0: right}, fill="smear")
    with pytest.raises(InputError, match="fill"):
        gradcam_deletion(_patch_model, flat, {0: right}, fill=300)


def test_masks_cover_the_fraction():
    rng = np.random.default_rng(0)
    m = top_mask(np.zeros((10, 10)), 0.2, rng)  # ties broken at random, still exactly 20 pixels
    assert m.sum() == 20
    for mask in random_blob_masks((40, 30), 0.2, 3, rng):
        assert mask.shape == (40, 30) and mask.sum() == 240
    with pytest.raises(InputError):
        gradcam_deletion(_patch_model, np.zeros((H, W, 3), np.uint8), {0: np.zeros((H, W))}, fraction=1.5)
    with pytest.raises(InputError):
        gradcam_deletion(_patch_model, np.zeros((H, W, 3), np.uint8), {0: np.zeros((5, 5))})


def test_ig_completeness():
    c = ig_completeness(np.array([0.5, 0.3]), 1.0)
    assert c["abs"] == pytest.approx(0.2) and c["rel"] == pytest.approx(0.2)


class ColourEncoder(ImageEncoder):
    """Toy frozen encoder: a 1x1 conv giving a 'red' and a 'blue' channel on an 8x8 grid."""

    name, dim, input_size = "toy-colour", 2, (32, 32)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]])[:, :, None, None])
        self.pool = nn.AvgPool2d(4)
        self.feature_map = nn.Identity()
        freeze(self)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return TF.to_tensor(image.convert("RGB").resize(self.input_size[::-1], Image.BILINEAR))

    def forward(self, pixels: torch.Tensor) -> ImageFeatures:
        fmap = self.feature_map(torch.relu(self.pool(self.conv(pixels))))
        regions = fmap.flatten(2).transpose(1, 2)
        return ImageFeatures(regions.mean(1), regions, (8, 8))

    @property
    def target_layers(self):
        return [self.feature_map]


class ColourHead(nn.Module):
    """logit 0 = amount of red, logit 1 = amount of blue (the pooled features, scaled)."""

    modalities = ("image",)

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, batch):
        return HeadOutput(batch["image"] * self.scale)


def _colour_poster() -> Image.Image:
    arr = np.zeros((64, 48, 3), dtype=np.uint8)
    arr[4:20, 4:20] = (255, 0, 0)      # red square, top left
    arr[40:60, 26:44] = (0, 0, 255)    # blue square, bottom right
    return Image.fromarray(arr)


def test_gradcam_finds_the_right_square_for_each_target_in_one_call():
    enc, head = ColourEncoder(), ColourHead()
    poster = _colour_poster()
    model = PixelsToLogits(head, enc, {})
    maps = GradCam(model, enc.target_layers).attribute(enc.preprocess(poster), [0, 1])
    assert maps.shape == (2, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    red = to_poster(maps[0], enc, poster.size)
    blue = to_poster(maps[1], enc, poster.size)
    assert red.shape == (64, 48)
    r, c = np.unravel_index(red.argmax(), red.shape)
    assert 4 <= r < 20 and 4 <= c < 20
    r, c = np.unravel_index(blue.argmax(), blue.shape)
    assert 40 <= r < 60 and 26 <= c < 44
    # no gradient was left on the head's weights, and the hooks are gone
    assert head.scale.grad is None and head.scale.requires_grad
    assert not enc.feature_map._forward_hooks

    def logits_fn(images):
        px = torch.stack([enc.preprocess(Image.fromarray(im)) for im in images])
        with torch.no_grad():
            return model(px).numpy()

    res = gradcam_deletion(logits_fn, poster, {0: red, 1: blue}, seed=1)
    assert res[0]["beats_random"] and res[1]["beats_random"]


def test_randomize_head_redraws_every_weight_and_keeps_the_original():
    head = build_head("cross_attention", {"text": 16, "image": 8}, hidden=16, n_heads=2)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    rand = randomize_head(head, seed=3)
    for k, v in head.state_dict().items():
        assert torch.equal(v, before[k])
    changed = [k for k, v in rand.state_dict().items() if not torch.equal(v, before[k])]
    params = {k for k, _ in head.named_parameters()}
    # only weights whose reset value is a constant they already had (LayerNorm ones, zero biases)
    # stay the same; every other weight is redrawn
    unchanged = params - set(changed)
    assert all(torch.unique(before[k]).numel() == 1 for k in unchanged), unchanged
    assert "token_pos" in changed and "classify.1.weight" in changed
    assert randomize_head(head, seed=3).state_dict()["token_pos"].equal(rand.state_dict()["token_pos"])
