"""`TMassModel` as a transformers model: shapes, save/load, Auto classes, remote code, builders, converter errors,
the scoring options of `similarity`, determinism, gradient checkpointing and mixed precision (tiny configs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, CLIPConfig, CLIPModel

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
        output = model(**inputs, noise=noise)
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
    # return_loss=False, tuple output, hidden states.
    with torch.no_grad():
        no_loss = model(**inputs, return_loss=False, noise=noise)
        as_tuple = model(**inputs, return_dict=False, noise=noise)
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


def _architecture(config_dict: dict) -> dict:
    """A config dict without the fields `from_pretrained` fills in (`_name_or_path`, `dtype`)."""
    return {
        key: _architecture(value) if isinstance(value, dict) else value
        for key, value in config_dict.items()
        if key not in ("_name_or_path", "dtype")
    }


def test_save_pretrained_round_trip(tmp_path):
    model, inputs = tiny_model(), tiny_inputs()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert any(k.startswith("frame_pooling.") for k in saved) and "radius.linear_proj.weight" in saved
    loaded, info = TMassModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    assert _architecture(loaded.config.to_dict()) == _architecture(model.config.to_dict())
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    noise = torch.rand(3, EMBED_DIM)
    with torch.no_grad():
        assert torch.equal(model(**inputs, noise=noise).logits_per_text, loaded(**inputs, noise=noise).logits_per_text)


def test_auto_classes_load_the_folder(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, TMassConfig) and config.num_frames == NUM_FRAMES
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is TMassModel
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


def test_attn_implementation_and_dtype_options(tmp_path):
    model, inputs = tiny_model(), tiny_inputs()
    model.save_pretrained(tmp_path)
    eager = TMassModel.from_pretrained(tmp_path, attn_implementation="eager")
    assert eager.clip.text_model.config._attn_implementation == "eager"
    assert eager.clip.vision_model.config._attn_implementation == "eager"
    noise = torch.rand(3, EMBED_DIM)
    with torch.no_grad():
        difference = (eager(**inputs, noise=noise).logits_per_text - model(**inputs, noise=noise).logits_per_text).abs()
    assert float(difference.max()) < 1e-4
    half = TMassModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert half.frame_pooling.linear_proj.weight.dtype == torch.bfloat16


_REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = {"modeling_tmass", "modeling_unify", "processors", "video_text_retrieval"}

    class RefuseOurPackages(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{name} is blocked in this process", name=name)
            return None

    sys.meta_path.insert(0, RefuseOurPackages())
    try:
        import modeling_tmass  # noqa: F401
        raise SystemExit("the blocker failed: modeling_tmass was importable")
    except ModuleNotFoundError:
        pass

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModel

    folder = sys.argv[1]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    assert type(config).__name__ == "TMassConfig"
    inputs = load_file(folder + "/test_inputs.safetensors")
    with torch.no_grad():
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    pixel_values_videos=inputs["pixel_values_videos"], noise=inputs["noise"])
        sims = model.similarity(out.text_embeds, out.video_embeds, noise_tensor=inputs["noise_tensor"])
    save_file({"logits": out.logits_per_text.contiguous(), "loss": out.loss.reshape(1), "sims": sims},
              folder + "/remote_outputs.safetensors")
    """
)


def test_remote_code_loading_without_our_packages(tmp_path):
    model, inputs = tiny_model(), tiny_inputs()
    folder = tmp_path / "tmass-remote"
    try:
        TMassConfig.register_for_auto_class()
        TMassModel.register_for_auto_class("AutoModel")
        model.save_pretrained(folder)
    finally:  # do not leak the registration into other tests' saves
        TMassConfig._auto_class = None
        TMassModel._auto_class = None
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_tmass.TMassConfig",
        "AutoModel": "modeling_tmass.TMassModel",
    }
    assert (folder / "modeling_tmass.py").is_file() and (folder / "configuration_tmass.py").is_file()
    noise = torch.rand(3, EMBED_DIM)
    noise_tensor = torch.rand(3, model.config.num_trials, 3, EMBED_DIM)
    save_file(dict(inputs, noise=noise, noise_tensor=noise_tensor), str(folder / "test_inputs.safetensors"))
    script = tmp_path / "load_remote.py"
    script.write_text(_REMOTE_SCRIPT)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, str(script), str(folder)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = load_file(str(folder / "remote_outputs.safetensors"))
    with torch.no_grad():
        local = model(**inputs, noise=noise)
        sims = model.similarity(local.text_embeds, local.video_embeds, noise_tensor=noise_tensor)
    assert torch.equal(remote["logits"], local.logits_per_text)
    assert torch.equal(remote["loss"][0], local.loss)
    assert torch.equal(remote["sims"], sims)


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
    # At init r_d = exp(s_d) for d < F and 1 otherwise (§4.1).
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
    TMassConfig._auto_class = None
    TMassModel._auto_class = None
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
# Training utilities: gradient checkpointing, autocast
# ---------------------------------------------------------------------------------------------------------------------


def _gradients(model, inputs, noise):
    model.zero_grad()
    model(**inputs, noise=noise).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_backward():
    model, inputs = tiny_model(support_loss_weight=0.8).train(), tiny_inputs()
    noise = torch.rand(3, EMBED_DIM)
    plain = _gradients(model, inputs, noise)
    assert model.supports_gradient_checkpointing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layer = model.clip.text_model.encoder.layers[0]
    assert layer.gradient_checkpointing
    checkpointed = _gradients(model, inputs, noise)
    assert set(plain) == set(checkpointed)
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6), name


def test_autocast_bfloat16_on_cpu():
    model, inputs = tiny_model().train(), tiny_inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(**inputs, noise=torch.rand(3, EMBED_DIM))
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
