"""UnifyModel: architecture parity with BERT and timm's ViT, stages, heads, pooling, precision, checkpointing.

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
    UnifyOutput,
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
# 1-frame ViT parity after conversion from timm, and the zero-output temporal initialisation
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
    torch.testing.assert_close(vision.encoder.latent_layers[0].mlp.fc1.weight, vit.blocks[2].mlp.fc1.weight, atol=0, rtol=0)
    assert vision.encoder.latent_layers[0].mlp.fc1.weight.data_ptr() != vision.encoder.lexicon_layers[0].mlp.fc1.weight.data_ptr()
    if not qkv_bias:  # MIIL-style ViT: the bias is set to zero explicitly
        assert torch.count_nonzero(vision.encoder.stem[0].attn.qkv.bias) == 0
    for block in [*vision.encoder.stem, *vision.encoder.latent_layers, *vision.encoder.lexicon_layers]:
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
# Text split parity with BertModel / BertForMaskedLM
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
        tower = model.text_model(input_ids, attention_mask)
        logits = model.get_text_mlm_logits(input_ids, attention_mask)
    valid = attention_mask.bool()
    torch.testing.assert_close(tower.latent_last_hidden_state[valid], reference[valid], atol=1e-5, rtol=0)
    torch.testing.assert_close(tower.lexicon_last_hidden_state[valid], reference[valid], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[valid], reference_logits[valid], atol=1e-5, rtol=0)
    # the two branches are independent copies, and the decoder is tied to the NEW word embeddings
    latent_dense, lexicon_dense = model.text_model.encoder.latent_layers[0].output.dense, model.text_model.encoder.lexicon_layers[0].output.dense
    assert latent_dense.weight.data_ptr() != lexicon_dense.weight.data_ptr()
    word_embeddings = model.text_model.embeddings.word_embeddings.weight
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
        latent = model.text_model(input_ids, attention_mask).latent_last_hidden_state
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
        for key in ("vision_model.encoder.stem.1.attn.qkv.weight", "vision_model.lexicon_layernorm.weight",
                    "text_model.encoder.lexicon_layers.0.attention.self.query.weight", "lexicon_head.predictions.bias"):  # fmt: skip
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
# Max-then-activate, and the pooling sets
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
# Shapes for 4 frames and 1; input validation
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


def test_return_loss_is_off_by_default_and_names_the_missing_inputs():
    """Like CLIP: no loss unless asked for (the HF Trainer's collator passes `return_loss=True`)."""
    model = tiny_model().eval()
    inputs = full_inputs()
    without_mlm = {k: v for k, v in inputs.items() if not k.startswith("mlm_")}
    with torch.no_grad():
        assert model(**inputs).loss is None
        assert model(**inputs, return_loss=False).loss is None
        assert model(**inputs, return_loss=True).loss is not None
        with pytest.raises(ValueError, match="mlm_input_ids"):  # stage 2 needs the MLM inputs
            model(**without_mlm, return_loss=True)
        model.set_training_stage(1)
        assert model(**without_mlm, return_loss=True).loss is not None
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
# Training stages (paper Sec. 3.3) and the stage-1 step
# --------------------------------------------------------------------------------------------------------


def _text_side_parameters(model: UnifyModel) -> dict[str, torch.Tensor]:
    prefixes = ("text_model.", "lexicon_head.")
    return {name: p for name, p in model.named_parameters() if name.startswith(prefixes)}


def test_stage_one_step_leaves_the_text_side_bit_identical():
    model = tiny_model(text={"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1})
    model.set_training_stage(1)
    model.train()
    assert model.training_stage == 1 and model.training
    assert not model.text_model.encoder.stem.training and not model.lexicon_head.training  # frozen modules stay in eval()
    assert model.vision_model.training and model.text_projection.training

    text_before = {name: p.detach().clone() for name, p in _text_side_parameters(model).items()}
    video_before = {name: p.detach().clone() for name, p in model.vision_model.named_parameters()}
    projection_before = model.text_projection.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)

    output = model(**full_inputs(), return_loss=True)
    assert output.loss_mlm is None  # no MLM in stage 1
    output.loss.backward()
    assert all(p.grad is None for p in _text_side_parameters(model).values())  # nothing reaches the text side
    assert model.text_model.embeddings.word_embeddings.weight.grad is None
    assert model.text_projection.weight.grad is not None
    optimizer.step()

    for name, parameter in _text_side_parameters(model).items():
        assert torch.equal(parameter, text_before[name]), name
    changed = [name for name, p in model.vision_model.named_parameters() if not torch.equal(p, video_before[name])]
    assert len(changed) > len(video_before) // 2
    assert any(name.startswith("encoder.lexicon_layers.") for name in changed)  # video lexicon trains through the frozen head
    assert not torch.equal(model.text_projection.weight, projection_before)

    model.eval()
    model.train()
    assert model.training_stage == 1 and not model.text_model.embeddings.training  # stage kept across eval()/train()


def test_stage_one_alternative_b_trains_the_text_latent_branch():
    model = tiny_model(stage1_train_text_latent_branch=True)
    model.set_training_stage(1)
    model(**full_inputs(), return_loss=True).loss.backward()
    assert model.text_model.encoder.latent_layers[0].output.dense.weight.grad is not None
    assert model.text_model.encoder.stem[0].output.dense.weight.grad is None


def test_stage_zero_is_text_only_mlm_with_the_video_side_frozen():
    model = tiny_model()
    model.set_training_stage(0)
    inputs = full_inputs()
    output = model(mlm_input_ids=inputs["mlm_input_ids"], attention_mask=inputs["attention_mask"],
                   mlm_labels=inputs["mlm_labels"], return_loss=True)  # fmt: skip
    assert output.loss_latent is None
    torch.testing.assert_close(output.loss, output.loss_mlm)
    output.loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in model.vision_model.parameters())
    assert not model.video_projection.weight.requires_grad
    assert model.text_model.embeddings.word_embeddings.weight.grad is not None
    assert model.text_model.encoder.lexicon_layers[0].output.dense.weight.grad is not None
    model.set_training_stage(2)
    assert all(p.requires_grad for p in model.parameters())


def test_total_loss_is_the_weighted_sum_of_its_terms():
    model = tiny_model(flops_weight=0.01).eval()
    with torch.no_grad():
        stage2 = model(**full_inputs(), return_loss=True, distill_weight=0.3)
        default_alpha = model(**full_inputs(), return_loss=True)
    expected = (
        stage2.loss_latent + stage2.loss_lexicon + 0.01 * stage2.loss_flops
        + 0.3 * stage2.loss_distill + stage2.loss_mlm
    )  # fmt: skip
    torch.testing.assert_close(stage2.loss, expected)
    inputs = full_inputs()
    with torch.no_grad():  # the public MLM term equals cross-entropy of the lexicon-path logits
        logits = model.get_text_mlm_logits(inputs["mlm_input_ids"], inputs["attention_mask"])
        direct = model.mlm_loss(inputs["mlm_input_ids"], inputs["attention_mask"], inputs["mlm_labels"])
    expected_mlm = torch.nn.functional.cross_entropy(logits.flatten(0, 1), inputs["mlm_labels"].flatten())
    torch.testing.assert_close(direct, expected_mlm)
    torch.testing.assert_close(stage2.loss_mlm, expected_mlm)
    torch.testing.assert_close(default_alpha.loss - stage2.loss, 0.7 * stage2.loss_distill)  # config α = 1.0

    no_mlm = tiny_model(flops_weight=0.01, use_mlm=False, use_self_distillation=False).eval()
    inputs = full_inputs()
    del inputs["mlm_input_ids"], inputs["mlm_labels"]
    with torch.no_grad():
        output = no_mlm(**inputs, return_loss=True)
    assert output.loss_mlm is None and output.loss_distill is None
    torch.testing.assert_close(
        output.loss, output.loss_latent + output.loss_lexicon + 0.01 * output.loss_flops
    )


def test_self_distillation_sends_no_gradient_to_the_latent_side():
    model = tiny_model()
    output = model(**full_inputs(), return_loss=True)
    output.loss_distill.backward()
    assert model.video_projection.weight.grad is None and model.text_projection.weight.grad is None
    assert model.vision_model.encoder.latent_layers[0].mlp.fc1.weight.grad is None
    assert model.vision_model.encoder.lexicon_layers[0].mlp.fc1.weight.grad.abs().sum() > 0
    assert model.vision_model.encoder.stem[0].mlp.fc1.weight.grad.abs().sum() > 0  # the lexicon side enriches the stem


def test_short_training_through_stages_zero_one_two_lowers_each_loss():
    model = tiny_model()
    inputs = full_inputs(batch=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)  # over ALL parameters, as training does
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
    assert model.vision_model.encoder.stem[0].gradient_checkpointing and model.text_model.encoder.stem[0].gradient_checkpointing
    model.train()
    model(**inputs, return_loss=True).loss.backward()
    assert set(reference) == {name for name, p in model.named_parameters() if p.grad is not None}
    for name, parameter in model.named_parameters():
        if name in reference:
            torch.testing.assert_close(parameter.grad, reference[name], atol=1e-6, rtol=1e-4)

    model.zero_grad(set_to_none=True)
    model.set_training_stage(1)  # frozen text side under no_grad, checkpointed video side
    model(**inputs, return_loss=True).loss.backward()
    assert model.vision_model.encoder.stem[0].attn.qkv.weight.grad is not None


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
    assert model.vision_model.encoder.latent_layers[0].drop_path_rate == pytest.approx(0.5)
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
    assert clone.lexicon_head.predictions.decoder.weight is clone.text_model.embeddings.word_embeddings.weight


# --------------------------------------------------------------------------------------------------------
# The API both models share: orientation, loss function and output type, main input, construction
# --------------------------------------------------------------------------------------------------------


def test_similarities_are_text_major_and_refuse_the_old_four_tensor_call():
    model = tiny_model().eval()
    input_ids, attention_mask = caption_batch(batch=3)
    with torch.no_grad():
        text = model.get_text_features(input_ids, attention_mask)
        video = model.get_video_features(video_batch(batch=2))
        latent, lexicon, fused = model.compute_similarities(text, video)
        from_pairs = model.compute_similarities(_pair(text), _pair(video))
        output = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=video_batch(batch=2))
    assert latent.shape == lexicon.shape == fused.shape == (3, 2)  # [N_text, N_video], like TMassModel.similarity
    expected = torch.nn.functional.normalize(text.pooler_output, dim=-1) @ torch.nn.functional.normalize(
        video.pooler_output, dim=-1
    ).t()
    torch.testing.assert_close(latent, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(fused, latent + lexicon, atol=1e-6, rtol=0)
    for mine, theirs in zip((latent, lexicon, fused), from_pairs):
        torch.testing.assert_close(mine, theirs, atol=0, rtol=0)
    torch.testing.assert_close(output.logits_per_text, fused, atol=1e-6, rtol=0)
    with pytest.raises(TypeError):  # (video_latent, video_lexicon, text_latent, text_lexicon) was the old order
        model.compute_similarities(*_pair(video), *_pair(text))
    with pytest.raises(TypeError, match="text_features"):
        model.compute_similarities(text.pooler_output, video)


def test_main_input_name_is_the_first_argument_of_forward():
    import inspect

    parameters = [name for name in inspect.signature(UnifyModel.forward).parameters if name != "self"]
    assert UnifyModel.main_input_name == parameters[0] == "input_ids"


def test_one_stage_rule_for_forward_and_the_training_task():
    """`stage_loss_terms` names the terms, `compute_loss` computes them, and the training task's loss (which
    gathers embeddings, here in one process) equals `forward(return_loss=True)`'s."""
    from video_text_retrieval.training.tasks import StepContext, UnifyTask

    distill_weight = 0.7  # the stage schedule's weight at some step (tested with the schedule)

    class Tokenizer:  # what `make_mlm_inputs` reads from a tokenizer
        mask_token_id, all_special_ids = MASK_ID, SPECIAL_IDS

        def __len__(self):
            return VOCAB_SIZE

    model = tiny_model(bag_of_words_weight=0.5).eval()
    assert model.stage_loss_terms(0) == ("loss_mlm", "loss_bag_of_words")
    assert model.stage_loss_terms(1) == ("loss_latent", "loss_lexicon", "loss_flops", "loss_distill")
    assert model.stage_loss_terms(2) == ("loss_latent", "loss_lexicon", "loss_flops", "loss_distill", "loss_mlm")
    assert tiny_model(use_mlm=False, use_self_distillation=False).stage_loss_terms(2) == (
        "loss_latent", "loss_lexicon", "loss_flops",
    )  # fmt: skip

    input_ids, attention_mask = caption_batch(batch=4, seed=3)
    batch = dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=video_batch(batch=4))
    task = UnifyTask()
    for stage in (0, 1, 2):
        model.set_training_stage(stage)
        model.eval()  # no dropout: the two paths must agree exactly
        context = StepContext(step=3, total_steps=11, local_generator=torch.Generator().manual_seed(5), distill_weight=distill_weight,
                              extra={"tokenizer": Tokenizer()})  # fmt: skip
        with torch.no_grad():
            task_losses = task.training_losses(model, batch, context)
            mlm_input_ids, mlm_labels = model.make_mlm_inputs(
                input_ids, attention_mask, tokenizer=Tokenizer(), generator=torch.Generator().manual_seed(5)
            )
            output = model(**batch, mlm_input_ids=mlm_input_ids, mlm_labels=mlm_labels, return_loss=True,
                           distill_weight=distill_weight)  # fmt: skip
            direct = model.compute_loss(
                model.get_text_features(input_ids, attention_mask), model.get_video_features(batch["pixel_values_videos"]),
                input_ids=input_ids, attention_mask=attention_mask, mlm_input_ids=mlm_input_ids, mlm_labels=mlm_labels,
                distill_weight=distill_weight,
            )  # fmt: skip
        assert isinstance(direct, UnifyOutput)
        terms = model.stage_loss_terms()
        assert set(task_losses) - {"loss", "distill_weight"} == set(terms)
        present = {name for name in output.keys() if name.startswith("loss_")}
        assert present == set(terms), (stage, present)
        torch.testing.assert_close(task_losses["loss"], output.loss, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(direct.loss, output.loss, atol=1e-6, rtol=1e-6)
        weights = {"loss_flops": model.config.flops_weight, "loss_distill": distill_weight,
                   "loss_bag_of_words": 0.5}  # fmt: skip
        torch.testing.assert_close(output.loss, sum(weights.get(name, 1.0) * output[name] for name in terms))


@pytest.mark.parametrize("context", ["torch_meta_device", "accelerate_init_empty_weights"])
def test_the_model_can_be_built_on_the_meta_device(context):
    config = tiny_config(vision={"drop_path_rate": 0.1})
    if context == "torch_meta_device":
        with torch.device("meta"):
            model = UnifyModel(config)
    else:
        accelerate = pytest.importorskip("accelerate")
        with accelerate.init_empty_weights(include_buffers=True):
            model = UnifyModel(config)
    assert all(tensor.device.type == "meta" for tensor in [*model.parameters(), *model.buffers()])
    assert model.lexicon_head.predictions.decoder.weight is model.text_model.embeddings.word_embeddings.weight
    rates = [block.drop_path_rate for block in model.vision_model.encoder.latent_layers]
    assert rates == [pytest.approx(0.1)]  # the schedule is plain floats, computed without tensors


def test_config_output_hidden_states_and_return_dict_are_honoured():
    model = tiny_model().eval()
    input_ids, attention_mask = caption_batch(batch=2)
    with torch.no_grad():
        plain = model.get_text_features(input_ids, attention_mask)
        model.config.output_hidden_states = True
        text = model.get_text_features(input_ids, attention_mask)
        video = model.get_video_features(video_batch(batch=2))
        model.config.output_hidden_states = False
        as_tuple = model.get_video_features(video_batch(batch=2), return_dict=False)
    assert plain.hidden_states is None
    assert len(text.hidden_states) == 1 + 2 + 1 and len(video.hidden_states) == 1 + 2 + 1  # embeddings, stem, branch
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], video.pooler_output, atol=0, rtol=0)


