"""Tokenizers built offline from a caption corpus (no download).

The demo models are trained from scratch on the synthetic data set, so their tokenizers are built
from its captions with the `tokenizers` library, with one token per caption word:

* `build_bert_tokenizer` (UNIFY): a BERT WordPiece tokenizer. Vocabulary `[PAD]` 0, `[UNK]` 1,
  `[CLS]` 2, `[SEP]` 3, `[MASK]` 4, then every lower-cased caption word (and punctuation mark) in
  sorted order; no `##` pieces, so a word outside the corpus becomes `[UNK]` rather than pieces.
  Each word is thus one lexicon dimension of UNIFY.
* `build_clip_tokenizer` (T-MASS): CLIP's conventions on a word-level vocabulary: lower-cased,
  `<|startoftext|>` prepended, `<|endoftext|>` appended, padding with `<|endoftext|>`, at most 77
  tokens with truncation keeping the end token. `<|unk|>` is id 0, the words follow, then
  `<|startoftext|>` and `<|endoftext|>`, which is the LARGEST id: the CLIP text model pools at the end
  token (transformers' CLIP at the first `eos_token_id`, older code at `argmax(input_ids)`), and both
  rules then pick the same position.

Both return `transformers` tokenizers that `save_pretrained` writes (`tokenizer.json`,
`tokenizer_config.json`) and `AutoTokenizer.from_pretrained` reloads. Their `model_input_names` are
`["input_ids", "attention_mask"]` (the processors return no `token_type_ids`).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertTokenizerFast, PreTrainedTokenizerFast


BERT_SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CLIP_BOS_TOKEN = "<|startoftext|>"
CLIP_EOS_TOKEN = "<|endoftext|>"
CLIP_UNK_TOKEN = "<|unk|>"
CLIP_MAX_LENGTH = 77
MODEL_INPUT_NAMES = ["input_ids", "attention_mask"]


def _check_captions(captions: Iterable[str]) -> list[str]:
    captions = list(captions)
    if not captions:
        raise ValueError("captions is empty: a tokenizer needs at least one caption to build its vocabulary")
    for index, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise TypeError(f"captions[{index}] is a {type(caption).__name__}, expected str")
    return captions


def _corpus_words(captions: list[str], normalizer, pre_tokenizer) -> list[str]:
    """The sorted set of words the tokenizer's own normalizer and pre-tokenizer produce: the
    vocabulary then covers every caption word exactly, by construction."""
    words = set()
    for caption in captions:
        words.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(caption)))
    return sorted(words)


def build_bert_tokenizer(captions: Iterable[str], *, model_max_length: int = 64) -> BertTokenizerFast:
    """A lower-casing BERT WordPiece tokenizer whose vocabulary is the specials plus every caption word.

    Args:
        captions: the caption corpus (e.g. every caption of the train and test splits).
        model_max_length: the default truncation length (UNIFY uses 64 tokens for captions).

    Returns:
        A `BertTokenizerFast` (`[CLS] words [SEP]`, pad `[PAD]` = 0, `mask_token` `[MASK]`).
    """
    captions = _check_captions(captions)
    # The normalizer and pre-tokenizer BertTokenizerFast itself uses (lower-casing, accent stripping,
    # split on whitespace and punctuation).
    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    words = _corpus_words(captions, normalizer, pre_tokenizers.BertPreTokenizer())
    words = [word for word in words if word not in BERT_SPECIAL_TOKENS]
    vocab = {token: index for index, token in enumerate(list(BERT_SPECIAL_TOKENS) + words)}
    return BertTokenizerFast(
        vocab=vocab,
        do_lower_case=True,
        model_max_length=model_max_length,
        model_input_names=list(MODEL_INPUT_NAMES),
    )


def build_clip_tokenizer(
    captions: Iterable[str], *, model_max_length: int = CLIP_MAX_LENGTH
) -> PreTrainedTokenizerFast:
    """A CLIP-style word-level tokenizer whose vocabulary is every lower-cased caption word.

    Args:
        captions: the caption corpus.
        model_max_length: the truncation length including both special tokens (CLIP: 77).

    Returns:
        A `PreTrainedTokenizerFast` with `bos_token` `<|startoftext|>`, `eos_token` = `pad_token` =
        `<|endoftext|>` (the largest id) and `unk_token` `<|unk|>` (id 0).
    """
    captions = _check_captions(captions)
    normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase(), normalizers.Strip()])
    pre_tokenizer = pre_tokenizers.Whitespace()  # words (\w+) and runs of punctuation
    specials = (CLIP_UNK_TOKEN, CLIP_BOS_TOKEN, CLIP_EOS_TOKEN)
    words = [word for word in _corpus_words(captions, normalizer, pre_tokenizer) if word not in specials]
    vocab = {token: index for index, token in enumerate([CLIP_UNK_TOKEN] + words + [CLIP_BOS_TOKEN, CLIP_EOS_TOKEN])}

    backend = Tokenizer(models.WordLevel(vocab, unk_token=CLIP_UNK_TOKEN))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    backend.post_processor = processors.TemplateProcessing(
        single=f"{CLIP_BOS_TOKEN} $A {CLIP_EOS_TOKEN}",
        pair=f"{CLIP_BOS_TOKEN} $A {CLIP_EOS_TOKEN} $B {CLIP_EOS_TOKEN}",
        special_tokens=[(CLIP_BOS_TOKEN, vocab[CLIP_BOS_TOKEN]), (CLIP_EOS_TOKEN, vocab[CLIP_EOS_TOKEN])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=CLIP_BOS_TOKEN,
        eos_token=CLIP_EOS_TOKEN,
        pad_token=CLIP_EOS_TOKEN,
        unk_token=CLIP_UNK_TOKEN,
        model_max_length=model_max_length,
        model_input_names=list(MODEL_INPUT_NAMES),
    )


def words_without_single_token(tokenizer, captions: Iterable[str]) -> list[str]:
    """The caption words that do NOT map to exactly one known token (empty for a caption-built tokenizer).

    A word is split as the tokenizer's own pre-tokenizer splits it; it passes when it encodes (without
    special tokens) to a single id that is not the unknown token's.
    """
    backend = tokenizer.backend_tokenizer
    words = set()
    for caption in _check_captions(captions):
        normalized = backend.normalizer.normalize_str(caption) if backend.normalizer else caption
        words.update(word for word, _ in backend.pre_tokenizer.pre_tokenize_str(normalized))
    failures = []
    for word in sorted(words):
        ids = tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
            failures.append(word)
    return failures
