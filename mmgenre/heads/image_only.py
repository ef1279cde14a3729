"""`image_only`: MLP on the pooled image features (a single-modality baseline)."""
from mmgenre.heads import register_head
from mmgenre.heads.base import SingleModalityHead


@register_head("image_only")
class ImageOnlyHead(SingleModalityHead):
    """LayerNorm -> Linear(hidden) -> GELU -> Dropout -> Linear(n_genres) on `batch["image"]`."""

    modalities = ("image",)