# --------------------------------------------------------------------------------------------------------
# Grounding a from-scratch text tower in stage 0 (the bag-of-words reconstruction)
# --------------------------------------------------------------------------------------------------------


def _train_text_tower_from_scratch(bag_of_words_weight: float, steps: int = 150, batch_size: int = 32):
    """Stage 0 on the synthetic captions of seen (colour, shape) pairs; returns the model, tokenizer and the
    captions of the held-out pairs (unseen combinations of seen words)."""
    from video_text_retrieval.data.synthetic import _is_held_out, all_concept_tuples, caption_for
    from video_text_retrieval.data.tokenizers import build_bert_tokenizer

    tuples = all_concept_tuples()
    train = [caption_for(c, template) for c in tuples if not _is_held_out(c) for template in range(3)]
    test = [caption_for(c, i % 3) for i, c in enumerate(c for c in tuples if _is_held_out(c))]
    tokenizer = build_bert_tokenizer(train + test)
    torch.manual_seed(0)
    model = UnifyModel(
        tiny_config(
            text={"vocab_size": len(tokenizer), "num_hidden_layers": 2, "pad_token_id": tokenizer.pad_token_id},
            vision={"num_hidden_layers": 2},
            num_shared_layers=1,
            bag_of_words_weight=bag_of_words_weight,
        )
    )
    model.set_training_stage(0)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only contend (about 7 CPU seconds in all)
    try:
        _stage_zero_steps(model, tokenizer, train, optimizer, generator, steps, batch_size)
    finally:
        torch.set_num_threads(threads)
    return model.eval(), tokenizer, test


