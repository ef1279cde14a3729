"""`detection_only`: MLP on the poster's object-detector statistics."""
from mmgenre.heads import register_head
from mmgenre.heads.base import SingleModalityHead


@register_head("detection_only")
class DetectionOnlyHead(SingleModalityHead):
    """symlog + LayerNorm -> Linear(hidden) -> GELU -> Dropout -> Linear on `batch["detector"]`.

    The symlog brings counts and areas to comparable scales before the LayerNorm. Rows without a
    poster (``has_detector``, else ``has_image``, False) use a learned placeholder.
    """

    modalities = ("detector",)
