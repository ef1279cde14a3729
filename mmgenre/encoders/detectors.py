"""Frozen object detectors whose detections become a fixed-length feature vector per poster.

- ``haar`` (default, offline): OpenCV Haar cascades for frontal faces, upper bodies and full bodies.
- ``yolov8n``: Ultralytics YOLOv8n (COCO), ``weights=`` a ``.pt`` file; random for tests.
- ``fasterrcnn``: torchvision Faster R-CNN MobileNetV3-320-FPN (COCO), ``weights=`` a ``.pth``; random for tests.

Feature layouts (``feature_names`` names every column):
- haar, per class: count, log1p(count), total box area / image area (clipped to 1), largest box area
  fraction, mean box-centre x and y (0..1, 0 when nothing is found), mean score, then a 3x3 grid
  (row-major) of the fraction of each cell that boxes cover (clipped to 1). 3 x 16 = 48 columns.
- COCO detectors, per class: log1p(count), total area fraction (clipped to 1), max score; then the
  backbone's last feature map, global-average pooled. No poster (``None``) gives all zeros.
"""
from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mmgenre.errors import EncoderUnavailableError, InputError
from mmgenre.encoders.base import (
    check_image, freeze, is_offline, library_versions, load_weights_into,
    register_encoder, unavailable,
)
from mmgenre.encoders.kinds import Detection, Detector

HAAR_STATS = ("count", "log1p_count", "area_frac", "max_area_frac", "mean_cx", "mean_cy", "mean_score")
GRID = 3
COCO_STATS = ("log1p_count", "area_frac", "max_score")


def _area_frac(box: tuple[float, float, float, float], width: int, height: int) -> float:
    x0, y0, x1, y1 = box
    return max(0.0, x1 - x0) * max(0.0, y1 - y0) / float(width * height)


def coco_class_stats(detections: list[Detection], labels: tuple[str, ...], width: int, height: int) -> np.ndarray:
    """(len(labels) * 3,) float32: per class log1p(count), total area fraction (<= 1), max score."""
    index = {label: i for i, label in enumerate(labels)}
    stats = np.zeros((len(labels), len(COCO_STATS)), dtype=np.float64)
    for det in detections:
        i = index[det.label]
        stats[i, 0] += 1
        stats[i, 1] += _area_frac(det.box, width, height)
        stats[i, 2] = max(stats[i, 2], det.score)
    stats[:, 0] = np.log1p(stats[:, 0])
    stats[:, 1] = np.minimum(stats[:, 1], 1.0)
    return stats.reshape(-1).astype(np.float32)


class _BaseDetector(Detector):
    def __init__(self, name: str, labels: tuple[str, ...], *, source: str, pretrained: bool):
        self.name, self.labels, self.source, self.pretrained = name, tuple(labels), source, pretrained
        # One detector is shared by every predictor (and the explainer) of a process, and neither
        # OpenCV's CascadeClassifier nor a YOLO predictor (or our forward-hook taps) is
        # re-entrant: concurrent requests of a web app must take turns.
        self._lock = threading.RLock()

    @property
    def feature_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        return len(self.feature_names)

    def features(self, image: Image.Image | None) -> np.ndarray:
        if image is None:
            return np.zeros(self.dim, dtype=np.float32)
        return self._features(check_image(image))

    def _features(self, image: Image.Image) -> np.ndarray:
        raise NotImplementedError

    def _describe_extra(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "source": self.source, "dim": self.dim,
                "labels": list(self.labels), "pretrained": self.pretrained,
                "feature_names": self.feature_names, **self._describe_extra()}


# ---------------------------------------------------------------------------------------------
# OpenCV Haar cascades


