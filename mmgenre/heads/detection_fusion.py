"""`detection_fusion`: attention fusion over text, image and object-detector statistics."""
from mmgenre.heads import register_head
from mmgenre.heads.attention_fusion import AttentionFusionHead


@register_head("detection_fusion")
class DetectionFusionHead(AttentionFusionHead):
    """`attention_fusion` with a third modality, ``detector`` (symlog + LayerNorm before projection).

    ``detector`` counts as missing where ``has_detector`` (default: ``has_image``) is False.
    extras: ``modality_weights`` (B, 3) over (text, image, detector).
    """

    modalities = ("text", "image", "detector")
