"""`detection_fusion`: attention fusion over text, image and object-detector statistics."""
from mmgenre.heads import register_head
from mmgenre.heads.attention_fusion import AttentionFusionHead


@register_head("detection_fusion")
class DetectionFusionHead(AttentionFusionHead):
    """`attention_fusion` with a third modality, ``det`` (symlog + LayerNorm before projection).

    ``det`` counts as missing where ``has_det`` (default: ``has_image``) is False.
    extras: ``modality_weights`` (B, 3) over (text, image, det).
    """

    modalities = ("text", "image", "det")
