"""The real CLIP BPE tokenizer built offline (`build_clip_tokenizer_from_bpe`), as the official T-MASS
code tokenizes (transformers' `CLIPTokenizer` on the OpenAI vocabulary, 77 tokens).

Two groups of tests:

* Fixture parity: for every T-MASS fixture folder (`tests/_shared.py:tmass_fixture_dirs()`) that holds
  the optional `tokenizer_cases.json` (no test case at all for a folder without it), the
  ids of every caption alone and of the batch padded to its longest caption, truncation to 77 tokens
  with the end token kept, and the special ids and vocabulary size. The fixture's ids were written by
  transformers' `CLIPTokenizer` loaded from the OpenAI vocabulary.
* Independent of `../shared` (they run in a fresh clone): the tokenizer built from the file that
  `open_clip_torch` ships has open_clip's own vocabulary and gives the ids of open_clip's
  `SimpleTokenizer` / `tokenize`; `TMassProcessor` with it returns the same `input_ids`; it survives
  `save_pretrained` / `AutoTokenizer.from_pretrained`; bad inputs fail with clear errors.

All of them need the BPE file from the `open_clip` package (the project's `test` extra), so they skip
when that package is not installed.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, CLIPTokenizer

import video_text_retrieval.data.tokenizers as tokenizers_module
from processors import TMassProcessor
from tests._shared import tmass_fixture_dirs
from video_text_retrieval.data.tokenizers import (
    CLIP_BPE_NUM_MERGES,
    CLIP_BPE_VOCAB_SIZE,
    build_clip_tokenizer_from_bpe,
    default_clip_bpe_path,
)

CLIP_BOS_ID = 49406
CLIP_EOS_ID = 49407  # also the padding and unknown token
CLIP_MAX_LENGTH = 77

# Captions that exercise the pre-tokenizer and the byte-level fallback: upper case, contractions,
# digits (one token each), punctuation runs, irregular whitespace, accents, emoji, non-Latin scripts,
# and one caption far over 77 tokens.
INDEPENDENT_CAPTIONS = [
    "A man's 3 dogs are RUNNING, jumping & playing in the snow!!",
    "  two   people\tcooking pasta in a kitchen  ",
    "a café owner pours crème brûlée — naïvely?",
    "they'll say it's 2024: we've won 1,000,000 points",
    "a video game 🎮 stream with 😀 emojis",
    "一个人在跳舞 and Ελληνικά text",
    " ".join(["the quick brown fox jumps over the lazy dog"] * 12),
]

TOKENIZER_CASE_FILES = [
    folder / "tokenizer_cases.json"
    for folder in tmass_fixture_dirs()
    if (folder / "tokenizer_cases.json").is_file()
]


@pytest.fixture(scope="module")
def clip_tokenizer() -> CLIPTokenizer:
    """The tokenizer built from the BPE file inside the installed `open_clip` package."""
    try:
        default_clip_bpe_path()
    except ImportError as error:
        pytest.skip(f"open_clip is not installed, so its CLIP BPE file is unavailable: {error}")
    return build_clip_tokenizer_from_bpe()


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    """open_clip's own `SimpleTokenizer` (the OpenAI reference implementation) on the same file."""
    pytest.importorskip("open_clip")
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def _truncated(ids: list[int], max_length: int) -> list[int]:
    """CLIP's truncation: keep the first `max_length - 1` tokens, then the end token."""
    return ids if len(ids) <= max_length else ids[: max_length - 1] + [CLIP_EOS_ID]


# ---------------------------------------------------------------------------------------------------
# Fixture parity. The tests exist only when some fixture folder holds tokenizer_cases.json: an empty
# parametrisation would show up as a skipped case, which an optional fixture file must not cause.
# ---------------------------------------------------------------------------------------------------