def _stage_zero_steps(model, tokenizer, train, optimizer, generator, steps: int, batch_size: int) -> None:
    for _ in range(steps):
        rows = torch.randint(len(train), (batch_size,), generator=generator).tolist()
        batch = tokenizer([train[i] for i in rows], padding=True, return_tensors="pt")
        mlm_input_ids, mlm_labels = model.make_mlm_inputs(
            batch["input_ids"], batch["attention_mask"], tokenizer=tokenizer, generator=generator
        )
        output = model.compute_loss(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            mlm_input_ids=mlm_input_ids, mlm_labels=mlm_labels,
        )  # fmt: skip
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()


def _lexicon_grounding(model, tokenizer, captions) -> tuple[float, float]:
    """(share of each caption's top-|words| lexicon words that are its own words, mean pairwise cosine of the
    lexicons of different captions)."""
    from modeling_unify import lexicon_top_words

    encoded = tokenizer(captions, padding=True, return_tensors="pt")
    with torch.no_grad():
        lexicon = model.get_text_features(encoded["input_ids"], encoded["attention_mask"]).lexicon_embeds
    special = set(tokenizer.all_special_ids)
    hits = total = 0
    for row, ids in zip(lexicon, encoded["input_ids"].tolist()):
        words = {tokenizer.convert_ids_to_tokens(i) for i in ids if i not in special}
        top = {word for word, _ in lexicon_top_words(row, tokenizer, k=len(words))}
        hits, total = hits + len(top & words), total + len(words)
    normalised = torch.nn.functional.normalize(lexicon, dim=-1)
    cosine = (normalised @ normalised.t())[~torch.eye(len(captions), dtype=torch.bool)]
    return hits / total, float(cosine.mean())


def test_stage_zero_bag_of_words_grounds_the_text_lexicon_in_the_captions_words():
    """MLM alone (the paper's objective, meant for a pretrained BERT) leaves a from-scratch text lexicon nearly
    the same for every caption (measured with this recipe and weight 0: 59 % own words, mean pairwise cosine
    0.99, 37 of 39 dimensions active); the bag-of-words term makes each caption's top words its own words on
    held-out captions (unseen combinations) and pulls different captions apart (the cosine of the captions'
    plain bags of words is 0.43: captions share template words such as "a", "on", "background")."""
    model, tokenizer, test = _train_text_tower_from_scratch(bag_of_words_weight=1.0)
    own_word_share, mean_cosine = _lexicon_grounding(model, tokenizer, test)
    print(f"own-word share {own_word_share:.3f}, mean pairwise cosine {mean_cosine:.3f}")
    assert own_word_share >= 0.9
    assert mean_cosine < 0.7
