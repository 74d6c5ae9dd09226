"""Checks that a processor (or tokenizer) fits the model it feeds.

A tokenizer and a text tower are paired by two numbers of the model's text config:

* `vocab_size`: every id the tokenizer emits indexes the token-embedding table (and, for UNIFY, one
  lexicon dimension per token). A tokenizer of another size is the wrong tokenizer: a
  `BertTokenizerFast(vocab_file=...)` that silently built 5 tokens, or a caption-built vocabulary
  paired with a pretrained BERT, gives ids that mean nothing to the model (or index past its table).
* `max_position_embeddings`: the position table. A caption longer than it crashes the text tower (or
  reads garbage positions), so the tokenizer's `model_max_length` must not exceed it; the processors
  truncate to `model_max_length` by default.

`check_processor_matches_model` is called when a processor and a model are paired: by the from-scratch
presets, by `hub.write_model_folder` before saving, and by the training script (`docs/data.md`).
"""

from __future__ import annotations

import logging

__all__ = ["ProcessorModelMismatchError", "check_processor_matches_model", "text_config_of"]

logger = logging.getLogger(__name__)

ON_TOO_LONG_CHOICES = ("clamp", "error")


class ProcessorModelMismatchError(ValueError):
    """The processor's tokenizer does not fit the model's text tower."""


def text_config_of(model_or_config):
    """The text-tower config of a model or config: `config.text_config` (UNIFY, CLIP),
    `config.clip_config.text_config` (T-MASS), or the config itself when it has `vocab_size` and
    `max_position_embeddings` (a plain BERT / CLIP text config).

    Raises:
        TypeError: no text config can be found.
    """
    config = getattr(model_or_config, "config", model_or_config)
    for path in (("text_config",), ("clip_config", "text_config"), ()):
        candidate = config
        for name in path:
            candidate = getattr(candidate, name, None)
        if candidate is not None and hasattr(candidate, "vocab_size") and hasattr(candidate, "max_position_embeddings"):
            return candidate
    raise TypeError(
        f"{type(model_or_config).__name__} has no text config with `vocab_size` and `max_position_embeddings` "
        "(looked at config.text_config, config.clip_config.text_config and the config itself)"
    )


def _tokenizer_of(processor_or_tokenizer):
    tokenizer = getattr(processor_or_tokenizer, "tokenizer", None)
    if tokenizer is not None:
        return tokenizer
    if hasattr(processor_or_tokenizer, "model_max_length") and hasattr(processor_or_tokenizer, "get_vocab"):
        return processor_or_tokenizer
    raise TypeError(
        f"expected a processor with a `tokenizer` or a tokenizer, got {type(processor_or_tokenizer).__name__}"
    )


def check_processor_matches_model(processor_or_tokenizer, model_or_config, *, on_too_long: str = "clamp"):
    """Check (and where it is safe, fix) that a processor or tokenizer fits a model.

    Args:
        processor_or_tokenizer: a `TMassProcessor` / `UnifyProcessor` (anything with `.tokenizer`) or a
            tokenizer.
        model_or_config: a model, its config, or a text config (see `text_config_of`).
        on_too_long: what to do when the tokenizer's `model_max_length` exceeds the model's
            `max_position_embeddings`: `"clamp"` (default) sets it to `max_position_embeddings` (logged),
            `"error"` raises.

    Returns:
        The tokenizer (clamped in place when needed).

    Raises:
        ProcessorModelMismatchError: the tokenizer's size (`len(tokenizer)`, added tokens included)
            differs from the model's `vocab_size`, or (with `on_too_long="error"`) its
            `model_max_length` exceeds the position table.
    """
    if on_too_long not in ON_TOO_LONG_CHOICES:
        raise ValueError(f"on_too_long must be one of {ON_TOO_LONG_CHOICES}, got {on_too_long!r}")
    tokenizer = _tokenizer_of(processor_or_tokenizer)
    text_config = text_config_of(model_or_config)
    tokenizer_name = f"{type(tokenizer).__name__}({getattr(tokenizer, 'name_or_path', '') or 'built in memory'})"

    num_tokens = len(tokenizer)
    if num_tokens != text_config.vocab_size:
        hint = (
            " A tokenizer this small usually means its vocabulary file was not read (e.g. BertTokenizerFast("
            "vocab_file=...) on a missing or wrong file builds only the special tokens)."
            if num_tokens < 100
            else ""
        )
        raise ProcessorModelMismatchError(
            f"the tokenizer {tokenizer_name} has {num_tokens} tokens but the model's text vocab_size is "
            f"{text_config.vocab_size}: its ids would not index the model's token embeddings. Pair the model "
            f"with the tokenizer it was built or trained with.{hint}"
        )

    positions = text_config.max_position_embeddings
    if tokenizer.model_max_length > positions:
        if on_too_long == "error":
            raise ProcessorModelMismatchError(
                f"the tokenizer {tokenizer_name} allows {tokenizer.model_max_length} tokens (model_max_length) but "
                f"the model's text tower has {positions} positions (max_position_embeddings): longer captions "
                "would crash it; set tokenizer.model_max_length to at most that"
            )
        logger.info(
            "tokenizer model_max_length %s exceeds the model's %s text positions: clamped to %s",
            tokenizer.model_max_length, positions, positions,
        )
        tokenizer.model_max_length = positions
        # `init_kwargs` is what save_pretrained writes into tokenizer_config.json.
        tokenizer.init_kwargs["model_max_length"] = positions
    return tokenizer