if TOKENIZER_CASE_FILES:

    def _load_cases(case_file: Path) -> dict:
        with case_file.open(encoding="utf-8") as handle:
            return json.load(handle)

    FIXTURE_PARAMS = [pytest.param(path, id=path.parent.name) for path in TOKENIZER_CASE_FILES]
    CASE_PARAMS = [
        pytest.param(path, index, id=f"{path.parent.name}-case{index}")
        for path in TOKENIZER_CASE_FILES
        for index in range(len(_load_cases(path)["cases"]))
    ]

    @pytest.mark.parametrize("case_file", FIXTURE_PARAMS)
    def test_fixture_special_ids_and_vocab_size(clip_tokenizer, case_file):
        cases = _load_cases(case_file)
        assert clip_tokenizer.bos_token_id == cases["bos_token_id"] == CLIP_BOS_ID
        assert clip_tokenizer.eos_token_id == cases["eos_token_id"] == CLIP_EOS_ID
        assert clip_tokenizer.pad_token_id == cases["pad_token_id"] == CLIP_EOS_ID
        assert clip_tokenizer.vocab_size == len(clip_tokenizer) == cases["vocab_size"] == CLIP_BPE_VOCAB_SIZE
        assert "model_max_length 77" in cases["tokenizer"] and clip_tokenizer.model_max_length == CLIP_MAX_LENGTH

    @pytest.mark.parametrize(("case_file", "case_index"), CASE_PARAMS)
    def test_fixture_single_caption_ids(clip_tokenizer, case_file, case_index):
        case = _load_cases(case_file)["cases"][case_index]
        # The fixture's own call: padding to the longest (a no-op for one caption) and truncation.
        encoded = clip_tokenizer(case["caption"], padding=True, truncation=True)
        assert encoded["input_ids"] == case["input_ids"]
        assert len(encoded["input_ids"]) == case["length"] == min(case["untruncated_length"], CLIP_MAX_LENGTH)
        assert encoded["attention_mask"] == [1] * case["length"]
        assert encoded["input_ids"][0] == CLIP_BOS_ID and encoded["input_ids"][-1] == CLIP_EOS_ID

    @pytest.mark.parametrize(("case_file", "case_index"), CASE_PARAMS)
    def test_fixture_truncation_keeps_the_end_token(clip_tokenizer, case_file, case_index):
        case = _load_cases(case_file)["cases"][case_index]
        untruncated = clip_tokenizer(case["caption"], truncation=False, verbose=False)["input_ids"]
        assert len(untruncated) == case["untruncated_length"]
        assert untruncated[-1] == CLIP_EOS_ID
        # Over 77 tokens, the first 76 survive and the end token replaces the 77th.
        assert case["input_ids"] == _truncated(untruncated, CLIP_MAX_LENGTH)

    @pytest.mark.parametrize("case_file", FIXTURE_PARAMS)
    def test_fixture_batch_padded_ids(clip_tokenizer, case_file):
        cases = _load_cases(case_file)
        captions = [case["caption"] for case in cases["cases"]]
        expected = cases["batch"]
        encoded = clip_tokenizer(captions, padding=True, truncation=True)
        assert encoded["input_ids"] == expected["input_ids"]
        assert encoded["attention_mask"] == expected["attention_mask"]
        # Padding is the end token, to the longest caption (capped at 77 by truncation).
        longest = max(case["length"] for case in cases["cases"])
        for row, mask, case in zip(expected["input_ids"], expected["attention_mask"], cases["cases"]):
            assert len(row) == longest and sum(mask) == case["length"]
            assert row[case["length"] :] == [cases["pad_token_id"]] * (longest - case["length"])

        processor = TMassProcessor(video_processor=None, tokenizer=clip_tokenizer)
        processed = processor(text=captions, return_tensors="pt")
        assert set(processed.keys()) == {"input_ids", "attention_mask"}
        assert torch.equal(processed["input_ids"], torch.tensor(expected["input_ids"]))
        assert torch.equal(processed["attention_mask"], torch.tensor(expected["attention_mask"]))


# ---------------------------------------------------------------------------------------------------
# Independent of ../shared.
# ---------------------------------------------------------------------------------------------------


def test_vocabulary_equals_open_clip(clip_tokenizer, open_clip_tokenizer):
    """Same 49,408 token strings at the same ids (open_clip spells the two specials differently)."""
    open_clip_names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    expected = {open_clip_names.get(token, token): index for token, index in open_clip_tokenizer.encoder.items()}
    assert clip_tokenizer.get_vocab() == expected
    assert len(open_clip_tokenizer.bpe_ranks) == CLIP_BPE_NUM_MERGES == 48894
    # Layout: byte characters, byte characters with `</w>`, merges, then the two specials.
    vocab = clip_tokenizer.get_vocab()
    assert vocab["!"] == 0 and vocab["!</w>"] == 256 and vocab["<|startoftext|>"] == CLIP_BOS_ID
    assert vocab["<|endoftext|>"] == CLIP_EOS_ID == CLIP_BPE_VOCAB_SIZE - 1


