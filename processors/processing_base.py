"""Shared processor (video processor + tokenizer) of the T-MASS and UNIFY processors.

`processor(text=[...], videos=[...], return_tensors="pt")` returns exactly `input_ids`,
`attention_mask` (captions padded to the longest, truncated to the tokenizer's `model_max_length`,
which `video_text_retrieval.pairing.check_processor_matches_model` keeps within the model's position
table) and `pixel_values_videos` float32 `(batch, num_frames, 3, H, W)`; `token_type_ids` is never
returned (one input layout for both models). Text-only and video-only calls return only their own keys.

Text cleaning (`text_cleaning`): the official T-MASS code tokenizes with transformers' slow Python
`CLIPTokenizer`, which repairs every caption with `ftfy.fix_text` (mojibake, curly quotes, HTML
entities, ligatures, full-width characters) and collapses whitespace before its byte-level BPE. A
tokenizers-backed tokenizer cannot run ftfy, so the processor does it: `"ftfy"` reproduces that
cleaning, `"ftfy_html"` additionally unescapes HTML twice as OpenAI's and open_clip's
`SimpleTokenizer` do, `None` passes captions unchanged.

Only third-party and flat sibling imports, so the file can be copied into a Hub model folder.
"""

# No `from __future__ import annotations`: transformers reads the kwargs TypedDicts' annotations at run time.

import html
import re
from typing import Any

from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, Unpack

from .video_processing_base import RetrievalVideosKwargs


class VideoTextProcessorKwargs(ProcessingKwargs, total=False):
    # Lets flat keyword arguments such as `frame_sampling=` reach the video processor.
    videos_kwargs: RetrievalVideosKwargs


def _check_captions(text: Any) -> list[str]:
    """Captions as a non-empty list of non-empty strings; a single string is a batch of one."""
    if isinstance(text, str):
        text = [text]
    if not isinstance(text, (list, tuple)):
        raise TypeError(f"`text` must be a caption string or a list of caption strings, got {type(text).__name__}")
    if len(text) == 0:
        raise ValueError("`text` is an empty list: pass at least one caption")
    for position, caption in enumerate(text):
        if not isinstance(caption, str):
            raise TypeError(f"text[{position}] must be a string, got {type(caption).__name__}")
        if not caption.strip():
            raise ValueError(f"text[{position}] is an empty caption ({caption!r})")
    return list(text)


TEXT_CLEANINGS = (None, "ftfy", "ftfy_html")
_WHITESPACE = re.compile(r"\s+")


def clean_caption_text(text: str, text_cleaning: str | None) -> str:
    """One caption cleaned as the reference CLIP tokenizers clean it before BPE.

    `"ftfy"`: `ftfy.fix_text`, then runs of whitespace collapsed to one space and the ends stripped
    (transformers' slow `CLIPTokenizer`, used by the official T-MASS code). `"ftfy_html"`: the same with
    `html.unescape` applied twice after ftfy (OpenAI CLIP's `SimpleTokenizer`). `None`: unchanged.
    Lower-casing is left to the tokenizer's normalizer.
    """
    if text_cleaning is None:
        return text
    try:
        import ftfy
    except ImportError as error:  # a copied Hub folder used without the project's dependencies
        raise ImportError(
            f"text_cleaning={text_cleaning!r} needs the `ftfy` package (pip install ftfy), as the reference CLIP "
            "tokenizer does; or build the processor with text_cleaning=None"
        ) from error
    text = ftfy.fix_text(text)
    if text_cleaning == "ftfy_html":
        text = html.unescape(html.unescape(text))
    return _WHITESPACE.sub(" ", text).strip()


