"""Detectors: every registered name (haar with its real cascades, the COCO detectors random-init)."""
from __future__ import annotations

import json
import os
import pickle

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from mmgenre.encoders import Detection, build_encoder, list_encoders
from mmgenre.encoders.detectors import GRID, HAAR_STATS, HaarDetector, coco_class_stats
from mmgenre.errors import EncoderUnavailableError, InputError


def _haar_or_skip():
    try:
        return build_encoder("detector", "haar")
    except EncoderUnavailableError as err:
        pytest.skip(f"Haar cascades unavailable in this OpenCV: {err}")


@pytest.fixture(scope="module", params=list_encoders("detector"))
def detector(request):
    if request.param == "haar":
        return _haar_or_skip()
    return build_encoder("detector", request.param, pretrained=False)


def synthetic_face(width: int = 300, blur: float = 2.0) -> Image.Image:
    """A drawn face (skin ellipse, hair, brows, eyes, nose, mouth) on a dark poster; Haar finds it."""
    image = Image.new("RGB", (width, int(width * 1.5)), (40, 40, 60))
    draw = ImageDraw.Draw(image)
    cx, cy, r = width / 2, width * 0.6, width * 0.28
    draw.ellipse([cx - r, cy - r * 1.3, cx + r, cy + r * 1.3], fill=(225, 185, 160))
    for side in (-1, 1):
        ex, ey = cx + side * r * 0.42, cy - r * 0.25
        draw.rectangle([ex - r * 0.28, ey - r * 0.32, ex + r * 0.28, ey - r * 0.24], fill=(60, 40, 30))
        draw.ellipse([ex - r * 0.2, ey - r * 0.1, ex + r * 0.2, ey + r * 0.1], fill=(40, 30, 30))
    draw.polygon([(cx, cy - r * 0.1), (cx - r * 0.12, cy + r * 0.35), (cx + r * 0.12, cy + r * 0.35)],
                 fill=(200, 150, 130))
    draw.ellipse([cx - r * 0.35, cy + r * 0.55, cx + r * 0.35, cy + r * 0.72], fill=(150, 60, 60))
    draw.rectangle([cx - r * 1.05, cy - r * 1.45, cx + r * 1.05, cy - r * 0.95], fill=(50, 35, 25))
    return image.filter(ImageFilter.GaussianBlur(blur))


def test_features_shape_dtype_and_none(detector):
    image = synthetic_face()
    feats = detector.features(image)
    assert feats.shape == (detector.dim,) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert len(detector.feature_names) == detector.dim
    assert not detector.features(None).any() and detector.features(None).dtype == np.float32
    batch = detector.features_batch([image, None])
    assert batch.shape == (2, detector.dim) and batch.dtype == np.float32
    assert np.allclose(batch[0], feats) and not batch[1].any()
    assert detector.features_batch([]).shape == (0, detector.dim)


def test_detect_boxes_inside_the_image(detector):
    image = synthetic_face(240)
    for det in detector.detect(image):
        assert isinstance(det, Detection) and det.label in detector.labels
        x0, y0, x1, y1 = det.box
        assert -1 <= x0 < x1 <= image.width + 1 and -1 <= y0 < y1 <= image.height + 1
        assert 0.0 <= det.score <= 1.0


def test_odd_images_do_not_crash(detector):
    for image in (Image.new("L", (60, 90), 128), Image.new("RGBA", (5, 5)), Image.new("RGB", (900, 40), "white"),
                  Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 80, 3), dtype=np.uint8))):
        assert detector.features(image).shape == (detector.dim,)
    with pytest.raises(InputError):
        detector.features("poster.jpg")


def test_describe_is_json(detector):
    info = detector.describe()
    json.dumps(info)
    assert info["kind"] == "detector" and info["dim"] == detector.dim
    assert info["labels"] == list(detector.labels) and isinstance(info["pretrained"], bool)


@pytest.mark.parametrize("name", [n for n in list_encoders("detector") if n != "haar"])
def test_coco_detectors_pool_their_backbone(name):
    detector = build_encoder("detector", name, pretrained=False)
    assert len(detector.labels) == 80 and "person" in detector.labels
    feats = detector.features(synthetic_face())
    backbone = feats[3 * len(detector.labels):]
    assert backbone.shape == (detector.backbone_dim,) and np.abs(backbone).sum() > 0


# --------------------------------------------------------------------------------------------- haar


def test_haar_finds_a_drawn_face():
    haar = _haar_or_skip()
    image = synthetic_face(300)
    faces = [d for d in haar.detect(image) if d.label == "face"]
    assert faces, "the drawn face is found"
    x0, y0, x1, y1 = faces[0].box
    assert x0 < 150 < x1 and y0 < 180 < y1  # around the drawn face centre (150, 180)
    feats = haar.features(image)
    assert feats[0] >= 1 and feats[HAAR_STATS.index("area_frac")] > 0.1
    assert not haar.features(Image.new("RGB", (300, 450), (90, 90, 90))).any(), "a flat poster has nothing"