def test_ids_equal_open_clip_simple_tokenizer(clip_tokenizer, open_clip_tokenizer):
    for caption in INDEPENDENT_CAPTIONS:
        expected = [open_clip_tokenizer.sot_token_id] + open_clip_tokenizer.encode(caption)
        expected.append(open_clip_tokenizer.eot_token_id)
        assert clip_tokenizer(caption, truncation=False, verbose=False)["input_ids"] == expected, caption
    assert max(len(clip_tokenizer(c, verbose=False)["input_ids"]) for c in INDEPENDENT_CAPTIONS) > CLIP_MAX_LENGTH


def test_processor_ids_equal_open_clip_tokenize(clip_tokenizer, open_clip_tokenizer):
    """`open_clip.tokenize` pads with 0 to 77 and truncates keeping the end token; the processor pads
    with the end token to the longest caption. On real tokens both agree."""
    open_clip = pytest.importorskip("open_clip")
    reference = open_clip.tokenize(INDEPENDENT_CAPTIONS, context_length=CLIP_MAX_LENGTH)

    processor = TMassProcessor(video_processor=None, tokenizer=clip_tokenizer)
    processed = processor(text=INDEPENDENT_CAPTIONS, return_tensors="pt")
    direct = clip_tokenizer(INDEPENDENT_CAPTIONS, padding=True, truncation=True, return_tensors="pt")
    assert set(processed.keys()) == {"input_ids", "attention_mask"}
    assert torch.equal(processed["input_ids"], direct["input_ids"])
    assert torch.equal(processed["attention_mask"], direct["attention_mask"])
    assert processed["input_ids"].shape == (len(INDEPENDENT_CAPTIONS), CLIP_MAX_LENGTH)  # one caption is too long

    mask = processed["attention_mask"].bool()
    assert torch.equal(processed["input_ids"].masked_fill(~mask, 0), reference)
    assert torch.all(processed["input_ids"][~mask] == CLIP_EOS_ID)
    assert torch.equal(mask.sum(dim=1), (reference != 0).sum(dim=1))


def test_save_pretrained_round_trip(clip_tokenizer, tmp_path):
    clip_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(reloaded, CLIPTokenizer)
    assert reloaded.get_vocab() == clip_tokenizer.get_vocab()
    assert (reloaded.bos_token_id, reloaded.eos_token_id, reloaded.pad_token_id) == (
        CLIP_BOS_ID,
        CLIP_EOS_ID,
        CLIP_EOS_ID,
    )
    assert reloaded.model_max_length == CLIP_MAX_LENGTH
    assert reloaded.model_input_names == ["input_ids", "attention_mask"]
    expected = clip_tokenizer(INDEPENDENT_CAPTIONS, padding=True, truncation=True)
    assert reloaded(INDEPENDENT_CAPTIONS, padding=True, truncation=True).data == expected.data


def test_explicit_path_and_model_max_length(clip_tokenizer, tmp_path):
    bpe_copy = tmp_path / "bpe_copy.txt.gz"
    bpe_copy.write_bytes(default_clip_bpe_path().read_bytes())
    short = build_clip_tokenizer_from_bpe(str(bpe_copy), model_max_length=8)
    assert short.get_vocab() == clip_tokenizer.get_vocab()
    full = clip_tokenizer(INDEPENDENT_CAPTIONS[0])["input_ids"]
    assert short(INDEPENDENT_CAPTIONS[0], truncation=True)["input_ids"] == _truncated(full, 8)
    assert len(_truncated(full, 8)) == 8 < len(full)


