"""UnifyModel: architecture parity (spec unify.md §13), stages, heads, pooling, precision, checkpointing.

Every model here is tiny (width 32, 3-4 layers, 32-pixel frames, vocabulary 100) and built locally; nothing
is downloaded.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import BertConfig, BertForMaskedLM, BertModel

from modeling_unify import (
    UnifyConfig,
    UnifyModel,
    make_mlm_inputs,
    pool_lexicon,
)

VOCAB_SIZE = 100
PAD_ID, CLS_ID, SEP_ID, MASK_ID = 0, 4, 5, 6
SPECIAL_IDS = [0, 1, 2, 3, 4, 5, 6]


def tiny_text_config(**overrides) -> dict:
    config = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    config.update(overrides)
    return config


def tiny_vision_config(**overrides) -> dict:
    config = dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=16
    )
    config.update(overrides)
    return config


def tiny_config(text=None, vision=None, **overrides) -> UnifyConfig:
    defaults = dict(num_shared_layers=2, projection_dim=16)
    defaults.update(overrides)
    return UnifyConfig(
        text_config=tiny_text_config(**(text or {})), vision_config=tiny_vision_config(**(vision or {})), **defaults
    )


def tiny_model(seed: int = 0, **config_overrides) -> UnifyModel:
    torch.manual_seed(seed)
    return UnifyModel(tiny_config(**config_overrides))


def caption_batch(batch: int = 4, length: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] words [SEP] [PAD]..., with a different number of words per caption."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.full((batch, length), PAD_ID)
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    for row in range(batch):
        words = length - 2 - (row % 3)
        input_ids[row, 0] = CLS_ID
        input_ids[row, 1 : 1 + words] = torch.randint(7, VOCAB_SIZE, (words,), generator=generator)
        input_ids[row, 1 + words] = SEP_ID
        attention_mask[row, : words + 2] = 1
    return input_ids, attention_mask


def _pair(features) -> tuple[torch.Tensor, torch.Tensor]:
    """(latent, lexicon) of a `UnifyFeaturesOutput`."""
    return features.pooler_output, features.lexicon_embeds


def video_batch(batch: int = 4, frames: int = 4, seed: int = 0, size: int = 32) -> torch.Tensor:
    return torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


def mlm_batch(input_ids, attention_mask, seed: int = 0):
    return make_mlm_inputs(
        input_ids,
        attention_mask,
        mask_token_id=MASK_ID,
        vocab_size=VOCAB_SIZE,
        special_token_ids=SPECIAL_IDS,
        generator=torch.Generator().manual_seed(seed),
    )


def full_inputs(batch: int = 4, frames: int = 4, seed: int = 0) -> dict:
    input_ids, attention_mask = caption_batch(batch, seed=seed)
    mlm_input_ids, mlm_labels = mlm_batch(input_ids, attention_mask, seed)
    return dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        pixel_values_videos=video_batch(batch, frames, seed),
        mlm_input_ids=mlm_input_ids,
        mlm_labels=mlm_labels,
    )


def tiny_bert_mlm(seed: int = 0, **overrides) -> BertForMaskedLM:
    torch.manual_seed(seed)
    model = BertForMaskedLM(BertConfig(**tiny_text_config(**overrides)))
    with torch.no_grad():  # move every tensor off its special init (zero biases, unit norms)
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model.eval()


def tiny_timm_vit(qkv_bias: bool = True, depth: int = 4, patch_size: int = 8, seed: int = 0):
    timm_vit = pytest.importorskip("timm.models.vision_transformer")
    torch.manual_seed(seed)
    vit = timm_vit.VisionTransformer(
        img_size=32, patch_size=patch_size, embed_dim=32, depth=depth, num_heads=4, mlp_ratio=2.0,
        qkv_bias=qkv_bias, num_classes=7,
    )  # fmt: skip
    with torch.no_grad():
        for parameter in vit.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return vit.eval()


# --------------------------------------------------------------------------------------------------------
# §13.1 1-frame ViT parity after conversion from timm, and the §3.4 temporal initialisation
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("qkv_bias", [True, False], ids=["qkv_bias", "no_qkv_bias_like_miil"])
def test_one_frame_input_reproduces_the_timm_vit_after_conversion(qkv_bias):
    vit = tiny_timm_vit(qkv_bias=qkv_bias, depth=4)
    model = UnifyModel.from_text_and_vision_pretrained(tiny_bert_mlm(), vit, num_shared_layers=2, projection_dim=16)
    model.eval()
    assert model.config.vision_config.num_attention_heads == 4
    assert model.config.vision_config.num_hidden_layers == 4
    assert model.config.vision_config.patch_size == 8

    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = vit.forward_features(images)  # [2, 1 + 16, 32], after the final norm
        tower = model.vision_model(images[:, None])  # 1 frame
    torch.testing.assert_close(tower.latent_last_hidden_state, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(tower.lexicon_last_hidden_state, expected, atol=1e-5, rtol=0)

    vision = model.vision_model
    torch.testing.assert_close(vision.latent_layers[0].mlp.fc1.weight, vit.blocks[2].mlp.fc1.weight, atol=0, rtol=0)
    assert vision.latent_layers[0].mlp.fc1.weight.data_ptr() != vision.lexicon_layers[0].mlp.fc1.weight.data_ptr()
    if not qkv_bias:  # MIIL-style ViT: the bias is set to zero explicitly (§3.4)
        assert torch.count_nonzero(vision.stem[0].attn.qkv.bias) == 0
    for block in [*vision.stem, *vision.latent_layers, *vision.lexicon_layers]:
        assert torch.count_nonzero(block.timeattn.qkv.weight) == 0
        assert torch.all(block.timeattn.proj.weight == 1) and torch.count_nonzero(block.timeattn.proj.bias) == 0
        assert torch.all(block.norm3.weight == 1) and torch.count_nonzero(block.norm3.bias) == 0
    assert torch.count_nonzero(vision.embeddings.temporal_embed) == 0


def test_frames_see_only_their_own_frame_and_the_cls_at_initialisation():
    """With the zero temporal start, patch tokens of frame t in a 2-frame clip equal those of frame t alone
    except through [CLS], which pools all frames; at layer 0 input the per-frame tokens are identical."""
    vit = tiny_timm_vit(depth=4)
    model = UnifyModel.from_text_and_vision_pretrained(tiny_bert_mlm(), vit, num_shared_layers=2).eval()
    clip = video_batch(batch=1, frames=2, seed=3)
    with torch.no_grad():
        embeddings = model.vision_model.embeddings(clip)
        single = model.vision_model.embeddings(clip[:, :1])
    assert embeddings.shape == (1, 1 + 2 * 16, 32)
    torch.testing.assert_close(embeddings[:, : 1 + 16], single, atol=0, rtol=0)


# --------------------------------------------------------------------------------------------------------
# §13.2 text split parity with BertModel / BertForMaskedLM
# --------------------------------------------------------------------------------------------------------


def test_text_stem_and_branches_reproduce_bert_and_its_mlm_head():
    bert = tiny_bert_mlm(seed=2)
    model = UnifyModel.from_text_and_vision_pretrained(
        bert, tiny_timm_vit(depth=3), num_shared_layers=2, projection_dim=16
    ).eval()
    input_ids, attention_mask = caption_batch(batch=3, length=9, seed=5)
    with torch.no_grad():
        reference = bert.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        reference_logits = bert(input_ids=input_ids, attention_mask=attention_mask).logits
        tower = model._text_tower(input_ids, attention_mask)
        logits = model.get_text_mlm_logits(input_ids, attention_mask)
    valid = attention_mask.bool()
    torch.testing.assert_close(tower.latent_last_hidden_state[valid], reference[valid], atol=1e-5, rtol=0)
    torch.testing.assert_close(tower.lexicon_last_hidden_state[valid], reference[valid], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[valid], reference_logits[valid], atol=1e-5, rtol=0)
    # the two branches are independent copies, and the decoder is tied to the NEW word embeddings
    latent_dense, lexicon_dense = model.text_latent_layers[0].output.dense, model.text_lexicon_layers[0].output.dense
    assert latent_dense.weight.data_ptr() != lexicon_dense.weight.data_ptr()
    word_embeddings = model.text_embeddings.word_embeddings.weight
    assert model.lexicon_head.predictions.decoder.weight is word_embeddings
    assert word_embeddings.data_ptr() != bert.bert.embeddings.word_embeddings.weight.data_ptr()


def test_text_split_matches_a_plain_bert_model_built_from_the_same_config():
    """The same parity against `BertModel` directly (mask from `create_bidirectional_mask` inside)."""
    torch.manual_seed(4)
    bert_model = BertModel(BertConfig(**tiny_text_config()), add_pooling_layer=False).eval()
    bert_mlm = BertForMaskedLM(BertConfig(**tiny_text_config())).eval()
    bert_mlm.bert.load_state_dict(bert_model.state_dict())
    model = UnifyModel.from_text_and_vision_pretrained(bert_mlm, tiny_timm_vit(depth=3), num_shared_layers=1).eval()
    input_ids, attention_mask = caption_batch(batch=2, length=7, seed=1)
    with torch.no_grad():
        expected = bert_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        latent = model._text_tower(input_ids, attention_mask).latent_last_hidden_state
    valid = attention_mask.bool()
    torch.testing.assert_close(latent[valid], expected[valid], atol=1e-5, rtol=0)


def test_builder_reads_files_and_state_dicts(tmp_path):
    from safetensors.torch import save_file

    bert = tiny_bert_mlm()
    bert.save_pretrained(tmp_path / "bert")
    vit = tiny_timm_vit(qkv_bias=False, depth=3)
    state = {k: v.contiguous() for k, v in vit.state_dict().items()}
    save_file(state, str(tmp_path / "vit.safetensors"))
    torch.save(state, tmp_path / "vit.pth")

    from_objects = UnifyModel.from_text_and_vision_pretrained(bert, vit, num_shared_layers=2, num_frames=2).eval()
    from_files = UnifyModel.from_text_and_vision_pretrained(
        tmp_path / "bert", str(tmp_path / "vit.safetensors"), num_shared_layers=2, num_frames=2, num_attention_heads=4
    ).eval()
    from_pth = UnifyModel.from_text_and_vision_pretrained(
        str(tmp_path / "bert"), tmp_path / "vit.pth", num_shared_layers=2, vision_config={"num_frames": 2},
        num_attention_heads=4,
    ).eval()  # fmt: skip
    assert from_files.config.vision_config.num_frames == 2
    assert from_pth.config.vision_config.num_attention_heads == 4
    reference = from_objects.state_dict()
    for other in (from_files, from_pth):
        for key in ("vision_model.stem.1.attn.qkv.weight", "vision_model.lexicon_layernorm.weight",
                    "text_lexicon_layers.0.attention.self.query.weight", "lexicon_head.predictions.bias"):  # fmt: skip
            torch.testing.assert_close(other.state_dict()[key], reference[key], atol=0, rtol=0)


def test_builder_rejects_inconsistent_inputs():
    bert = tiny_bert_mlm()
    vit = tiny_timm_vit(depth=3)
    with pytest.raises(ValueError, match="hidden_size"):
        UnifyModel.from_text_and_vision_pretrained(bert, vit, hidden_size=64)
    with pytest.raises(ValueError, match="unknown override 'not_a_field'"):
        UnifyModel.from_text_and_vision_pretrained(bert, vit, not_a_field=1)
    with pytest.raises(ValueError, match="width"):
        UnifyModel.from_text_and_vision_pretrained(tiny_bert_mlm(hidden_size=48, num_attention_heads=4), vit)
    with pytest.raises(ValueError, match="num_attention_heads"):  # 32 wide: heads cannot be inferred from a state dict
        UnifyModel.from_text_and_vision_pretrained(bert, vit.state_dict())
    with pytest.raises(TypeError, match="text_model"):
        UnifyModel.from_text_and_vision_pretrained(bert.bert, vit)
    with pytest.raises(StrictDataclassClassValidationError, match="num_shared_layers"):
        UnifyModel.from_text_and_vision_pretrained(bert, vit, num_shared_layers=4)


def test_builder_never_downloads_when_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="offline"):
        UnifyModel.from_text_and_vision_pretrained(tiny_bert_mlm(), None)


# --------------------------------------------------------------------------------------------------------
# §13.3 max-then-activate, and §5.3 pooling sets
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["log1p_relu", "relu"])
def test_max_then_activate_equals_activate_then_max_in_value_and_gradient(activation):
    logits = torch.randn(3, 11, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[1, 6:] = False
    mask[2, 9:] = False
    weights = torch.randn(3, 40, dtype=torch.float64)

    fast_input = logits.clone().requires_grad_(True)
    fast = pool_lexicon(fast_input, mask, activation, "max")
    (fast * weights).sum().backward()

    slow_input = logits.clone().requires_grad_(True)
    activated = torch.log1p(torch.relu(slow_input)) if activation == "log1p_relu" else torch.relu(slow_input)
    slow = activated.masked_fill(~mask[..., None], float("-inf")).max(dim=1).values
    (slow * weights).sum().backward()

    torch.testing.assert_close(fast.double(), slow, atol=1e-6, rtol=0)
    torch.testing.assert_close(fast_input.grad, slow_input.grad, atol=1e-6, rtol=0)
    assert torch.all(fast_input.grad[1, 6:] == 0)  # padding never receives gradient


def test_sum_and_mean_pooling_respect_the_mask():
    logits = torch.tensor([[[1.0, -2.0], [3.0, 0.5], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])
    expected_sum = torch.log1p(torch.relu(logits[0, :2])).sum(0)
    torch.testing.assert_close(pool_lexicon(logits, mask, "log1p_relu", "sum")[0], expected_sum)
    torch.testing.assert_close(pool_lexicon(logits, mask, "log1p_relu", "mean")[0], expected_sum / 2)
    with pytest.raises(ValueError, match="pooling"):
        pool_lexicon(logits, mask, "log1p_relu", "median")


def test_lexicons_pool_patches_without_cls_and_tokens_without_padding():
    model = tiny_model(vision={"patch_size": 8}).eval()
    input_ids, attention_mask = caption_batch(batch=3, seed=2)
    videos = video_batch(batch=2, frames=3)
    with torch.no_grad():
        video_lexicon = model.get_video_features(videos).lexicon_embeds
        tower = model.vision_model(videos)
        patch_logits = model.lexicon_head(tower.lexicon_last_hidden_state[:, 1:])
        expected_video = torch.log1p(torch.relu(patch_logits.max(dim=1).values))

        text_lexicon = model.get_text_features(input_ids, attention_mask).lexicon_embeds
        changed_padding = input_ids.masked_fill(~attention_mask.bool(), 50)
        text_lexicon_other_padding = model.get_text_features(changed_padding, attention_mask).lexicon_embeds
        token_logits = model.get_text_mlm_logits(input_ids, attention_mask)
        expected_text = torch.stack(
            [torch.log1p(torch.relu(token_logits[i, attention_mask[i].bool()].max(dim=0).values)) for i in range(3)]
        )
    assert tower.lexicon_last_hidden_state.shape == (2, 1 + 3 * 16, 32)
    torch.testing.assert_close(video_lexicon, expected_video, atol=1e-6, rtol=0)
    torch.testing.assert_close(text_lexicon, expected_text, atol=1e-6, rtol=0)
    torch.testing.assert_close(text_lexicon, text_lexicon_other_padding, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------------------
# §13.7 shapes for 4 frames and 1; input validation
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [4, 1])
def test_feature_shapes_for_clips_and_images(frames):
    model = tiny_model().eval()
    input_ids, attention_mask = caption_batch(batch=3)
    with torch.no_grad():
        video_latent, video_lexicon = _pair(model.get_video_features(video_batch(batch=3, frames=frames)))
        text_latent, text_lexicon = _pair(model.get_text_features(input_ids, attention_mask, token_type_ids=None))
        output = model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids),
            pixel_values_videos=video_batch(batch=2, frames=frames),
        )  # fmt: skip
    assert video_latent.shape == (3, 16) and text_latent.shape == (3, 16)
    assert video_lexicon.shape == (3, VOCAB_SIZE) and text_lexicon.shape == (3, VOCAB_SIZE)
    assert bool((video_lexicon >= 0).all()) and bool((text_lexicon >= 0).all())
    assert video_lexicon.dtype == torch.float32 and video_latent.dtype == torch.float32
    assert output.logits_per_video.shape == (2, 3) and output.logits_per_text.shape == (3, 2)
    torch.testing.assert_close(
        output.logits_per_video, output.logits_per_video_latent + output.logits_per_video_lexicon, atol=1e-6, rtol=0
    )
    latent_cosine = torch.nn.functional.normalize(output.video_latent_embeds, dim=-1) @ torch.nn.functional.normalize(
        output.text_latent_embeds, dim=-1
    ).t()
    torch.testing.assert_close(output.logits_per_video_latent, latent_cosine, atol=1e-6, rtol=0)
    assert output.loss is None


def test_bad_inputs_raise_errors_naming_the_argument():
    model = tiny_model().eval()
    with pytest.raises(ValueError, match="pixel_values_videos"):
        model.get_video_features(video_batch(frames=5))
    with pytest.raises(ValueError, match="pixel_values_videos"):
        model.get_video_features(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="pixel_values_videos"):
        model.get_video_features(torch.randn(1, 2, 3, 48, 48))
    input_ids, attention_mask = caption_batch()
    with pytest.raises(ValueError, match="attention_mask"):
        model.get_text_features(input_ids, attention_mask[:, :3])
    with pytest.raises(ValueError, match="mlm_input_ids"):
        model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=video_batch(), return_loss=True)
    with pytest.raises(ValueError, match="stage"):
        model.set_training_stage(3)


def test_return_loss_default_computes_the_loss_only_when_the_stage_inputs_are_present():
    model = tiny_model().eval()
    inputs = full_inputs()
    with torch.no_grad():
        assert model(**inputs).loss is not None  # a training batch (HF Trainer)
        without_mlm = {k: v for k, v in inputs.items() if not k.startswith("mlm_")}
        assert model(**without_mlm).loss is None  # stage 2 needs the MLM inputs
        assert model(**inputs, return_loss=False).loss is None
        model.set_training_stage(1)
        assert model(**without_mlm).loss is not None
        assert model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).loss is None
        with pytest.raises(ValueError, match="pixel_values_videos"):
            model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], return_loss=True)


def test_hidden_states_and_tuple_outputs():
    model = tiny_model(vision={"num_hidden_layers": 4}, text={"num_hidden_layers": 4}).eval()
    inputs = full_inputs()
    with torch.no_grad():
        output = model(**inputs, return_loss=True, output_hidden_states=True)
        as_tuple = model(**inputs, return_loss=True, return_dict=False)
    video, text = output.video_model_output, output.text_model_output
    assert len(video.stem_hidden_states) == 1 + 2 and len(video.latent_hidden_states) == 2
    assert len(text.stem_hidden_states) == 1 + 2 and len(text.lexicon_hidden_states) == 2
    assert video.stem_hidden_states[0].shape == (4, 1 + 4 * 4, 32)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], output.loss)


# --------------------------------------------------------------------------------------------------------
# Training stages (§8.2, decisions 12) — §13.5 stage-1 step
# --------------------------------------------------------------------------------------------------------


def _text_side_parameters(model: UnifyModel) -> dict[str, torch.Tensor]:
    prefixes = ("text_embeddings.", "text_stem.", "text_latent_layers.", "text_lexicon_layers.", "lexicon_head.")
    return {name: p for name, p in model.named_parameters() if name.startswith(prefixes)}


def test_stage_one_step_leaves_the_text_side_bit_identical():
    model = tiny_model(text={"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1})
    model.set_training_stage(1)
    model.train()
    assert model.training_stage == 1 and model.training
    assert not model.text_stem.training and not model.lexicon_head.training  # frozen modules stay in eval()
    assert model.vision_model.training and model.text_projection.training

    text_before = {name: p.detach().clone() for name, p in _text_side_parameters(model).items()}
    video_before = {name: p.detach().clone() for name, p in model.vision_model.named_parameters()}
    projection_before = model.text_projection.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)

    output = model(**full_inputs(), return_loss=True)
    assert output.mlm_loss is None  # no MLM in stage 1
    output.loss.backward()
    assert all(p.grad is None for p in _text_side_parameters(model).values())  # nothing reaches the text side
    assert model.text_embeddings.word_embeddings.weight.grad is None
    assert model.text_projection.weight.grad is not None
    optimizer.step()

    for name, parameter in _text_side_parameters(model).items():
        assert torch.equal(parameter, text_before[name]), name
    changed = [name for name, p in model.vision_model.named_parameters() if not torch.equal(p, video_before[name])]
    assert len(changed) > len(video_before) // 2
    assert any(name.startswith("lexicon_layers.") for name in changed)  # video lexicon trains through the frozen head
    assert not torch.equal(model.text_projection.weight, projection_before)

    model.eval()
    model.train()
    assert model.training_stage == 1 and not model.text_embeddings.training  # stage kept across eval()/train()


def test_stage_one_alternative_b_trains_the_text_latent_branch():
    model = tiny_model(stage1_train_text_latent_branch=True)
    model.set_training_stage(1)
    model(**full_inputs(), return_loss=True).loss.backward()
    assert model.text_latent_layers[0].output.dense.weight.grad is not None
    assert model.text_stem[0].output.dense.weight.grad is None


def test_stage_zero_is_text_only_mlm_with_the_video_side_frozen():
    model = tiny_model()
    model.set_training_stage(0)
    inputs = full_inputs()
    output = model(mlm_input_ids=inputs["mlm_input_ids"], attention_mask=inputs["attention_mask"],
                   mlm_labels=inputs["mlm_labels"], return_loss=True)  # fmt: skip
    assert output.latent_contrastive_loss is None
    torch.testing.assert_close(output.loss, output.mlm_loss)
    output.loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in model.vision_model.parameters())
    assert not model.video_projection.weight.requires_grad
    assert model.text_embeddings.word_embeddings.weight.grad is not None
    assert model.text_lexicon_layers[0].output.dense.weight.grad is not None
    model.set_training_stage(2)
    assert all(p.requires_grad for p in model.parameters())


def test_total_loss_is_the_weighted_sum_of_its_terms():
    model = tiny_model(flops_weight=0.01).eval()
    with torch.no_grad():
        stage2 = model(**full_inputs(), return_loss=True, distill_weight=0.3)
        default_alpha = model(**full_inputs(), return_loss=True)
    expected = (
        stage2.latent_contrastive_loss + stage2.lexicon_contrastive_loss + 0.01 * stage2.flops_loss
        + 0.3 * stage2.distill_loss + stage2.mlm_loss
    )  # fmt: skip
    torch.testing.assert_close(stage2.loss, expected)
    inputs = full_inputs()
    with torch.no_grad():  # the public MLM term equals cross-entropy of the lexicon-path logits
        logits = model.get_text_mlm_logits(inputs["mlm_input_ids"], inputs["attention_mask"])
        direct = model.mlm_loss(inputs["mlm_input_ids"], inputs["attention_mask"], inputs["mlm_labels"])
    expected_mlm = torch.nn.functional.cross_entropy(logits.flatten(0, 1), inputs["mlm_labels"].flatten())
    torch.testing.assert_close(direct, expected_mlm)
    torch.testing.assert_close(stage2.mlm_loss, expected_mlm)
    torch.testing.assert_close(default_alpha.loss - stage2.loss, 0.7 * stage2.distill_loss)  # config α = 1.0
    assert model.distill_weight_at(0, 11) == 1.0 and model.distill_weight_at(10, 11) == 0.0
    assert math.isclose(model.distill_weight_at(5, 11), 0.5)

    no_mlm = tiny_model(flops_weight=0.01, use_mlm=False, use_self_distillation=False).eval()
    inputs = full_inputs()
    del inputs["mlm_input_ids"], inputs["mlm_labels"]
    with torch.no_grad():
        output = no_mlm(**inputs, return_loss=True)
    assert output.mlm_loss is None and output.distill_loss is None
    torch.testing.assert_close(
        output.loss, output.latent_contrastive_loss + output.lexicon_contrastive_loss + 0.01 * output.flops_loss
    )


def test_self_distillation_sends_no_gradient_to_the_latent_side():
    model = tiny_model()
    output = model(**full_inputs(), return_loss=True)
    output.distill_loss.backward()
    assert model.video_projection.weight.grad is None and model.text_projection.weight.grad is None
    assert model.vision_model.latent_layers[0].mlp.fc1.weight.grad is None
    assert model.vision_model.lexicon_layers[0].mlp.fc1.weight.grad.abs().sum() > 0
    assert model.vision_model.stem[0].mlp.fc1.weight.grad.abs().sum() > 0  # the lexicon side enriches the stem


def test_short_training_through_stages_zero_one_two_lowers_each_loss():
    model = tiny_model()
    inputs = full_inputs(batch=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)  # over ALL parameters (§8.2)
    for stage in (0, 1, 2):
        model.set_training_stage(stage)
        model.train()
        losses = []
        for _ in range(8):
            if stage == 0:
                output = model(mlm_input_ids=inputs["mlm_input_ids"], attention_mask=inputs["attention_mask"],
                               mlm_labels=inputs["mlm_labels"], return_loss=True)  # fmt: skip
            else:
                output = model(**inputs, return_loss=True, distill_weight=0.5)
            optimizer.zero_grad()
            output.loss.backward()
            optimizer.step()
            losses.append(output.loss.item())
        assert all(math.isfinite(v) for v in losses), (stage, losses)
        assert losses[-1] < 0.9 * losses[0], (stage, losses)


# --------------------------------------------------------------------------------------------------------
# Attention implementations, gradient checkpointing, mixed precision
# --------------------------------------------------------------------------------------------------------


def test_eager_and_sdpa_attention_agree():
    model = tiny_model(vision={"patch_size": 8}).eval()
    inputs = full_inputs(frames=3)
    assert model.config.vision_config._attn_implementation == "sdpa"
    assert model.config.text_config._attn_implementation == "sdpa"
    with torch.no_grad():
        sdpa = model(**inputs, return_loss=True)
        model.set_attn_implementation("eager")
        assert model.config.vision_config._attn_implementation == "eager"
        eager = model(**inputs, return_loss=True)
    for name in ("loss", "logits_per_video", "video_lexicon_embeds", "text_latent_embeds"):
        torch.testing.assert_close(sdpa[name], eager[name], atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_model()
    inputs = full_inputs()
    model.train()
    model(**inputs, return_loss=True).loss.backward()
    reference = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    model.activation_checkpointing_enable()  # transformers 5: non-reentrant torch checkpointing
    assert model.vision_model.stem[0].gradient_checkpointing and model.text_stem[0].gradient_checkpointing
    model.train()
    model(**inputs, return_loss=True).loss.backward()
    assert set(reference) == {name for name, p in model.named_parameters() if p.grad is not None}
    for name, parameter in model.named_parameters():
        if name in reference:
            torch.testing.assert_close(parameter.grad, reference[name], atol=1e-6, rtol=1e-4)

    model.zero_grad(set_to_none=True)
    model.set_training_stage(1)  # frozen text side under no_grad, checkpointed video side
    model(**inputs, return_loss=True).loss.backward()
    assert model.vision_model.stem[0].attn.qkv.weight.grad is not None


def test_bfloat16_autocast_on_cpu_trains():
    model = tiny_model()
    inputs = full_inputs()
    model.train()
    with torch.no_grad():
        reference = model(**inputs, return_loss=True).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(**inputs, return_loss=True)
    assert output.video_lexicon_embeds.dtype == torch.float32  # pooled lexicons and scores stay in float32
    assert torch.isfinite(output.loss) and bool((output.text_lexicon_embeds >= 0).all())
    assert abs(output.loss.item() - reference.item()) < 0.05 * abs(reference.item()) + 0.05
    output.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_bfloat16_weights_run():
    model = tiny_model().eval().to(torch.bfloat16)
    with torch.no_grad():
        latent, lexicon = _pair(model.get_video_features(video_batch(batch=2)))
        output = model(**full_inputs(batch=2), return_loss=True)
    assert latent.dtype == torch.float32 and lexicon.shape == (2, VOCAB_SIZE)
    assert torch.isfinite(output.loss)


def test_drop_path_is_active_only_in_training():
    model = tiny_model(vision={"drop_path_rate": 0.5}).train()
    videos = video_batch(batch=8)
    assert model.vision_model.latent_layers[0].drop_path_rate == pytest.approx(0.5)
    torch.manual_seed(0)
    first = model.get_video_features(videos).pooler_output
    second = model.get_video_features(videos).pooler_output
    assert not torch.allclose(first, second)
    model.eval()
    torch.testing.assert_close(model.get_video_features(videos).pooler_output, model.get_video_features(videos).pooler_output)


def test_deep_copies_keep_the_tie_and_the_stage():
    model = tiny_model()
    model.set_training_stage(1)
    clone = copy.deepcopy(model)
    assert clone.training_stage == 1
    assert clone.lexicon_head.predictions.decoder.weight is clone.text_embeddings.word_embeddings.weight
