"""`TMassModel`: shapes, builders, converter errors, the scoring options of `similarity`, determinism, export,
initialisation and mixed precision (tiny configs). The transformers conventions shared with UNIFY (save/load, Auto
classes, remote code, dtype loading, gradient checkpointing, SDPA vs eager, meta device) are in
`tests/test_modeling_common.py`."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, CLIPConfig, CLIPModel

from modeling_tmass import TMassConfig, TMassModel, TMassOutput
from modeling_tmass.convert_tmass_original_checkpoint import convert_tmass_checkpoint, main as convert_main

EMBED_DIM, NUM_FRAMES, IMAGE_SIZE, VOCAB = 16, 3, 16, 40


def tiny_clip_config(projection_dim: int = EMBED_DIM) -> dict:
    return {
        "text_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "vocab_size": VOCAB, "max_position_embeddings": 12, "bos_token_id": VOCAB - 2,
                        "eos_token_id": VOCAB - 1, "pad_token_id": VOCAB - 1},
        "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                          "image_size": IMAGE_SIZE, "patch_size": 8},
        "projection_dim": projection_dim,
    }


def tiny_model(seed: int = 0, **fields) -> TMassModel:
    fields = {"num_frames": NUM_FRAMES, "num_pooling_heads": 2, "pooling_dropout": 0.0, "num_trials": 4} | fields
    torch.manual_seed(seed)
    model = TMassModel(TMassConfig(clip_config=tiny_clip_config(), **fields))
    with torch.no_grad():  # move the new modules away from their identity initialisation
        generator = torch.Generator().manual_seed(seed + 1)
        for name, param in model.named_parameters():
            if not name.startswith("clip."):
                param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    return model.eval()


def tiny_inputs(batch: int = 3, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB - 2, (batch, 7), generator=generator)
    input_ids[:, 0] = VOCAB - 2
    input_ids[:, -1] = VOCAB - 1
    input_ids[0, 4:] = VOCAB - 1  # a shorter caption, padded with EOS
    attention_mask = (torch.arange(7)[None] <= (input_ids == VOCAB - 1).int().argmax(-1)[:, None]).long()
    pixels = torch.randn(batch, NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values_videos": pixels}


def embeddings(num_texts: int, num_videos: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(num_texts, EMBED_DIM, generator=generator),
        torch.randn(num_videos, NUM_FRAMES, EMBED_DIM, generator=generator),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------------


def test_config_fields_and_validation():
    config = TMassConfig(clip_config=tiny_clip_config(), num_frames=5)
    assert config.model_type == "tmass" and config.embed_dim == EMBED_DIM
    assert isinstance(config.clip_config, CLIPConfig)
    assert config.stochastic_prior == "uniform01" and config.num_trials == 20 and config.num_pooling_heads == 1
    bad = {
        "num_pooling_heads": (3, "num_pooling_heads"),
        "stochastic_prior": ("gauss", "stochastic_prior"),
        "num_frames": (0, "num_frames"),
        "num_trials": (-1, "num_trials"),
        "pooling_dropout": (1.5, "pooling_dropout"),
        "similarity_noise": ("global", "similarity_noise"),
    }
    for field_name, (value, message) in bad.items():
        with pytest.raises(Exception, match=message):
            TMassConfig(clip_config=tiny_clip_config(), **{field_name: value})


# ---------------------------------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------------------------------


def test_forward_shapes_and_loss_terms():
    model, inputs = tiny_model(support_loss_weight=0.5), tiny_inputs()
    noise = torch.rand(3, EMBED_DIM)
    with torch.no_grad():
        output = model(**inputs, noise=noise, return_loss=True)
    assert isinstance(output, TMassOutput)
    assert output.logits_per_text.shape == output.logits_per_video.shape == (3, 3)
    assert output.text_embeds.shape == (3, EMBED_DIM)
    assert output.video_embeds.shape == (3, NUM_FRAMES, EMBED_DIM)
    assert output.video_pooled.shape == (3, 3, EMBED_DIM)
    assert torch.allclose(output.loss, output.loss_main + 0.5 * output.loss_support)
    assert torch.equal(output.logits_per_video, output.logits_per_text.t())
    # Features from the getters are the ones the forward used.
    with torch.no_grad():
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        frames = model.get_video_features(inputs["pixel_values_videos"]).pooler_output
    assert torch.allclose(text, output.text_embeds, atol=1e-6) and torch.allclose(frames, output.video_embeds, atol=1e-6)
    # return_loss off by default (as CLIPModel), tuple output, hidden states.
    with torch.no_grad():
        no_loss = model(**inputs, noise=noise)
        as_tuple = model(**inputs, return_dict=False, noise=noise, return_loss=True)
        hidden = model(**inputs, output_hidden_states=True, noise=noise)
    assert no_loss.loss is None and no_loss.logits_per_text is not None
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], output.loss)
    assert len(hidden.text_model_output.hidden_states) == 3  # embeddings + 2 layers
    assert hidden.vision_model_output.hidden_states[0].shape[0] == 3 * NUM_FRAMES
    with pytest.raises(ValueError, match="pairs"):
        model(input_ids=inputs["input_ids"][:2], pixel_values_videos=inputs["pixel_values_videos"])
    with pytest.raises(ValueError, match="pixel_values_videos"):
        model.get_video_features(inputs["pixel_values_videos"][0])


def test_forward_noise_is_injected_or_drawn_from_the_generator():
    model, inputs = tiny_model(), tiny_inputs()
    noise = torch.rand(3, EMBED_DIM, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        injected = model(**inputs, noise=noise)
        drawn = model(**inputs, generator=torch.Generator().manual_seed(5))
        other = model(**inputs, generator=torch.Generator().manual_seed(6))
    assert torch.equal(injected.text_stochastic, drawn.text_stochastic)
    assert torch.allclose(injected.text_stochastic, injected.text_embeds + noise * injected.log_radius.exp())
    assert not torch.equal(drawn.text_stochastic, other.text_stochastic)
    with pytest.raises(ValueError, match="noise must have shape"):
        model(**inputs, noise=torch.rand(2, EMBED_DIM))


# ---------------------------------------------------------------------------------------------------------------------
# Save / load, Auto classes, remote code
# ---------------------------------------------------------------------------------------------------------------------


def test_saved_folder_keys_and_processor_registration(tmp_path):
    """(Round trip, Auto classes and remote code: `tests/test_modeling_common.py`.)"""
    model = tiny_model()
    model.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert any(k.startswith("frame_pooling.") for k in saved) and "radius.linear_proj.weight" in saved
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded.config, TMassConfig) and loaded.config.num_frames == NUM_FRAMES
    # Importing modeling_tmass also registers the T-MASS (video) processor for this config.
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
    from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING

    from processors import TMassProcessor, TMassVideoProcessor

    registered = VIDEO_PROCESSOR_MAPPING[TMassConfig]  # a {backend: class} dict in transformers 5
    assert TMassVideoProcessor in (registered.values() if isinstance(registered, dict) else [registered])
    assert PROCESSOR_MAPPING[TMassConfig] is TMassProcessor
    text, frames = embeddings(4, 3)
    with torch.no_grad():
        assert torch.equal(
            model.similarity(text, frames, noise="shared", generator=torch.Generator().manual_seed(0)),
            loaded.similarity(text, frames, noise="shared", generator=torch.Generator().manual_seed(0)),
        )


# ---------------------------------------------------------------------------------------------------------------------
# Builders and converter
# ---------------------------------------------------------------------------------------------------------------------


def test_from_clip_object_and_folder(tmp_path):
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(**tiny_clip_config())).eval()
    model = TMassModel.from_clip(clip, num_frames=NUM_FRAMES, num_pooling_heads=2)
    for key, tensor in clip.state_dict().items():
        assert torch.equal(model.clip.state_dict()[key], tensor), key
    pooling = model.frame_pooling
    for linear in (pooling.cross_attn.q_proj, pooling.cross_attn.k_proj, pooling.cross_attn.v_proj,
                   pooling.cross_attn.out_proj, pooling.linear_proj):
        assert torch.equal(linear.weight, torch.eye(EMBED_DIM)) and not linear.bias.any()
    assert torch.equal(model.radius.linear_proj.weight, torch.eye(EMBED_DIM, NUM_FRAMES))
    assert not model.radius.linear_proj.bias.any()
    # At init r_d = exp(s_d) for d < F and 1 otherwise (paper Sec. 3.2).
    text, frames = embeddings(2, 2)
    log_radius = model.radius(text, frames)
    cosines = torch.nn.functional.cosine_similarity(text[None, :, None], frames[:, None], dim=-1)
    assert torch.allclose(log_radius[..., :NUM_FRAMES], cosines, atol=1e-6)
    assert not log_radius[..., NUM_FRAMES:].any()
    clip.save_pretrained(tmp_path / "clip")
    from_folder = TMassModel.from_clip(str(tmp_path / "clip"), num_frames=NUM_FRAMES)
    assert torch.equal(from_folder.clip.logit_scale, clip.logit_scale)
    assert torch.equal(from_folder.frame_pooling.linear_proj.weight, torch.eye(EMBED_DIM))
    with pytest.raises(TypeError, match="clip_model_or_path"):
        TMassModel.from_clip(42)


def _official_state_dict(model: TMassModel) -> dict:
    """The model's weights in the official key layout, with the dead keys the official saver writes."""
    renames = (("frame_pooling.", "pool_frames."), ("radius.", "stochastic.std_branch."))
    state = {}
    for key, tensor in model.state_dict().items():
        for ours, official in renames:
            if key.startswith(ours):
                key = official + key[len(ours):]
        state[key] = tensor.clone()
    state["clip.text_model.embeddings.position_ids"] = torch.arange(12)[None]
    state["clip.vision_model.embeddings.position_ids"] = torch.arange(5)[None]
    state["stochastic.std_branch.learnable_scalar"] = torch.tensor([3.0e38])
    return state


