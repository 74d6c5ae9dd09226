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

* `build_clip_tokenizer_from_bpe` (T-MASS with real CLIP weights): the real OpenAI CLIP byte-level
  BPE tokenizer (49,408 ids) built offline from `bpe_simple_vocab_16e6.txt.gz`, by default the copy the
  `open_clip_torch` package ships; ids equal `CLIPTokenizer.from_pretrained("openai/clip-vit-base-patch32")`.

Text cleaning: the reference CLIP tokenizers repair each caption with `ftfy.fix_text` before BPE (curly
quotes become straight ones, HTML entities are unescaped, mojibake is repaired). A tokenizers-backed
tokenizer cannot run ftfy, so `TMassProcessor` does it (`text_cleaning="ftfy"`, see
`processors.processing_base.clean_caption_text`); call `clean_caption_text` yourself when you use the
tokenizer without the processor. The caption-built CLIP vocabulary holds the words of both the raw and
the cleaned captions, so either path finds every word.

All three return `transformers` tokenizers that `save_pretrained` writes (`tokenizer.json`,
`tokenizer_config.json`) and `AutoTokenizer.from_pretrained` reloads. Their `model_input_names` are
`["input_ids", "attention_mask"]` (the processors return no `token_type_ids`).
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Iterable
from os import PathLike
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertTokenizerFast, CLIPTokenizer, PreTrainedTokenizerFast

__all__ = [
    "BERT_SPECIAL_TOKENS",
    "CLIP_BOS_TOKEN",
    "CLIP_EOS_TOKEN",
    "CLIP_MAX_LENGTH",
    "CLIP_UNK_TOKEN",
    "build_bert_tokenizer",
    "build_clip_tokenizer",
    "build_clip_tokenizer_from_bpe",
    "clean_caption_text",
    "default_clip_bpe_path",
    "read_clip_bpe_merges",
    "words_without_single_token",
]


BERT_SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CLIP_BOS_TOKEN = "<|startoftext|>"
CLIP_EOS_TOKEN = "<|endoftext|>"
CLIP_UNK_TOKEN = "<|unk|>"
CLIP_MAX_LENGTH = 77
MODEL_INPUT_NAMES = ["input_ids", "attention_mask"]


def clean_caption_text(text: str, text_cleaning: str | None = "ftfy") -> str:
    """The processors' caption cleaning (`processors.processing_base.clean_caption_text`), for using a
    tokenizer without its processor; imported on use, since the processors module loads the video stack."""
    from processors.processing_base import clean_caption_text as clean

    return clean(text, text_cleaning)


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
    # TMassProcessor cleans captions with ftfy before tokenizing: the cleaned words belong in the vocabulary too.
    corpus = captions + [cleaned for cleaned in (clean_caption_text(c, "ftfy") for c in captions) if cleaned]
    words = [word for word in _corpus_words(corpus, normalizer, pre_tokenizer) if word not in specials]
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


# The OpenAI CLIP BPE vocabulary: 256 byte characters, the same 256 with `</w>`, one token per merge,
# then `<|startoftext|>` (49406) and `<|endoftext|>` (49407). The file holds more merge lines than
# OpenAI uses; its tokenizer keeps the first 49152 - 256 - 2 = 48894 after the header line.
CLIP_BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
CLIP_BPE_VOCAB_SIZE = 49408
CLIP_BPE_NUM_MERGES = CLIP_BPE_VOCAB_SIZE - 2 * 256 - 2


def _byte_level_characters() -> list[str]:
    """The 256 characters that stand for the bytes 0..255 in byte-level BPE, in vocabulary order.

    Printable bytes (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) stand for themselves and come first; every other
    byte (whitespace, control characters, ...) maps to the next unused code point from 256 on, in
    byte order. The list order is the order of the first 256 CLIP ids.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    printable_set = set(printable)
    others = [byte for byte in range(256) if byte not in printable_set]
    return [chr(byte) for byte in printable] + [chr(256 + offset) for offset in range(len(others))]


def default_clip_bpe_path() -> Path:
    """The OpenAI BPE file inside the installed `open_clip` package (located without importing it,
    which would load torch).

    Raises:
        ImportError: `open_clip` (PyPI `open_clip_torch`) is not installed.
        FileNotFoundError: the package is installed but holds no BPE file.
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"build_clip_tokenizer_from_bpe(bpe_path=None) reads {CLIP_BPE_FILE_NAME} from the `open_clip` "
            "package, which is not installed: install `open_clip_torch` (the project's `test` extra) or "
            "pass bpe_path= to a copy of the file"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / CLIP_BPE_FILE_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"the installed `open_clip` package ({', '.join(spec.submodule_search_locations)}) holds no "
        f"{CLIP_BPE_FILE_NAME}: pass bpe_path= to a copy of the file"
    )


