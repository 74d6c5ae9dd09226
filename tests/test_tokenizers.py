"""Caption-built tokenizers: one token per caption word, BERT and CLIP conventions, save/load round trip."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from video_text_retrieval.data.synthetic import CONCEPT_WORDS, all_possible_captions
from video_text_retrieval.data.tokenizers import (
    BERT_SPECIAL_TOKENS,
    CLIP_BOS_TOKEN,
    CLIP_EOS_TOKEN,
    build_bert_tokenizer,
    build_clip_tokenizer,
    words_without_single_token,
)


@pytest.fixture(scope="module")
def captions():
    """Every caption the synthetic generator can write (all tuples, all templates)."""
    captions = all_possible_captions()
    assert len(captions) == 3456 * 3 and len(set(captions)) == len(captions)
    return captions


@pytest.fixture(scope="module")
def bert(captions):
    return build_bert_tokenizer(captions)


@pytest.fixture(scope="module")
def clip(captions):
    return build_clip_tokenizer(captions)


def test_bert_every_caption_word_is_one_whole_token(bert, captions):
    assert words_without_single_token(bert, captions) == []
    for caption in captions[:200]:
        assert bert.tokenize(caption) == caption.split()
    # The lexicon words of every concept are vocabulary entries (one UNIFY lexicon dimension each).
    vocab = bert.get_vocab()
    for words in CONCEPT_WORDS.values():
        assert all(word in vocab for word in words)
    assert not any(token.startswith("##") for token in vocab)


def test_bert_special_tokens_framing_and_lower_casing(bert):
    assert [bert.convert_tokens_to_ids(t) for t in BERT_SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (bert.pad_token_id, bert.unk_token_id, bert.cls_token_id, bert.sep_token_id, bert.mask_token_id) == (0, 1, 2, 3, 4)
    encoded = bert(["Two RED Squares move left", "one blue circle"], padding=True)
    assert set(encoded) == {"input_ids", "attention_mask"}  # no token_type_ids
    first, second = encoded["input_ids"]
    assert first == [2] + bert.convert_tokens_to_ids(["two", "red", "squares", "move", "left"]) + [3]
    assert second == [2] + bert.convert_tokens_to_ids(["one", "blue", "circle"]) + [3, 0, 0]
    assert encoded["attention_mask"][1] == [1, 1, 1, 1, 1, 0, 0]
    # A word outside the corpus is one [UNK], never a run of sub-word pieces.
    assert bert.tokenize("one zebra") == ["one", "[UNK]"]
    assert bert.model_max_length == 64


def test_clip_every_caption_word_is_one_whole_token(clip, captions):
    assert words_without_single_token(clip, captions) == []
    for caption in captions[:200]:
        ids = clip(caption)["input_ids"]
        assert clip.convert_ids_to_tokens(ids) == [CLIP_BOS_TOKEN] + caption.split() + [CLIP_EOS_TOKEN]


def test_clip_conventions_bos_eos_pad_and_eos_is_the_largest_id(clip):
    vocab = clip.get_vocab()
    assert clip.eos_token_id == vocab[CLIP_EOS_TOKEN] == max(vocab.values()) == len(vocab) - 1
    assert clip.bos_token_id == vocab[CLIP_BOS_TOKEN] == len(vocab) - 2
    assert clip.pad_token_id == clip.eos_token_id
    batch = clip(["One RED circle moves up", "two blue squares"], padding=True, return_tensors="pt")
    assert set(batch) == {"input_ids", "attention_mask"}
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == (2, 7)
    assert ids[:, 0].tolist() == [clip.bos_token_id] * 2
    assert ids[1].tolist()[-3:] == [clip.eos_token_id] * 3 and mask[1].tolist() == [1, 1, 1, 1, 1, 0, 0]
    # Both pooling rules of the CLIP text model find the same (real) end token.
    last_real = mask.sum(dim=1) - 1
    first_eos = (ids == clip.eos_token_id).int().argmax(dim=1)
    assert torch.equal(ids.argmax(dim=1), last_real) and torch.equal(first_eos, last_real)
    assert clip("RED")["input_ids"] == clip("red")["input_ids"]


def test_clip_truncates_to_77_keeping_the_end_token(clip):
    long_caption = " ".join(["red"] * 100)
    ids = clip(long_caption, truncation=True)["input_ids"]
    assert len(ids) == 77 and clip.model_max_length == 77
    assert ids[0] == clip.bos_token_id and ids[-1] == clip.eos_token_id
    assert ids[1:-1] == [clip.convert_tokens_to_ids("red")] * 75


@pytest.mark.parametrize("builder", [build_bert_tokenizer, build_clip_tokenizer])
def test_save_and_reload_with_auto_tokenizer(builder, captions, tmp_path):
    tokenizer = builder(captions)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(reloaded) is type(tokenizer)
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert reloaded.all_special_tokens == tokenizer.all_special_tokens
    assert (reloaded.pad_token_id, reloaded.eos_token_id, reloaded.bos_token_id, reloaded.mask_token_id) == (
        tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.mask_token_id
    )
    assert reloaded.model_max_length == tokenizer.model_max_length
    sample = captions[::97]
    assert reloaded(sample, padding=True)["input_ids"] == tokenizer(sample, padding=True)["input_ids"]
    assert "token_type_ids" not in reloaded(sample[0])
    assert words_without_single_token(reloaded, captions) == []


@pytest.mark.parametrize("builder", [build_bert_tokenizer, build_clip_tokenizer])
def test_punctuation_and_accents_become_whole_tokens(builder):
    captions = ["A dog, running fast.", "Café scene: people talk!"]
    tokenizer = builder(captions)
    assert words_without_single_token(tokenizer, captions) == []
    tokens = tokenizer.tokenize("a dog, running fast.")
    assert tokens == ["a", "dog", ",", "running", "fast", "."]


@pytest.mark.parametrize("builder", [build_bert_tokenizer, build_clip_tokenizer])
def test_bad_caption_lists_raise(builder):
    with pytest.raises(ValueError, match="captions is empty"):
        builder([])
    with pytest.raises(TypeError, match=r"captions\[1\]"):
        builder(["a red square", 3])


def test_clip_vocabulary_covers_raw_and_ftfy_cleaned_captions():
    from processors import TMassProcessor
    from video_text_retrieval.data.tokenizers import clean_caption_text

    captions = ["SOMEONE\u2019s car pulls up", "Tom &amp; Jerry run", "a caf\u00c3\u00a9 scene"]
    tokenizer = build_clip_tokenizer(captions)
    cleaned = [clean_caption_text(c) for c in captions]
    assert cleaned == ["SOMEONE's car pulls up", "Tom & Jerry run", "a caf\u00e9 scene"]
    assert words_without_single_token(tokenizer, captions) == []
    assert words_without_single_token(tokenizer, cleaned) == []
    ids = TMassProcessor(video_processor=None, tokenizer=tokenizer)(text=captions)["input_ids"]
    assert all(tokenizer.unk_token_id not in row for row in ids)
    single = TMassProcessor(video_processor=None, tokenizer=tokenizer)(text=captions[1])["input_ids"][0]
    assert tokenizer.convert_ids_to_tokens(single)[1:-1] == ["tom", "&", "jerry", "run"]