def test_converter_formats_and_cli(tmp_path):
    model = tiny_model()
    official = _official_state_dict(model)
    torch.save({"epoch": 3, "state_dict": official, "optimizer": {"state": {}, "param_groups": []}}, tmp_path / "w.pth")
    torch.save(official, tmp_path / "raw.pth")
    save_file({k: v.contiguous() for k, v in official.items()}, str(tmp_path / "raw.safetensors"))
    (tmp_path / "clip.json").write_text(json.dumps(tiny_clip_config()))
    for name in ("w.pth", "raw.pth", "raw.safetensors"):
        converted = convert_tmass_checkpoint(tmp_path / name, tmp_path / "clip.json", num_pooling_heads=2)
        assert converted.config.num_frames == NUM_FRAMES and converted.config.embed_dim == EMBED_DIM
        for key, tensor in model.state_dict().items():
            assert torch.equal(converted.state_dict()[key], tensor), (name, key)
    convert_main(["--checkpoint", str(tmp_path / "w.pth"), "--clip-config", str(tmp_path / "clip.json"),
                  "--output-dir", str(tmp_path / "out"), "--num-pooling-heads", "2", "--num-trials", "7"])
    loaded = AutoModel.from_pretrained(tmp_path / "out")
    assert loaded.config.num_trials == 7 and (tmp_path / "out" / "modeling_tmass.py").is_file()
    assert torch.equal(loaded.radius.linear_proj.weight, model.radius.linear_proj.weight)


