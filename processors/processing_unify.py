"""UNIFY processor: `UnifyVideoProcessor` + a BERT-style (WordPiece) tokenizer."""

from __future__ import annotations

from .processing_base import BaseVideoTextProcessor
from .video_processing_unify import UnifyVideoProcessor


class UnifyProcessor(BaseVideoTextProcessor):
    r"""
    UNIFY processor: a `UnifyVideoProcessor` (4 uniform frames at 224, ImageNet normalisation) and a
    BERT-style tokenizer (`bert-base-uncased` or one built from captions; any `PreTrainedTokenizerBase`).

    `processor(text=[...], videos=[...], return_tensors="pt")` returns `input_ids`, `attention_mask`
    `(num_captions, seq_len)` and `pixel_values_videos` float32 `(num_videos, 4, 3, 224, 224)`;
    BERT's `token_type_ids` is dropped. Captions reach the tokenizer unchanged by default
    (`text_cleaning=None`): BERT's own normalizer cleans them.
    """

    default_video_processor_class = UnifyVideoProcessor

    def __init__(self, video_processor=None, tokenizer=None, text_cleaning=None, **kwargs):
        super().__init__(video_processor, tokenizer, text_cleaning=text_cleaning, **kwargs)


__all__ = ["UnifyProcessor"]