def test_errors_name_the_problem(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_clip_tokenizer_from_bpe(tmp_path / "missing.txt.gz")

    too_short = tmp_path / "too_short.txt.gz"
    with gzip.open(too_short, "wt", encoding="utf-8") as handle:
        handle.write("#version: 0.2\ni n\nt h\n")
    with pytest.raises(ValueError, match="merge lines"):
        build_clip_tokenizer_from_bpe(too_short)

    # bpe_path=None without an installed open_clip: a clear ImportError, not an AttributeError.
    real_find_spec = tokenizers_module.importlib.util.find_spec
    monkeypatch.setattr(
        tokenizers_module.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "open_clip" else real_find_spec(name, *args),
    )
    with pytest.raises(ImportError, match="open_clip_torch"):
        build_clip_tokenizer_from_bpe()


# ---------------------------------------------------------------------------------------------------
# ftfy cleaning: the official (slow, Python) CLIPTokenizer repairs text with ftfy.fix_text before BPE.
# ---------------------------------------------------------------------------------------------------

# Captions as real data sets write them (LSMDC uses curly quotes; web captions carry HTML entities
# and mojibake).
FTFY_CAPTIONS = [
    "SOMEONE\u2019s car pulls up outside the house.",
    "\u201cHello,\u201d she says, and he\u2019ll smile.",
    "He looks at her &amp; smiles.",
    "Tom &amp;amp; Jerry chase each other",
    "a caf\u00c3\u00a9 with a \ufb01ne view",
    "ＦＵＬＬ width text\u00a0and\u2003odd   spaces",
    "x < y &amp; z on a whiteboard",
]


def _slow_clip_reference_ids(open_clip_tokenizer, caption: str, html_twice: bool) -> list[int]:
    """What the official tokenizers compute, from open_clip's BPE tables: transformers' slow
    `CLIPTokenizer._tokenize` (ftfy.fix_text, whitespace collapse, lower) or, with `html_twice`,
    OpenAI's `SimpleTokenizer` (ftfy, then html.unescape twice)."""
    import html
    import re

    import ftfy
    import regex

    text = ftfy.fix_text(caption)
    if html_twice:
        text = html.unescape(html.unescape(text))
    text = re.sub(r"\s+", " ", text).strip().lower()
    ids = [open_clip_tokenizer.sot_token_id]
    for token in regex.findall(open_clip_tokenizer.pat, text):
        token = "".join(open_clip_tokenizer.byte_encoder[b] for b in token.encode("utf-8"))
        ids += [open_clip_tokenizer.encoder[piece] for piece in open_clip_tokenizer.bpe(token).split(" ")]
    return ids + [open_clip_tokenizer.eot_token_id]


def test_processor_cleans_with_ftfy_like_the_official_tokenizer(clip_tokenizer, open_clip_tokenizer):
    processor = TMassProcessor(video_processor=None, tokenizer=clip_tokenizer)
    assert processor.text_cleaning == "ftfy"
    raw_differs = 0
    for caption in FTFY_CAPTIONS:
        expected = _slow_clip_reference_ids(open_clip_tokenizer, caption, html_twice=False)
        assert processor(text=caption)["input_ids"][0] == expected, caption
        raw_differs += clip_tokenizer(caption)["input_ids"] != expected
    assert raw_differs >= 5  # without the cleaning, most of these captions tokenize differently

    openai = TMassProcessor(video_processor=None, tokenizer=clip_tokenizer, text_cleaning="ftfy_html")
    for caption in FTFY_CAPTIONS:
        expected = _slow_clip_reference_ids(open_clip_tokenizer, caption, html_twice=True)
        assert openai(text=caption)["input_ids"][0] == expected, caption
        # open_clip's own tokenizer is the OpenAI one.
        assert expected[1:-1] == open_clip_tokenizer.encode(caption), caption
    # The two references differ where ftfy keeps an entity (the text holds a literal '<').
    assert processor(text=FTFY_CAPTIONS[-1])["input_ids"] != openai(text=FTFY_CAPTIONS[-1])["input_ids"]

    none = TMassProcessor(video_processor=None, tokenizer=clip_tokenizer, text_cleaning=None)
    assert none(text=FTFY_CAPTIONS[0])["input_ids"][0] == clip_tokenizer(FTFY_CAPTIONS[0])["input_ids"]
    with pytest.raises(ValueError, match="text_cleaning"):
        TMassProcessor(video_processor=None, tokenizer=clip_tokenizer, text_cleaning="nfkc")


def test_text_cleaning_survives_save_and_load(clip_tokenizer, tmp_path):
    TMassProcessor(video_processor=None, tokenizer=clip_tokenizer, text_cleaning="ftfy_html").save_pretrained(tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["text_cleaning"] == "ftfy_html"
    reloaded = TMassProcessor.from_pretrained(tmp_path)
    assert reloaded.text_cleaning == "ftfy_html"
    assert reloaded(text=FTFY_CAPTIONS[-1])["input_ids"] == TMassProcessor(
        video_processor=None, tokenizer=clip_tokenizer, text_cleaning="ftfy_html")(text=FTFY_CAPTIONS[-1])["input_ids"]