def test_converter_refuses_mismatches(tmp_path):
    model = tiny_model()
    clip_config = tiny_clip_config()

    def convert(state, **kwargs):
        torch.save(state, tmp_path / "ckpt.pth")
        return convert_tmass_checkpoint(tmp_path / "ckpt.pth", clip_config, num_pooling_heads=2, **kwargs)

    wrong_shape = _official_state_dict(model)
    wrong_shape["pool_frames.linear_proj.weight"] = torch.zeros(EMBED_DIM, EMBED_DIM + 1)
    with pytest.raises(ValueError, match=r"pool_frames\.linear_proj\.weight.*\(16, 17\).*\(16, 16\)"):
        convert(wrong_shape)
    missing = _official_state_dict(model)
    del missing["pool_frames.layer_norm3.bias"]
    with pytest.raises(ValueError, match=r"missing.*frame_pooling\.layer_norm3\.bias"):
        convert(missing)
    unexpected = _official_state_dict(model)
    unexpected["pool_frames.extra.weight"] = torch.zeros(2)
    with pytest.raises(ValueError, match=r"unexpected.*pool_frames\.extra\.weight"):
        convert(unexpected)
    with pytest.raises(ValueError, match="projection_dim"):
        clip_config = tiny_clip_config(projection_dim=8)
        convert(_official_state_dict(model))
    clip_config = tiny_clip_config()
    with pytest.raises(ValueError, match="num_frames=5"):
        convert(_official_state_dict(model), num_frames=5)
    no_radius = _official_state_dict(model)
    del no_radius["stochastic.std_branch.linear_proj.weight"]
    with pytest.raises(ValueError, match="not a T-MASS checkpoint"):
        convert(no_radius)