def test_haar_feature_layout(monkeypatch):
    haar = _haar_or_skip()
    # two faces in the top-left cell of a 300x300 image, one upper body covering the whole image
    detections = [Detection("face", (0.0, 0.0, 100.0, 100.0), 0.8), Detection("face", (0.0, 0.0, 50.0, 50.0), 0.6),
                  Detection("upper_body", (0.0, 0.0, 300.0, 300.0), 0.5)]
    monkeypatch.setattr(HaarDetector, "detect", lambda self, image: detections)
    feats = haar.features(Image.new("RGB", (300, 300)))
    per_class = len(HAAR_STATS) + GRID * GRID
    face, upper, full = feats[:per_class], feats[per_class:2 * per_class], feats[2 * per_class:]
    stats = dict(zip(HAAR_STATS, face[:len(HAAR_STATS)]))
    assert stats["count"] == 2 and stats["log1p_count"] == pytest.approx(np.log1p(2))
    assert stats["area_frac"] == pytest.approx((100 * 100 + 50 * 50) / 300 ** 2)
    assert stats["max_area_frac"] == pytest.approx(100 * 100 / 300 ** 2)
    assert stats["mean_cx"] == pytest.approx((50 + 25) / 2 / 300) and stats["mean_cy"] == stats["mean_cx"]
    assert stats["mean_score"] == pytest.approx(0.7)
    face_grid = face[len(HAAR_STATS):].reshape(GRID, GRID)
    assert face_grid[0, 0] == pytest.approx(1.0) and face_grid.sum() == pytest.approx(1.0)  # clipped coverage
    assert np.allclose(upper[len(HAAR_STATS):], 1.0) and upper[0] == 1
    assert not full.any()
    assert haar.feature_names[0] == "face/count" and haar.feature_names[per_class] == "upper_body/count"


def test_haar_unavailable_message_is_instructive(monkeypatch, tmp_path):
    with pytest.raises(EncoderUnavailableError) as err:
        build_encoder("detector", "haar", weights=tmp_path)  # an empty folder has no cascade files
    assert "haarcascade_frontalface_default.xml" in str(err.value) and "opencv" in str(err.value).lower()


# --------------------------------------------------------------------------------------------- COCO


def test_coco_class_stats_layout():
    labels = ("person", "car")
    dets = [Detection("car", (0, 0, 50, 100), 0.9), Detection("car", (0, 0, 100, 100), 0.4)]
    stats = coco_class_stats(dets, labels, 100, 100).reshape(2, 3)
    assert not stats[0].any()
    assert stats[1] == pytest.approx([np.log1p(2), 1.0, 0.9])  # area 0.5 + 1.0 clipped to 1


def test_pretrained_coco_detectors_need_weights(monkeypatch, tmp_path):
    with pytest.raises(EncoderUnavailableError, match="yolov8n.*--detector haar"):
        build_encoder("detector", "yolov8n")
    hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        with pytest.raises(EncoderUnavailableError, match="fasterrcnn.*--detector haar"):
            build_encoder("detector", "fasterrcnn")
    finally:
        torch.hub.set_dir(hub)


class _NotAModel:
    """Stands for arbitrary pickled code in an untrusted checkpoint."""


def test_yolo_checkpoint_is_checked_before_unpickling(tmp_path):
    bad = tmp_path / "bad.pt"
    with open(bad, "wb") as f:
        pickle.dump({"model": _NotAModel()}, f, protocol=2)
    with pytest.raises(InputError, match="bad.pt"):
        build_encoder("detector", "yolov8n", weights=bad)
    with pytest.raises(InputError, match=".pt"):
        build_encoder("detector", "yolov8n", weights=tmp_path)  # a folder, not a .pt file


def test_fasterrcnn_weights_round_trip(tmp_path):
    random = build_encoder("detector", "fasterrcnn", pretrained=False)
    path = tmp_path / "frcnn.pth"
    torch.save(random.net.state_dict(), path)
    loaded = build_encoder("detector", "fasterrcnn", weights=path)
    assert loaded.describe()["pretrained"]
    for a, b in zip(random.net.state_dict().values(), loaded.net.state_dict().values()):
        assert torch.equal(a, b)


def test_building_yolo_leaves_pil_open_alone(tmp_path):
    """ultralytics patches PIL.Image.open on import; mmgenre must undo it so bad posters still
    raise InputError (not ModuleNotFoundError from a pi-heif auto-install attempt)."""
    import pytest as _pytest
    from PIL import Image

    from mmgenre.data import load_poster
    from mmgenre.encoders import build_encoder
    from mmgenre.errors import InputError

    build_encoder("detector", "yolov8n", pretrained=False)
    assert Image.open.__module__.startswith("PIL")
    bad = tmp_path / "x.jpeg"
    bad.write_bytes(b"not an image at all")
    with _pytest.raises(InputError):
        load_poster(bad)
