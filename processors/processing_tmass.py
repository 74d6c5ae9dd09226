"""T-MASS processor: `TMassVideoProcessor` + a CLIP-style tokenizer."""

from __future__ import annotations

from .processing_base import BaseVideoTextProcessor
from .video_processing_tmass import TMassVideoProcessor


class TMassProcessor(BaseVideoTextProcessor):
    r"""
    T-MASS processor: a `TMassVideoProcessor` (12 uniform frames, CLIP preprocessing at 224) and a
    tokenizer (the CLIP BPE tokenizer, or any `PreTrainedTokenizerBase`, e.g. one built from captions).

    `processor(text=[...], videos=[...], return_tensors="pt")` returns `input_ids`, `attention_mask`
    `(num_captions, seq_len)` and `pixel_values_videos` float32 `(num_videos, 12, 3, 224, 224)`.

    Captions are cleaned with `ftfy.fix_text` by default (`text_cleaning="ftfy"`), as the slow
    `CLIPTokenizer` of the official code cleans them, so ids equal the official ones also on curly
    quotes, HTML entities and mojibake.
    """

    default_video_processor_class = TMassVideoProcessor

    def __init__(self, video_processor=None, tokenizer=None, text_cleaning="ftfy", **kwargs):
        super().__init__(video_processor, tokenizer, text_cleaning=text_cleaning, **kwargs)


__all__ = ["TMassProcessor"]
