"""UnifyModel on disk: safetensors round trip with the tied lexicon head, Auto classes, Hub remote code in a
process where our packages cannot be imported, and refusing folders of other model types."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel

from modeling_unify import UnifyConfig, UnifyModel, make_mlm_inputs

TINY = dict(
    text_config=dict(
        vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32,
    ),
    vision_config=dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, image_size=32,
        patch_size=16, num_frames=4,
    ),
    num_shared_layers=2,
    projection_dim=16,
)  # fmt: skip


def _model(seed: int = 0) -> UnifyModel:
    torch.manual_seed(seed)
    model = UnifyModel(UnifyConfig(**TINY))
    with torch.no_grad():  # make every tensor distinctive, so a tensor that is not loaded is noticed
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    return model.eval()


def _inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(7, 100, (3, 6), generator=generator)
    input_ids[:, 0] = 4
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 4:] = 0
    mlm_input_ids, mlm_labels = make_mlm_inputs(
        input_ids, attention_mask, mask_token_id=6, vocab_size=100, special_token_ids=[0, 4, 5, 6],
        mlm_probability=0.3, generator=generator,
    )  # fmt: skip
    return dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        pixel_values_videos=torch.randn(3, 4, 3, 32, 32, generator=generator),
        mlm_input_ids=mlm_input_ids,
        mlm_labels=mlm_labels,
    )


OUTPUT_FIELDS = ("loss", "logits_per_video", "video_lexicon_embeds", "text_lexicon_embeds", "text_latent_embeds")


def test_safetensors_round_trip_keeps_the_tie_and_the_outputs(tmp_path):
    model = _model()
    inputs = _inputs()
    with torch.no_grad():
        expected = model(**inputs, return_loss=True)
    model.save_pretrained(tmp_path)

    assert (tmp_path / "model.safetensors").is_file()
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as stored:
        keys = set(stored.keys())
    assert "text_model.embeddings.word_embeddings.weight" in keys
    assert "lexicon_head.predictions.decoder.weight" not in keys  # the tied copy is not stored

    loaded, info = UnifyModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    assert loaded.lexicon_head.predictions.decoder.weight is loaded.text_model.embeddings.word_embeddings.weight
    assert loaded.lexicon_head.predictions.decoder.bias is loaded.lexicon_head.predictions.bias
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    with torch.no_grad():
        actual = loaded(**inputs, return_loss=True)
    for name in OUTPUT_FIELDS:
        torch.testing.assert_close(actual[name], expected[name], atol=0, rtol=0)

    # the tie is live after loading: training the word embeddings moves the lexicon decoder
    with torch.no_grad():
        loaded.text_model.embeddings.word_embeddings.weight[10].add_(1.0)
    decoder, embeddings = loaded.lexicon_head.predictions.decoder, loaded.text_model.embeddings.word_embeddings
    assert torch.equal(decoder.weight[10], embeddings.weight[10])


def test_loading_in_bfloat16(tmp_path):
    _model().save_pretrained(tmp_path)
    loaded = UnifyModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert loaded.vision_model.encoder.stem[0].attn.qkv.weight.dtype == torch.bfloat16
    with torch.no_grad():
        output = loaded(**_inputs(), return_loss=True)
    assert torch.isfinite(output.loss) and output.video_lexicon_embeds.dtype == torch.float32


def test_auto_classes_load_the_saved_folder(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, UnifyConfig) and config.num_shared_layers == 2
    assert config.text_config.vocab_size == 100 and config.vision_config.patch_size == 16
    assert config.tie_word_embeddings
    auto_model = AutoModel.from_pretrained(tmp_path)
    assert type(auto_model) is UnifyModel
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "unify" and saved["architectures"] == ["UnifyModel"]
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_unify.UnifyConfig",
        "AutoModel": "modeling_unify.UnifyModel",
    }
    for name in ("configuration_unify.py", "modeling_unify.py", "convert_unify_from_bert_timm.py"):
        assert (tmp_path / name).is_file(), name  # the flat files travel with the weights


REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys

    BLOCKED = {"modeling_tmass", "modeling_unify", "processors", "video_text_retrieval"}


    class RefuseOurPackages(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{fullname} is blocked in this test", name=fullname)
            return None


    sys.meta_path.insert(0, RefuseOurPackages())
    try:
        import modeling_unify  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("our package is importable: the test proves nothing")

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModel

    folder, inputs_file, outputs_file = sys.argv[1:4]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    assert type(config).__name__ == "UnifyConfig" and type(model).__name__ == "UnifyModel"
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    assert model.lexicon_head.predictions.decoder.weight is model.text_model.embeddings.word_embeddings.weight
    inputs = load_file(inputs_file)
    with torch.no_grad():
        output = model(**inputs, return_loss=True)
    save_file({name: output[name].contiguous() for name in sys.argv[4:]}, outputs_file)
    """
)


def test_remote_code_loads_without_our_packages(tmp_path):
    model = _model(seed=3)
    inputs = _inputs()
    with torch.no_grad():
        expected = model(**inputs, return_loss=True)
    folder = tmp_path / "unify-tiny"
    model.save_pretrained(folder)
    save_file(inputs, str(tmp_path / "inputs.safetensors"))
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)

    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environment.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(folder), str(tmp_path / "inputs.safetensors"),
         str(tmp_path / "outputs.safetensors"), *OUTPUT_FIELDS],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    actual = load_file(str(tmp_path / "outputs.safetensors"))
    for name in OUTPUT_FIELDS:
        torch.testing.assert_close(actual[name], expected[name], atol=0, rtol=0)


def test_a_folder_of_another_model_type_is_refused_naming_both_types(tmp_path):
    from transformers import BertConfig, BertModel, CLIPConfig, CLIPModel

    tiny = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    CLIPModel(CLIPConfig(text_config=tiny, vision_config={**tiny, "image_size": 32, "patch_size": 16}, projection_dim=16)).save_pretrained(
        tmp_path / "clip"
    )
    BertModel(BertConfig(vocab_size=100, **tiny)).save_pretrained(tmp_path / "bert")
    for folder, model_type in ((tmp_path / "clip", "clip"), (tmp_path / "bert", "bert")):
        with pytest.raises(ValueError, match=f"holds a '{model_type}' model .*not a 'unify' model"):
            UnifyModel.from_pretrained(folder)
        with pytest.raises(ValueError, match=f"'{model_type}'.*'unify'"):
            UnifyConfig.from_pretrained(folder)
    _model().save_pretrained(tmp_path / "unify")  # our own folder still loads, through both entry points
    assert isinstance(UnifyConfig.from_pretrained(tmp_path / "unify"), UnifyConfig)
    assert type(UnifyModel.from_pretrained(tmp_path / "unify")) is UnifyModel
