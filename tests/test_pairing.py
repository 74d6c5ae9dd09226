"""A processor is paired with a model only when its tokenizer fits the text tower: same vocabulary size,
`model_max_length` within the position table (clamped or refused); presets and saved folders truncate."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoProcessor, BertConfig, BertTokenizerFast, CLIPTextConfig

from video_text_retrieval.data.synthetic import all_possible_captions
from video_text_retrieval.data.tokenizers import build_bert_tokenizer
from video_text_retrieval.hub import write_model_folder
from video_text_retrieval.pairing import ProcessorModelMismatchError, check_processor_matches_model, text_config_of
from video_text_retrieval.presets import build_from_scratch

CAPTIONS = all_possible_captions()[:60]
LONG_CAPTION = " ".join(["two red squares move left on a white background"] * 8)  # ~72 words


@pytest.fixture(scope="module")
def tiny_models():
    return {kind: build_from_scratch(kind, "tiny", CAPTIONS) for kind in ("tmass", "unify")}


def test_text_config_is_found_for_both_models_and_plain_configs(tiny_models):
    tmass, _ = tiny_models["tmass"]
    unify, _ = tiny_models["unify"]
    assert text_config_of(tmass) is tmass.config.clip_config.text_config
    assert text_config_of(unify.config) is unify.config.text_config
    plain = BertConfig(vocab_size=10)
    assert text_config_of(plain) is plain
    with pytest.raises(TypeError, match="no text config"):
        text_config_of(object())


def test_a_tokenizer_of_another_vocabulary_size_is_refused(tmp_path):
    # A vocab_file that is not there: transformers silently builds a tokenizer of the 5 special tokens.
    broken = BertTokenizerFast(vocab_file=str(tmp_path / "missing_vocab.txt"))
    assert len(broken) == 5
    with pytest.raises(ProcessorModelMismatchError, match=r"has 5 tokens but the model's text vocab_size is 30522.*vocabulary file"):
        check_processor_matches_model(broken, BertConfig())
    built = build_bert_tokenizer(CAPTIONS)
    with pytest.raises(ProcessorModelMismatchError, match=rf"{len(built)} tokens .* vocab_size is {len(built) + 1}"):
        check_processor_matches_model(built, BertConfig(vocab_size=len(built) + 1))


def test_model_max_length_beyond_the_position_table_is_clamped_or_refused(tmp_path):
    tokenizer = build_bert_tokenizer(CAPTIONS, model_max_length=64)
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=32)
    with pytest.raises(ProcessorModelMismatchError, match=r"allows 64 tokens .* 32 positions"):
        check_processor_matches_model(tokenizer, config, on_too_long="error")
    assert tokenizer.model_max_length == 64
    assert check_processor_matches_model(tokenizer, config) is tokenizer and tokenizer.model_max_length == 32
    assert len(tokenizer(LONG_CAPTION, truncation=True)["input_ids"]) == 32
    tokenizer.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["model_max_length"] == 32
    with pytest.raises(ValueError, match="on_too_long"):
        check_processor_matches_model(tokenizer, config, on_too_long="warn")
    clip_text = CLIPTextConfig(vocab_size=len(tokenizer), max_position_embeddings=77)
    assert check_processor_matches_model(tokenizer, clip_text).model_max_length == 32  # shorter is fine


@pytest.mark.parametrize("kind", ["tmass", "unify"])
def test_presets_truncate_long_captions_to_the_position_table(tiny_models, kind):
    model, processor = tiny_models[kind]
    positions = text_config_of(model).max_position_embeddings
    assert processor.tokenizer.model_max_length == positions == 32
    inputs = processor(text=[LONG_CAPTION, "one blue circle moves up on a black background"], return_tensors="pt")
    assert inputs["input_ids"].shape == (2, positions)
    with torch.no_grad():
        features = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    assert features is not None


@pytest.mark.parametrize("kind", ["tmass", "unify"])
def test_written_model_folder_reloads_and_truncates(tiny_models, kind, tmp_path):
    model, processor = tiny_models[kind]
    folder = write_model_folder(model, processor, tmp_path / kind, metrics={"t2v": {"R@1": 1.0}})
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 32
    assert json.loads((folder / "metrics.json").read_text()) == {"t2v": {"R@1": 1.0}}
    reloaded = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert reloaded(text=[LONG_CAPTION], return_tensors="pt")["input_ids"].shape == (1, 32)

    # A processor whose tokenizer is not the model's is refused before anything is written.
    other_model, _ = build_from_scratch(kind, "tiny", CAPTIONS[:5])
    with pytest.raises(ProcessorModelMismatchError, match="vocab_size"):
        write_model_folder(other_model, processor, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
