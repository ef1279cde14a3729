"""Frozen encoders chosen by name: text (plots), image (posters) and detector (objects on posters).

>>> from mmgenre.encoders import build_encoder, list_encoders
>>> text = build_encoder("text", "minilm")              # offline default
>>> feats = text(**text.tokenize(["A cop hunts a killer."]))  # TextFeatures(pooled, tokens, mask)

Heavy libraries (transformers, timm, ultralytics, OpenCV) are imported only when an encoder is built.
"""
from mmgenre.encoders.base import (
    CLI_FLAGS, ENCODER_KINDS, build_encoder, default_encoder, encoder_info, freeze, list_encoders,
    option_name, register_encoder, register_fallback,
)
from mmgenre.encoders.kinds import KINDS, Detection, Detector, ImageEncoder, ImageFeatures, TextEncoder, TextFeatures
# Importing the modules registers their encoders (text first so registration order is stable).
from mmgenre.encoders import text as _text  # noqa: E402,F401
from mmgenre.encoders import image as _image  # noqa: E402,F401
from mmgenre.encoders import detectors as _detectors  # noqa: E402,F401

__all__ = [
    "CLI_FLAGS", "ENCODER_KINDS", "KINDS", "Detection", "Detector", "ImageEncoder", "ImageFeatures", "TextEncoder",
    "TextFeatures", "build_encoder", "default_encoder", "encoder_info", "freeze", "list_encoders", "option_name",
    "register_encoder", "register_fallback",
]