def read_clip_bpe_merges(bpe_path: str | PathLike | None = None) -> list[tuple[str, str]]:
    """The 48,894 merges OpenAI's CLIP tokenizer uses, in rank order, from the gzipped BPE file.

    Args:
        bpe_path: the `.txt.gz` file; `None` means the copy inside the installed `open_clip` package.

    Raises:
        ImportError / FileNotFoundError: see `default_clip_bpe_path` (or `bpe_path` does not exist).
        ValueError: the file holds fewer merges than CLIP uses, or a malformed merge line.
    """
    path = default_clip_bpe_path() if bpe_path is None else Path(bpe_path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP BPE file {path} does not exist")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    # Line 0 is a version header, not a merge.
    merge_lines = lines[1 : 1 + CLIP_BPE_NUM_MERGES]
    if len(merge_lines) < CLIP_BPE_NUM_MERGES:
        raise ValueError(
            f"{path} holds {len(merge_lines)} merge lines, CLIP uses {CLIP_BPE_NUM_MERGES}: not the OpenAI BPE file"
        )
    merges = []
    for line_number, line in enumerate(merge_lines, start=2):
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path} line {line_number} is not a merge of two symbols: {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def build_clip_tokenizer_from_bpe(
    bpe_path: str | PathLike | None = None, *, model_max_length: int = CLIP_MAX_LENGTH
) -> CLIPTokenizer:
    """The real OpenAI CLIP tokenizer (byte-level BPE, 49,408 ids), built offline from the BPE file.

    Same ids as `CLIPTokenizer.from_pretrained("openai/clip-vit-base-patch32")`: lower-cased,
    `<|startoftext|>` = 49406 prepended, `<|endoftext|>` = 49407 appended and used for padding,
    truncation to `model_max_length` tokens keeping the end token. The official (slow) tokenizer's
    `ftfy.fix_text` cleaning is done by `TMassProcessor` (or `clean_caption_text(text, "ftfy")`), not
    by this tokenizer: with the processor, ids equal the official ones on any caption.

    Args:
        bpe_path: the OpenAI `bpe_simple_vocab_16e6.txt.gz`; `None` means the copy the installed
            `open_clip_torch` package ships.
        model_max_length: the truncation length including both special tokens (CLIP: 77).

    Returns:
        A transformers `CLIPTokenizer` (tokenizers-backed in transformers 5) that `save_pretrained`
        writes and `AutoTokenizer.from_pretrained` reloads.

    Raises:
        ImportError: `bpe_path` is None and `open_clip` is not installed.
        FileNotFoundError: the BPE file does not exist.
        ValueError: the file is not the OpenAI BPE file (too few merges, malformed lines).
    """
    merges = read_clip_bpe_merges(bpe_path)
    byte_characters = _byte_level_characters()
    tokens = byte_characters + [character + "</w>" for character in byte_characters]
    tokens += [first + second for first, second in merges]
    tokens += [CLIP_BOS_TOKEN, CLIP_EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != CLIP_BPE_VOCAB_SIZE:  # a duplicate merge result would silently shift every later id
        raise ValueError(f"the BPE file gives {len(vocab)} distinct tokens, CLIP has {CLIP_BPE_VOCAB_SIZE}")
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=CLIP_EOS_TOKEN,
        bos_token=CLIP_BOS_TOKEN,
        eos_token=CLIP_EOS_TOKEN,
        pad_token=CLIP_EOS_TOKEN,
        model_max_length=model_max_length,
        model_input_names=list(MODEL_INPUT_NAMES),
    )