# ---------------------------------------------------------------------------------------------------------------------
# similarity: noise modes, chunks, protocols, determinism
# ---------------------------------------------------------------------------------------------------------------------


def test_noise_modes_and_injected_shapes():
    model = tiny_model()
    text, frames = embeddings(5, 3)
    shared = torch.rand(4, 5, EMBED_DIM)
    with torch.no_grad():
        paper_shared = model.similarity(text, frames, noise="shared", noise_tensor=shared)
        # The same draw repeated for every video in per-pair mode gives the same scores.
        paper_repeated = model.similarity(text, frames, noise="per_pair", noise_tensor=shared.expand(3, -1, -1, -1))
    assert paper_shared.shape == (5, 3)
    assert torch.allclose(paper_shared, paper_repeated, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(T, N_t, D\)"):
        model.similarity(text, frames, noise="shared", noise_tensor=torch.rand(3, 4, 5, EMBED_DIM))
    with pytest.raises(ValueError, match=r"\(N_v, T, N_t, D\)"):
        model.similarity(text, frames, noise="per_pair", noise_tensor=shared)
    with pytest.raises(ValueError, match="must have shape"):
        model.similarity(text, frames, noise="per_pair", noise_tensor=torch.rand(2, 4, 5, EMBED_DIM))
    with pytest.raises(ValueError, match="disagrees"):
        model.similarity(text, frames, num_trials=3, noise="shared", noise_tensor=shared)
    with pytest.raises(ValueError, match="noise must be one of"):
        model.similarity(text, frames, noise="global")
    with pytest.raises(ValueError, match="protocol must be one of"):
        model.similarity(text, frames, protocol="leaky")
    with pytest.raises(ValueError, match="frames per video"):
        model.similarity(text, torch.randn(3, NUM_FRAMES + 1, EMBED_DIM))


@pytest.mark.parametrize("prior", ["uniform01", "normal"])
def test_chunk_size_invariance_and_generator_determinism(prior):
    model = tiny_model(stochastic_prior=prior, stochastic_prior_std=0.3)
    text, frames = embeddings(6, 5)
    text_to_video = torch.tensor([0, 1, 2, 3, 4, 4])

    def run(chunk_size, seed=0, protocol="paper", noise="per_pair"):
        with torch.no_grad():
            return model.similarity(text, frames, protocol=protocol, noise=noise, chunk_size=chunk_size,
                                    text_to_video=text_to_video, generator=torch.Generator().manual_seed(seed))

    for protocol in ("paper", "official"):
        reference = run(None, protocol=protocol)
        for chunk_size in (1, 2, 3, 5, 8):
            assert torch.allclose(run(chunk_size, protocol=protocol), reference, atol=1e-6, equal_nan=True)
    assert torch.equal(run(2, seed=1), run(2, seed=1))
    assert not torch.equal(run(2, seed=1), run(2, seed=2))
    assert torch.allclose(run(1, noise="shared"), run(4, noise="shared"), atol=1e-6)
    # The global RNG path: same seed, same scores.
    torch.manual_seed(3)
    first = model.similarity(text, frames)
    torch.manual_seed(3)
    assert torch.equal(first, model.similarity(text, frames))


def test_official_protocol_nan_pattern_on_ragged_captions():
    model = tiny_model()
    text, frames = embeddings(6, 3)
    text_to_video = torch.tensor([2, 0, 2, 1, 0, 2])  # caption counts 2 / 1 / 3
    with torch.no_grad():
        sims = model.similarity(text, frames, protocol="official", text_to_video=text_to_video,
                                generator=torch.Generator().manual_seed(0))
        paper = model.similarity(text, frames, text_to_video=text_to_video, generator=torch.Generator().manual_seed(0))
    assert sims.shape == (3, 3, 3) and paper.shape == (6, 3)
    counts = torch.tensor([2, 1, 3])
    missing = torch.arange(3)[None, :] >= counts[:, None]  # [video, slot]
    assert torch.equal(torch.isnan(sims), missing[:, :, None] | missing.T[None, :, :])
    # Group j, slot c holds the c-th caption of video j in text order; where its own video's c-th caption exists,
    # the official score of (j, c) against video j itself equals the paper score (same stochastic text, same pooling).
    assert torch.allclose(sims[2, 0, 2], paper[0, 2]) and torch.allclose(sims[2, 2, 2], paper[5, 2])
    assert torch.allclose(sims[0, 1, 0], paper[4, 0])
    with pytest.raises(ValueError, match="text_to_video"):
        model.similarity(text, frames, protocol="official")
    with pytest.raises(ValueError, match="at least one caption"):
        model.similarity(text, frames, protocol="official", text_to_video=torch.tensor([0, 0, 0, 1, 1, 1]))


def test_paper_protocol_versus_no_trials():
    model = tiny_model()
    text, frames = embeddings(4, 3)
    noise = torch.rand(3, 6, 4, EMBED_DIM)
    with torch.no_grad():
        pooled = model.frame_pooling(text, frames)  # [N_v, N_t, D]
        no_trials = model.similarity(text, frames, num_trials=0)
        with_trials = model.similarity(text, frames, noise_tensor=noise)
        log_radius = model.radius(text, frames)
    mean_cosine = torch.nn.functional.cosine_similarity(text[None], pooled, dim=-1).t()
    assert torch.allclose(no_trials, mean_cosine, atol=1e-6)
    samples = text[None, None] + noise * log_radius[:, None].exp()  # [N_v, T, N_t, D]
    trial_cosines = torch.nn.functional.cosine_similarity(samples, pooled[:, None], dim=-1)
    assert torch.allclose(with_trials, trial_cosines.amax(dim=1).t(), atol=1e-6)
    assert not torch.allclose(with_trials, no_trials)


# ---------------------------------------------------------------------------------------------------------------------
# Training utilities: autocast (gradient checkpointing: tests/test_modeling_common.py)
# ---------------------------------------------------------------------------------------------------------------------


def test_autocast_bfloat16_on_cpu():
    model, inputs = tiny_model().train(), tiny_inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(**inputs, noise=torch.rand(3, EMBED_DIM), return_loss=True)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    assert model.frame_pooling.linear_proj.weight.grad is not None
    assert torch.isfinite(model.radius.linear_proj.weight.grad).all()
    text, frames = embeddings(4, 3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        sims = model.eval().similarity(text, frames, generator=torch.Generator().manual_seed(0))
    full = model.similarity(text, frames, generator=torch.Generator().manual_seed(0))
    assert sims.shape == (4, 3) and float((sims.float() - full).abs().max()) < 5e-2


def test_clamp_logit_scale():
    model = tiny_model()
    with torch.no_grad():
        model.clip.logit_scale.fill_(9.0)
    model.clamp_logit_scale_()
    assert float(model.clip.logit_scale.detach()) == pytest.approx(model.config.logit_scale_max)


# ---------------------------------------------------------------------------------------------------------------------
# Determinism, export, initialisation, foreign folders
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("noise", ["shared", "per_pair"])
def test_scores_do_not_depend_on_threads_or_memory_alignment(noise):
    model = tiny_model()
    text, frames = embeddings(5, 4)
    threads = torch.get_num_threads()

    def run(text, frames):
        return model.similarity(text, frames, noise=noise, generator=torch.Generator().manual_seed(3))

    reference = run(text, frames)
    # the same values 4 bytes off a 64-byte boundary (as weights memory-mapped from a safetensors file)
    buffer = torch.empty(text.numel() + frames.numel() + 2)
    offset_text = buffer[1 : 1 + text.numel()].view_as(text).copy_(text)
    offset_frames = buffer[2 + text.numel() :].view_as(frames).copy_(frames)
    assert offset_text.data_ptr() % 64 != 0
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            assert torch.equal(run(text, frames), reference), count
            assert torch.equal(run(offset_text, offset_frames), reference), count
    finally:
        torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads


def test_tile_workers_setting_gives_the_same_scores_and_restores_threads():
    model = tiny_model(similarity_tile_workers=2)
    text, frames = embeddings(40, 30)
    threads = torch.get_num_threads()
    with torch.no_grad():
        pooled = model.similarity(text, frames, noise="shared", chunk_size=7,
                                  generator=torch.Generator().manual_seed(0))
        model.config.similarity_tile_workers = 1
        plain = model.similarity(text, frames, noise="shared", chunk_size=7, generator=torch.Generator().manual_seed(0))
    assert torch.get_num_threads() == threads
    assert torch.allclose(pooled, plain, atol=1e-6)
    with pytest.raises(Exception, match="similarity_tile_workers"):
        TMassConfig(clip_config=tiny_clip_config(), similarity_tile_workers=0)


def test_dynamic_shape_export_without_injected_noise():
    model, inputs = tiny_model(), tiny_inputs(batch=3)
    batch = torch.export.Dim("batch", min=2, max=16)
    dynamic = {name: {0: batch} for name in ("input_ids", "attention_mask", "pixel_values_videos")}
    exported = torch.export.export(model, args=(), kwargs=inputs, dynamic_shapes=dynamic, strict=False)
    other = tiny_inputs(batch=5, seed=1)
    with torch.no_grad():
        output = exported.module()(**other)
        eager = model(**other)
    assert output.logits_per_text.shape == (5, 5)
    # everything before the noise is the same computation
    assert torch.allclose(output.video_pooled, eager.video_pooled, atol=1e-5)
    assert torch.allclose(output.log_radius, eager.log_radius, atol=1e-5)


def test_missing_clip_weights_get_clips_initialisation(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state = {k: v for k, v in state.items() if ".self_attn." not in k and "projection" not in k}
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    torch.manual_seed(0)
    loaded, info = TMassModel.from_pretrained(tmp_path, output_loading_info=True)
    assert any(".self_attn.q_proj.weight" in key for key in info["missing_keys"])
    clip = loaded.config.clip_config
    text = clip.text_config
    # CLIPAttention: std = embed_dim^-0.5 * (2 * layers)^-0.5 * factor; projections: width^-0.5 * factor
    q_std = text.hidden_size**-0.5 * (2 * text.num_hidden_layers) ** -0.5 * clip.initializer_factor
    q_weight = loaded.clip.text_model.encoder.layers[0].self_attn.q_proj.weight
    assert abs(float(q_weight.detach().std()) - q_std) < 0.35 * q_std and abs(q_std - 0.02) > 0.05
    proj_std = text.hidden_size**-0.5 * clip.initializer_factor
    assert abs(float(loaded.clip.text_projection.weight.detach().std()) - proj_std) < 0.35 * proj_std
    # the T-MASS modules that were saved are loaded, not re-initialised
    assert torch.equal(loaded.frame_pooling.linear_proj.weight, model.frame_pooling.linear_proj.weight)


def test_a_folder_of_another_model_type_is_refused(tmp_path):
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(**tiny_clip_config())).save_pretrained(tmp_path / "clip")
    with pytest.raises(ValueError, match=r"'clip'.*'tmass'"):
        TMassModel.from_pretrained(tmp_path / "clip")
    with pytest.raises(ValueError, match=r"'clip'.*'tmass'"):
        TMassConfig.from_pretrained(tmp_path / "clip")
    from tests.test_unify_model import tiny_model as tiny_unify_model

    tiny_unify_model().save_pretrained(tmp_path / "unify")
    with pytest.raises(ValueError, match=r"'unify'.*'tmass'"):
        TMassModel.from_pretrained(tmp_path / "unify")
    with pytest.raises(ValueError, match=r"'unify'.*'tmass'"):
        TMassConfig.from_dict({"model_type": "unify"})
    assert TMassConfig.from_dict(tiny_model().config.to_dict()).model_type == "tmass"