class BaseVideoTextProcessor(ProcessorMixin):
    r"""
    A video processor and a tokenizer in one object (transformers `ProcessorMixin`).

    Args:
        video_processor: a video processor; `None` builds the subclass's default
            (`default_video_processor_class()`).
        tokenizer: any `PreTrainedTokenizerBase` (e.g. CLIP's BPE tokenizer or one built from captions).
        text_cleaning: `None`, `"ftfy"` or `"ftfy_html"` (see the module docstring); saved in
            `processor_config.json`.

    Saving writes `processor_config.json` (with the video-processor settings nested in it) and the
    tokenizer files. `from_pretrained` rebuilds the video processor with the subclass's own class, so
    a saved folder reloads without any `AutoVideoProcessor` registration.
    """

    valid_processor_kwargs = VideoTextProcessorKwargs
    default_video_processor_class: type | None = None  # set by subclasses

    # Defaults of the tokenizer call (lowest priority: anything passed per call wins).
    text_kwargs = {"padding": "longest", "truncation": True, "return_token_type_ids": False}

    def __init__(self, video_processor=None, tokenizer=None, text_cleaning=None, **kwargs):
        if video_processor is None and self.default_video_processor_class is not None:
            video_processor = self.default_video_processor_class()
        if tokenizer is None:
            raise ValueError(f"{type(self).__name__} needs a `tokenizer` (a PreTrainedTokenizerBase)")
        if text_cleaning not in TEXT_CLEANINGS:
            raise ValueError(f"text_cleaning must be one of {TEXT_CLEANINGS}, got {text_cleaning!r}")
        self.text_cleaning = text_cleaning
        super().__init__(video_processor, tokenizer, **kwargs)

    def __call__(
        self,
        text: str | list[str] | None = None,
        videos: Any = None,
        **kwargs: Unpack[VideoTextProcessorKwargs],
    ) -> BatchFeature:
        """Tokenise captions and/or preprocess videos.

        Args:
            text: a caption or a list of captions (none of them empty).
            videos: a path, decoded frames, or a list of those (see the video processor); not empty.
            **kwargs: tokenizer arguments (`padding`, `max_length`, ...), video-processor arguments
                (`num_frames`, `frame_sampling`, ...) and `return_tensors`.

        Returns:
            `BatchFeature` with `input_ids` and `attention_mask` `(num_captions, seq_len)` when `text`
            is given, and `pixel_values_videos` float32 `(num_videos, num_frames, 3, H, W)` when `videos` is.
        """
        if text is None and videos is None:
            raise ValueError("Pass `text` (captions), `videos`, or both")
        output_kwargs = self._merge_kwargs(
            self.valid_processor_kwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        data: dict[str, Any] = {}
        if text is not None:
            captions = [clean_caption_text(caption, self.text_cleaning) for caption in _check_captions(text)]
            text_inputs = self.tokenizer(captions, **output_kwargs["text_kwargs"])
            data["input_ids"] = text_inputs["input_ids"]
            data["attention_mask"] = text_inputs["attention_mask"]
        if videos is not None:
            if isinstance(videos, (list, tuple)) and len(videos) == 0:
                raise ValueError("`videos` is an empty list: pass at least one video (a path or decoded frames)")
            video_inputs = self.video_processor(videos, **output_kwargs["videos_kwargs"])
            data["pixel_values_videos"] = video_inputs["pixel_values_videos"]
        return_tensors = output_kwargs["text_kwargs"].get("return_tensors") or output_kwargs["videos_kwargs"].get(
            "return_tensors"
        )
        return BatchFeature(data=data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values_videos"]

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # transformers 5 loads the video processor through `AutoVideoProcessor`, which only knows
        # registered classes; load ours directly so that a saved folder reloads without registration.
        subfolder = kwargs.pop("subfolder", "")
        video_processor_class = cls.default_video_processor_class
        saved_type = ((processor_dict or {}).get("video_processor") or {}).get("video_processor_type")
        if saved_type is not None and saved_type != video_processor_class.__name__:
            raise ValueError(
                f"{pretrained_model_name_or_path} holds a {saved_type}, but {cls.__name__} uses "
                f"{video_processor_class.__name__}; load it with the processor class that matches"
            )
        video_processor = video_processor_class.from_pretrained(
            pretrained_model_name_or_path, subfolder=subfolder, **kwargs
        )
        tokenizer = cls._load_tokenizer_from_pretrained(
            "tokenizer", pretrained_model_name_or_path, subfolder=subfolder, **kwargs
        )
        return [video_processor, tokenizer]