class HaarDetector(_BaseDetector):
    """Haar cascades run on a grey, histogram-equalised copy whose longer side is ``work_side`` px.

    Minimum sizes are relative to that copy: faces >= ``face_min`` px, upper bodies >= 25% of the width,
    full bodies >= 35% of the height (bodies on posters are large; smaller windows triple the time).
    """

    CASCADES = (("face", "haarcascade_frontalface_default.xml", 5),
                ("upper_body", "haarcascade_upperbody.xml", 3),
                ("full_body", "haarcascade_fullbody.xml", 3))  # (label, file, minNeighbors)

    def __init__(self, name: str, cascades: list[Any], *, source: str, work_side: int = 288,
                 scale_factor: float = 1.15, face_min: int = 16, upper_body_min: float = 0.25,
                 full_body_min: float = 0.35):
        super().__init__(name, tuple(c[0] for c in self.CASCADES), source=source, pretrained=True)
        self._cascades = cascades
        self.work_side, self.scale_factor, self.face_min = int(work_side), float(scale_factor), int(face_min)
        self.upper_body_min, self.full_body_min = float(upper_body_min), float(full_body_min)

    @property
    def feature_names(self) -> list[str]:
        cells = [f"grid_{r}{c}" for r in range(GRID) for c in range(GRID)]
        return [f"{label}/{s}" for label in self.labels for s in (*HAAR_STATS, *cells)]

    def _min_sizes(self, w: int, h: int) -> dict[str, tuple[int, int]]:
        uw = max(22, int(self.upper_body_min * w))
        fh = max(28, int(self.full_body_min * h))
        return {"face": (self.face_min, self.face_min), "upper_body": (uw, uw * 18 // 22),
                "full_body": (fh * 14 // 28, fh)}  # the cascades' own window aspect ratios

    def detect(self, image: Image.Image) -> list[Detection]:
        import cv2

        image = check_image(image)
        grey = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY)
        scale = min(1.0, self.work_side / max(grey.shape))
        if scale < 1.0:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        grey = cv2.equalizeHist(grey)
        h, w = grey.shape
        min_sizes = self._min_sizes(w, h)
        out = []
        for (label, _, neighbours), cascade in zip(self.CASCADES, self._cascades):
            if min_sizes[label][0] > w or min_sizes[label][1] > h:
                continue
            with self._lock:
                boxes, counts = cascade.detectMultiScale2(grey, scaleFactor=self.scale_factor,
                                                          minNeighbors=neighbours, minSize=min_sizes[label])
            for (x, y, bw, bh), n in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(counts).reshape(-1)):
                # score: how many raw windows agreed, squashed to (0, 1); >= 0.5 for accepted boxes
                score = float(n) / (float(n) + neighbours)
                box = (x / scale, y / scale, (x + bw) / scale, (y + bh) / scale)
                out.append(Detection(label, tuple(float(v) for v in box), score))
        return out

    def _features(self, image: Image.Image) -> np.ndarray:
        width, height = image.size
        detections = self.detect(image)
        rows = []
        for label in self.labels:
            dets = [d for d in detections if d.label == label]
            areas = [_area_frac(d.box, width, height) for d in dets]
            stats = np.zeros(len(HAAR_STATS), dtype=np.float64)
            grid = np.zeros((GRID, GRID), dtype=np.float64)
            if dets:
                cx = [(d.box[0] + d.box[2]) / 2 / width for d in dets]
                cy = [(d.box[1] + d.box[3]) / 2 / height for d in dets]
                stats[:] = (len(dets), math.log1p(len(dets)), min(1.0, sum(areas)), max(areas),
                            np.mean(cx), np.mean(cy), np.mean([d.score for d in dets]))
                for d in dets:
                    grid += _cell_coverage(d.box, width, height)
            rows.append(np.concatenate([stats, np.minimum(grid, 1.0).reshape(-1)]))
        return np.concatenate(rows).astype(np.float32)

    def _describe_extra(self) -> dict[str, Any]:
        import cv2
        return {"params": {"work_side": self.work_side, "scale_factor": self.scale_factor, "face_min": self.face_min,
                           "upper_body_min": self.upper_body_min, "full_body_min": self.full_body_min,
                           "min_neighbors": {c[0]: c[2] for c in self.CASCADES}},
                "versions": {**library_versions(), "opencv": cv2.__version__}}


def _cell_coverage(box: tuple[float, float, float, float], width: int, height: int) -> np.ndarray:
    """(GRID, GRID) fraction of each cell of the image that ``box`` covers."""
    x0, y0, x1, y1 = box
    xs = np.linspace(0, width, GRID + 1)
    ys = np.linspace(0, height, GRID + 1)
    ox = np.clip(np.minimum(x1, xs[1:]) - np.maximum(x0, xs[:-1]), 0, None) / np.diff(xs)
    oy = np.clip(np.minimum(y1, ys[1:]) - np.maximum(y0, ys[:-1]), 0, None) / np.diff(ys)
    return np.outer(oy, ox)


@register_encoder("detector", "haar", offline=True,
                  description="OpenCV Haar cascades (faces, upper bodies, full bodies): counts, areas, positions "
                              "and a 3x3 coverage grid per class, 48 features")
def build_haar(name: str, *, weights=None, pretrained=True, device="cpu", **params) -> HaarDetector:
    import cv2

    folder = Path(weights) if weights is not None else Path(getattr(getattr(cv2, "data", None), "haarcascades", ""))
    files = [folder / f for _, f, _ in HaarDetector.CASCADES]
    if not hasattr(cv2, "CascadeClassifier") or not all(f.is_file() for f in files):
        # haar is itself the offline default, so there is no other detector to suggest here
        raise EncoderUnavailableError(
            f"haar: this OpenCV ({cv2.__version__}) has no CascadeClassifier or no Haar cascade files in "
            f"{str(folder)!r} (OpenCV 5 moved both out of the main wheels). Install OpenCV 4, which ships them: "
            "`pip install opencv-python-headless==4.14.0.94 opencv-python==4.14.0.94`, or pass "
            "weights=<folder with haarcascade_frontalface_default.xml, haarcascade_upperbody.xml and "
            "haarcascade_fullbody.xml>")
    cascades = [cv2.CascadeClassifier(str(f)) for f in files]
    if any(c.empty() for c in cascades):
        raise InputError(f"haar: a cascade file in {str(folder)!r} could not be read")
    return HaarDetector(name, cascades, source=str(folder), **params)


# ---------------------------------------------------------------------------------------------
# COCO detectors with a pooled backbone feature


class _CocoDetector(_BaseDetector):
    """Shared layout: per-class stats + pooled backbone; ``_run`` returns (detections, pooled backbone)."""

    backbone_dim: int

    @property
    def feature_names(self) -> list[str]:
        return ([f"{label}/{s}" for label in self.labels for s in COCO_STATS]
                + [f"backbone/{i}" for i in range(self.backbone_dim)])

    def _run(self, image: Image.Image) -> tuple[list[Detection], np.ndarray]:
        raise NotImplementedError

    def detect(self, image: Image.Image) -> list[Detection]:
        with self._lock:
            return self._run(check_image(image))[0]

    def _features(self, image: Image.Image) -> np.ndarray:
        with self._lock:
            detections, pooled = self._run(image)
        stats = coco_class_stats(detections, self.labels, *image.size)
        return np.concatenate([stats, pooled]).astype(np.float32)


def _coco80() -> tuple[str, ...]:
    """The 80 COCO class names in the usual contiguous order (torchvision's list without N/A)."""
    from torchvision.models.detection import FasterRCNN_MobileNet_V3_Large_320_FPN_Weights as W

    return tuple(c for c in W.COCO_V1.meta["categories"] if c not in ("__background__", "N/A"))


class YoloDetector(_CocoDetector):
    """Ultralytics YOLO; the pooled feature is the last backbone layer (SPPF for YOLOv8) averaged."""

    def __init__(self, name: str, yolo: Any, *, source: str, pretrained: bool, conf: float = 0.25,
                 device: str | torch.device = "cpu"):
        names = yolo.model.names
        labels = tuple(names[i] for i in range(len(names)))
        if all(label.isdigit() for label in labels) and len(labels) == 80:  # yaml build: indices only
            labels = _coco80()
        super().__init__(name, labels, source=source, pretrained=pretrained)
        self.yolo, self.conf, self.device = yolo, float(conf), str(device)
        net = yolo.model
        freeze(net)
        self._tap = net.model[len(net.yaml["backbone"]) - 1]
        self._last: torch.Tensor | None = None
        self._tap.register_forward_hook(lambda _m, _i, out: setattr(self, "_last", out))
        with torch.no_grad():
            net(torch.zeros(1, 3, 64, 64))
        self.backbone_dim = int(self._last.shape[1])

    def _run(self, image: Image.Image) -> tuple[list[Detection], np.ndarray]:
        self._last = None
        result = self.yolo.predict(image, conf=self.conf, verbose=False, device=self.device)[0]
        pooled = self._last.float().mean(dim=(2, 3))[0].cpu().numpy()
        boxes = result.boxes
        detections = [Detection(self.labels[int(c)], tuple(float(v) for v in xyxy), float(s))
                      for xyxy, c, s in zip(boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist())]
        return detections, pooled

    def _describe_extra(self) -> dict[str, Any]:
        return {"params": {"conf": self.conf, "backbone_layer": type(self._tap).__name__},
                "versions": library_versions("ultralytics")}


@register_encoder("detector", "yolov8n", offline=False,
                  description="Ultralytics YOLOv8n (COCO): per-class counts/areas/scores + pooled SPPF features; "
                              "weights=<yolov8n.pt>")
def build_yolov8n(name: str, *, weights=None, pretrained=True, device="cpu", conf: float = 0.25,
                  **overrides) -> YoloDetector:
    """``pretrained=False`` builds ``yolov8n.yaml`` (random, nothing downloaded).

    Ultralytics checkpoints are pickles. A user-given ``.pt`` is first loaded with
    ``weights_only=True`` against ultralytics' allow-list of model classes (refusing files with any
    other pickled code) and only then by ultralytics itself. Only pass files you trust.
    """
    import os

    from PIL import Image
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no update checks / asset downloads
    pil_open = Image.open
    from ultralytics import YOLO
    from ultralytics.nn.tasks import torch_safe_load
    # Importing ultralytics replaces PIL.Image.open process-wide with a version that, on an
    # unreadable file, tries to pip-install pi-heif and raises ModuleNotFoundError instead of
    # UnidentifiedImageError; that would break mmgenre's bad-poster handling everywhere.
    Image.open = pil_open

    if not pretrained:
        return YoloDetector(name, YOLO("yolov8n.yaml", **overrides), source="yolov8n.yaml (random)",
                            pretrained=False, conf=conf, device=device)
    if weights is None:
        raise unavailable(
            "detector", "yolov8n: no weights given and mmgenre does not download them (no internet)",
            "Provide them with weights=<path to yolov8n.pt> (from the ultralytics/assets GitHub releases)")
    path = Path(weights)
    if path.suffix != ".pt" or not path.is_file():
        raise InputError(f"yolov8n weights must be an existing .pt file, got {str(path)!r}")
    try:
        torch_safe_load(str(path), safe_only=True)  # weights_only=True with the known-class allow-list
        yolo = YOLO(str(path), **overrides)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise InputError(f"yolov8n weights {str(path)!r} are not a loadable Ultralytics checkpoint: {err}") from err
    return YoloDetector(name, yolo, source=str(path), pretrained=True, conf=conf, device=device)


class FasterRCNNDetector(_CocoDetector):
    """torchvision Faster R-CNN; the pooled feature is the mean over FPN levels of each level's average."""

    def __init__(self, name: str, net: torch.nn.Module, labels: tuple[str, ...], *, source: str,
                 pretrained: bool, conf: float = 0.5, device: str | torch.device = "cpu"):
        super().__init__(name, _coco80(), source=source, pretrained=pretrained)
        self._all_labels = labels  # the model's 91 category slots, N/A and background included
        self.net, self.conf, self.device = freeze(net).to(device), float(conf), torch.device(device)
        self.backbone_dim = int(net.backbone.out_channels)
        self._last: dict[str, torch.Tensor] | None = None
        net.backbone.register_forward_hook(lambda _m, _i, out: setattr(self, "_last", out))

    def _run(self, image: Image.Image) -> tuple[list[Detection], np.ndarray]:
        import torchvision.transforms.functional as TF

        with torch.inference_mode():  # detector features are statistics, no gradients needed
            out = self.net([TF.to_tensor(image).to(self.device)])[0]
            levels = [v.float().mean(dim=(2, 3))[0] for v in self._last.values()]
            pooled = torch.stack(levels).mean(0).cpu().numpy()
        detections = []
        for box, label, score in zip(out["boxes"].tolist(), out["labels"].tolist(), out["scores"].tolist()):
            name = self._all_labels[label]
            if score >= self.conf and name in self.labels:
                detections.append(Detection(name, tuple(float(v) for v in box), float(score)))
        return detections, pooled

    def _describe_extra(self) -> dict[str, Any]:
        return {"params": {"conf": self.conf, "architecture": type(self.net.backbone.body).__name__},
                "versions": library_versions("torchvision")}


@register_encoder("detector", "fasterrcnn", offline=False,
                  description="torchvision Faster R-CNN MobileNetV3-Large-320-FPN (COCO): per-class counts/areas/"
                              "scores + pooled FPN features; weights=<.pth> or the torch hub cache")
def build_fasterrcnn(name: str, *, weights=None, pretrained=True, device="cpu", conf: float = 0.5,
                     arch: str = "fasterrcnn_mobilenet_v3_large_320_fpn", **overrides) -> FasterRCNNDetector:
    """``arch`` may name another torchvision Faster R-CNN, e.g. ``fasterrcnn_resnet50_fpn``."""
    from torchvision.models import get_model, get_model_weights

    default = get_model_weights(arch).DEFAULT
    labels = tuple(default.meta["categories"])
    net = get_model(arch, weights=None, weights_backbone=None, num_classes=len(labels), **overrides)
    if not pretrained:
        return FasterRCNNDetector(name, net, labels, source=f"torchvision {arch} (random)", pretrained=False,
                                  conf=conf, device=device)
    if weights is None:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        cached = hub / Path(default.url).name
        if cached.is_file():
            weights = cached
        elif not is_offline():
            try:
                net.load_state_dict(default.get_state_dict(progress=False))
                return FasterRCNNDetector(name, net, labels, source=default.url, pretrained=True, conf=conf,
                                          device=device)
            except Exception:  # noqa: BLE001 - any download failure means "unavailable"
                pass
        if weights is None:
            raise unavailable(
                "detector", f"fasterrcnn: {arch} COCO weights are not in the torch hub cache ({hub}) and cannot "
                            f"be downloaded (no internet)",
                f"Provide them with weights=<path to {cached.name}> (from {default.url}) or copy that file into {hub}")
    load_weights_into(net, weights)  # torch.load(weights_only=True) or safetensors
    return FasterRCNNDetector(name, net, labels, source=str(weights), pretrained=True, conf=conf, device=device)
