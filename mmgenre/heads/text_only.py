"""`text_only`: MLP on the pooled text features (a single-modality baseline)."""
from mmgenre.heads import register_head
from mmgenre.heads.base import SingleModalityHead


@register_head("text_only")
class TextOnlyHead(SingleModalityHead):
    """LayerNorm -> Linear(hidden) -> GELU -> Dropout -> Linear(n_genres) on `batch["text"]`."""

    modalities = ("text",)
