"""Parity of `TMassModel` with the official T-MASS code (docs/tmass_design.md, "Parity" and "Randomness").

Every fixture folder from `tests/_shared.py:tmass_fixture_dirs()` (the folders under `../shared/fixtures/tmass/` plus
those in `TMASS_FIXTURES`) holds the official code's own outputs. Sizes, frame counts, heads, priors, trials, batches
and optimizer settings all come from the fixture's `config.json`. Weights enter through the converter.

The last tests build a DIFFERENT small configuration (two heads, three frames, normal prior, ragged captions) and
compare the vectorised `similarity` with a slow, literal per-video re-implementation of the pooling, the radius and the evaluation loop.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from modeling_tmass import TMassConfig, TMassModel
from modeling_tmass.convert_tmass_original_checkpoint import (
    DEAD_KEYS,
    convert_tmass_checkpoint,
    load_official_state_dict,
    rename_official_key,
)
from modeling_tmass.modeling_tmass import sample_text_mass
from modeling_tmass.scoring_tmass import best_of_per_pair_trials
from tests._shared import tmass_fixture_dirs
from tmass_utils_for_tests import random_tmass
from video_text_retrieval.metrics import (
    dual_softmax,
    group_by_video,
    grouped_t2v_metrics,
    grouped_v2t_metrics,
    t2v_metrics,
    v2t_metrics,
)
from video_text_retrieval.training.optim import LegacyAdamW, get_warmup_cosine_schedule

FEATURE_ATOL = 1e-5  # CLIP features, pooled vectors (an independent re-derivation reached 1.1e-6)
TENSOR_ATOL = 1e-5  # radius, samples, selected texts, sims (docs/tmass_design.md, "Randomness")
METRIC_ATOL = 1e-9
WEIGHT_ATOL = 1e-6  # post-step weights
EXPECTED_KS = (1, 5, 10, 50, 100)

FIXTURE_DIRS = tmass_fixture_dirs()


def _fixture_params(required_file: str | None = None):
    dirs = [d for d in FIXTURE_DIRS if required_file is None or (d / required_file).is_file()]
    if not dirs and required_file is None:
        return [pytest.param(None, id="no-tmass-fixture")]
    return [pytest.param(d, id=d.name) for d in dirs]


@dataclass
class TMassFixture:
    path: Path
    config: dict
    expected: dict
    inputs: dict
    noise: dict
    outputs: dict
    metrics_inputs: dict
    _model: TMassModel | None = field(default=None, repr=False)

    @classmethod
    def load(cls, path: Path) -> "TMassFixture":
        return cls(
            path=path,
            config=json.loads((path / "config.json").read_text()),
            expected=json.loads((path / "expected.json").read_text()),
            inputs=load_file(str(path / "inputs.safetensors")),
            noise=load_file(str(path / "noise.safetensors")),
            outputs=load_file(str(path / "outputs.safetensors")),
            metrics_inputs=load_file(str(path / "metrics_inputs.safetensors")),
        )

    @property
    def tmass(self) -> dict:
        return self.config["tmass_config"]

    def tmass_fields(self) -> dict:
        """`TMassConfig` fields from the official command-line names of the fixture."""
        tmass = self.tmass
        return {
            "num_pooling_heads": tmass["num_mha_heads"],
            "pooling_dropout": tmass["transformer_dropout"],
            "stochastic_prior": tmass["stochastic_prior"],
            "stochastic_prior_std": tmass["stochastic_prior_std"],
            "num_trials": tmass["stochasic_trials"],
            "support_loss_weight": tmass["support_loss_weight"],
        }

    def convert(self, filename: str = "model.safetensors") -> TMassModel:
        fields = self.tmass_fields()
        heads = fields.pop("num_pooling_heads")
        return convert_tmass_checkpoint(
            self.path / filename, self.config["clip_config"], num_pooling_heads=heads, **fields
        )

    @property
    def model(self) -> TMassModel:
        """The converted model before training, eval mode (shared by the read-only tests)."""
        if self._model is None:
            self._model = self.convert()
        return self._model

    @property
    def text_to_video(self) -> torch.Tensor:
        return self.inputs["text_video_index"]


_LOADED: dict[Path, TMassFixture] = {}


@pytest.fixture(scope="module", params=_fixture_params())
def fx(request) -> TMassFixture:
    if request.param is None:
        pytest.skip(
            "no T-MASS fixture: ../shared/fixtures/tmass/ is absent and TMASS_FIXTURES is empty (fresh clone); "
            "parity tests skipped"
        )
    if request.param not in _LOADED:
        _LOADED[request.param] = TMassFixture.load(request.param)
    return _LOADED[request.param]


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b| where both are finite; matching NaNs and equal infinities (`-inf - -inf` is NaN) count as 0,
    any other non-finite mismatch as inf."""
    a, b = a.double(), b.double()
    same = (torch.isnan(a) & torch.isnan(b)) | (torch.isinf(a) & (a == b))
    diff = (a - b).abs().masked_fill(same, 0.0).nan_to_num(nan=float("inf"))
    return float(diff.max()) if diff.numel() else 0.0


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, what: str) -> None:
    assert tuple(actual.shape) == tuple(expected.shape), f"{what}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    assert torch.equal(torch.isnan(actual), torch.isnan(expected)), f"{what}: NaN pattern differs"
    assert torch.equal(torch.isinf(actual), torch.isinf(expected)), f"{what}: infinity pattern differs"
    diff = _max_abs(actual, expected)
    assert diff <= atol, f"{what}: max abs diff {diff:.3g} > {atol}"


# ---------------------------------------------------------------------------------------------------------------------
# Weights and features
# ---------------------------------------------------------------------------------------------------------------------


def test_converter_loads_fixture_weights(fx):
    official = load_file(str(fx.path / "model.safetensors"))
    state = fx.model.state_dict()
    assert fx.model.config.num_frames == fx.tmass["num_frames"]
    assert fx.model.config.embed_dim == fx.tmass["embed_dim"]
    assert fx.model.config.num_pooling_heads == fx.tmass["num_mha_heads"]
    kept = {k: v for k, v in official.items() if k not in DEAD_KEYS}
    assert sorted(rename_official_key(k) for k in kept) == sorted(state)
    for key, tensor in kept.items():
        assert torch.equal(state[rename_official_key(key)], tensor), key


def test_text_and_frame_features(fx):
    model = fx.model
    with torch.no_grad():
        text = model.get_text_features(fx.inputs["input_ids"], fx.inputs["attention_mask"]).pooler_output
        frames = model.get_video_features(fx.inputs["pixel_values"]).pooler_output
    _assert_close(text, fx.outputs["text_embeds"], FEATURE_ATOL, "text_embeds")
    _assert_close(frames, fx.outputs["video_frame_embeds"], FEATURE_ATOL, "video_frame_embeds")
    per_pair = frames[fx.text_to_video]
    _assert_close(per_pair, fx.outputs["video_frame_embeds_per_pair"], FEATURE_ATOL, "video_frame_embeds_per_pair")


def test_pooling(fx):
    with torch.no_grad():
        pooled = fx.model.frame_pooling(fx.outputs["text_embeds"], fx.outputs["video_frame_embeds"])
    _assert_close(pooled, fx.outputs["video_pooled"], FEATURE_ATOL, "video_pooled")


def test_radius(fx):
    with torch.no_grad():
        log_radius = fx.model.radius(fx.outputs["text_embeds"], fx.outputs["video_frame_embeds"])
    _assert_close(log_radius, fx.outputs["log_radius"], TENSOR_ATOL, "log_radius")


def test_samples_best_trial_and_selected_text(fx):
    text, frames = fx.outputs["text_embeds"], fx.outputs["video_frame_embeds"]
    noise = fx.noise["inference"]  # [N_v, T, N_t, D]
    assert noise.shape[1] == fx.tmass["stochasic_trials"]
    with torch.no_grad():
        pooled = fx.model.frame_pooling(text, frames)
        log_radius = fx.model.radius(text, frames)
        samples = sample_text_mass(text[None, None], log_radius[:, None], noise)
        radius = log_radius.exp()
        per_video = [  # the scoring's per-pair kernel, one video at a time as the official trial loop
            best_of_per_pair_trials(text, radius[v], pooled[v], pooled[v].norm(dim=-1), [noise[v].clone()],
                                    want_selected=True, return_trial=True)
            for v in range(frames.shape[0])
        ]
        best_cosine = torch.stack([cosine for cosine, _, _ in per_video])
        selected = torch.stack([winner for _, winner, _ in per_video])
        best_trial = torch.stack([trial for _, _, trial in per_video])
    _assert_close(samples, fx.outputs["stochastic_samples"], TENSOR_ATOL, "stochastic_samples")
    assert torch.equal(best_trial, fx.outputs["best_trial"]), "best trial differs from the reference"
    _assert_close(selected, fx.outputs["selected_text"], TENSOR_ATOL, "selected_text")
    reference_best = fx.outputs["trial_cosines"].gather(1, fx.outputs["best_trial"][:, None]).squeeze(1)
    _assert_close(best_cosine, reference_best, TENSOR_ATOL, "best trial cosine")


# ---------------------------------------------------------------------------------------------------------------------
# Similarities
# ---------------------------------------------------------------------------------------------------------------------


def _similarity(fx, protocol: str, chunk_size: int | None = None) -> torch.Tensor:
    return fx.model.similarity(
        fx.outputs["text_embeds"],
        fx.outputs["video_frame_embeds"],
        protocol=protocol,
        noise="per_pair",
        noise_tensor=fx.noise["inference"],
        text_to_video=fx.text_to_video,
        chunk_size=chunk_size,
    )


def test_sims_paper_protocol(fx):
    num_videos = fx.outputs["video_frame_embeds"].shape[0]
    for chunk_size in [None, *sorted({1, 2, num_videos})]:
        sims = _similarity(fx, "paper", chunk_size)
        _assert_close(sims, fx.outputs["sims_paper"], TENSOR_ATOL, f"sims_paper (chunk {chunk_size})")
    grouped = group_by_video(sims, fx.text_to_video)
    _assert_close(grouped, fx.outputs["sims_paper_grouped"], TENSOR_ATOL, "sims_paper_grouped")


def test_sims_official_protocol(fx):
    num_videos = fx.outputs["video_frame_embeds"].shape[0]
    for chunk_size in [None, *sorted({1, 2, num_videos})]:
        sims = _similarity(fx, "official", chunk_size)
        _assert_close(sims, fx.outputs["sims_official"], TENSOR_ATOL, f"sims_official (chunk {chunk_size})")


def test_sims_official_dsl(fx):
    sims = _similarity(fx, "official")
    _assert_close(dual_softmax(sims, dim=0), fx.outputs["sims_official_dsl"].double(), TENSOR_ATOL, "DSL sims")
    # The reference's own tensor through our float64 DSL gives the same values too.
    reference = dual_softmax(fx.outputs["sims_official"], dim=0)
    _assert_close(reference, fx.outputs["sims_official_dsl"].double(), TENSOR_ATOL, "DSL of reference sims")


def test_similarity_from_encoded_inputs_end_to_end(fx):
    """Features -> similarity in one go reproduces the reference sims (features to 1e-6 keep them within 1e-5)."""
    with torch.no_grad():
        text = fx.model.get_text_features(fx.inputs["input_ids"], fx.inputs["attention_mask"]).pooler_output
        frames = fx.model.get_video_features(fx.inputs["pixel_values"]).pooler_output
    sims = fx.model.similarity(text, frames, noise_tensor=fx.noise["inference"], text_to_video=fx.text_to_video)
    _assert_close(sims, fx.outputs["sims_paper"], 1e-4, "end-to-end sims_paper")


# ---------------------------------------------------------------------------------------------------------------------
# Metrics (to 1e-9)
# ---------------------------------------------------------------------------------------------------------------------


def _to_reference_names(metrics: dict) -> dict:
    names = {f"R@{k}": f"R{k}" for k in EXPECTED_KS} | {"MdR": "MedR", "MnR": "MeanR"}
    return {names[k]: v for k, v in metrics.items()}


def _assert_metrics(actual: dict, expected: dict, what: str) -> None:
    actual = _to_reference_names(actual)
    assert set(actual) == set(expected), f"{what}: metric names {sorted(actual)} vs {sorted(expected)}"
    for name, value in expected.items():
        assert abs(actual[name] - value) <= METRIC_ATOL, f"{what} {name}: {actual[name]} vs {value}"


def _grouped_metrics(sims: torch.Tensor, expected: dict, what: str) -> None:
    checks = {"t2v": lambda s: grouped_t2v_metrics(s, ks=EXPECTED_KS), "v2t": lambda s: grouped_v2t_metrics(s, ks=EXPECTED_KS)}
    for direction, function in checks.items():
        if direction in expected:
            _assert_metrics(function(sims), expected[direction], f"{what} {direction}")
        if f"{direction}_dsl" in expected:
            _assert_metrics(function(dual_softmax(sims, dim=0)), expected[f"{direction}_dsl"], f"{what} {direction}+DSL")


def test_metrics_official_protocol(fx):
    _grouped_metrics(_similarity(fx, "official"), fx.expected["metrics_official"], "official")
    _grouped_metrics(fx.outputs["sims_official"], fx.expected["metrics_official"], "official (reference sims)")
    validation = fx.expected["validation_result_reference"]
    t2v = _to_reference_names(grouped_t2v_metrics(_similarity(fx, "official"), ks=EXPECTED_KS))
    for name, value in t2v.items():
        assert abs(validation[name] - value) <= METRIC_ATOL, name


def test_metrics_paper_protocol(fx):
    sims = _similarity(fx, "paper")
    expected = fx.expected["metrics_paper_protocol"]
    _grouped_metrics(group_by_video(sims, fx.text_to_video), expected, "paper")
    _grouped_metrics(fx.outputs["sims_paper_grouped"], expected, "paper (reference sims)")
    # The flat layout gives the same plain numbers (the fixtures' inputs hold no ties).
    _assert_metrics(t2v_metrics(sims, fx.text_to_video, ks=EXPECTED_KS), expected["t2v"], "paper flat t2v")
    _assert_metrics(v2t_metrics(sims, fx.text_to_video, ks=EXPECTED_KS), expected["v2t"], "paper flat v2t")


def test_metrics_random_and_ragged_sims(fx):
    _grouped_metrics(fx.metrics_inputs["random_sims"], fx.expected["metrics_random_sims"], "random sims")
    ragged = fx.metrics_inputs["ragged_sims"]
    counts = fx.metrics_inputs["ragged_captions_per_video"]
    slots = torch.arange(ragged.shape[1])
    assert torch.isinf(ragged[slots[None, :] >= counts[:, None]]).all(), "ragged padding rows are not -inf"
    _grouped_metrics(ragged, fx.expected["metrics_ragged_sims"], "ragged sims")


# ---------------------------------------------------------------------------------------------------------------------
# Training: losses, support text, gradient norm, optimizer steps
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class TrainingRun:
    steps: list[dict]
    model: TMassModel


_TRAINED: dict[Path, TrainingRun] = {}


def _train(fx) -> TrainingRun:
    """Replay every training step of the fixture: forward with the recorded noise, backward, pre-clip gradient
    norm, clip to 1.0, legacy AdamW step (two groups: `clip.*` / the rest), schedule step, logit-scale clamp."""
    if fx.path in _TRAINED:
        return _TRAINED[fx.path]
    model = fx.convert().train()
    tmass, optimizer_facts = fx.tmass, fx.config["optimizer"]
    clip_params = [p for n, p in model.named_parameters() if n.startswith("clip.")]
    new_params = [p for n, p in model.named_parameters() if not n.startswith("clip.")]
    optimizer = LegacyAdamW(
        [{"params": clip_params, "lr": tmass["clip_lr"]}, {"params": new_params, "lr": tmass["noclip_lr"]}],
        weight_decay=tmass["weight_decay"],
    )
    schedule = get_warmup_cosine_schedule(
        optimizer, optimizer_facts["num_warmup_steps"], optimizer_facts["num_training_steps"]
    )
    steps = []
    for step, batch in enumerate(fx.config["train_batches"]):
        texts = torch.tensor(batch)
        videos = fx.text_to_video[texts]
        output = model(
            input_ids=fx.inputs["input_ids"][texts],
            attention_mask=fx.inputs["attention_mask"][texts],
            pixel_values_videos=fx.inputs["pixel_values"][videos],
            noise=fx.noise[f"train.step{step}"],
            return_loss=True,
        )
        lrs = [group["lr"] for group in optimizer.param_groups]
        logit_scale = model.clip.logit_scale.detach().clone()
        optimizer.zero_grad()
        output.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        schedule.step()
        model.clamp_logit_scale_()
        steps.append({"output": output, "grad_norm": float(grad_norm), "lrs": lrs, "logit_scale": logit_scale})
    _TRAINED[fx.path] = TrainingRun(steps=steps, model=model)
    return _TRAINED[fx.path]


def test_training_step_tensors(fx):
    run = _train(fx)
    for step, record in enumerate(run.steps):
        output, prefix = record["output"], f"train.step{step}."
        checks = {
            "text_embeds": output.text_embeds,
            "video_pooled": output.video_pooled,
            "log_radius": output.log_radius,
            "text_stochastic": output.text_stochastic,
            "text_support": output.text_support,
        }
        for name, tensor in checks.items():
            _assert_close(tensor.detach(), fx.outputs[prefix + name], TENSOR_ATOL, prefix + name)
        # The logits are exp(logit_scale) * S, with the logit scale in force before this step.
        scale = record["logit_scale"].exp()
        _assert_close(output.logits_per_text.detach() / scale, fx.outputs[prefix + "sims"], TENSOR_ATOL, prefix + "sims")
        _assert_close(
            output.logits_per_text_support.detach() / scale,
            fx.outputs[prefix + "sims_support"],
            TENSOR_ATOL,
            prefix + "sims_support",
        )
        assert torch.equal(output.logits_per_video, output.logits_per_text.t())


def test_training_losses_and_grad_norm(fx):
    run = _train(fx)
    expected_losses = fx.expected["train_losses_per_step"]
    optimizer_facts = fx.config["optimizer"]
    assert len(run.steps) == len(expected_losses) == len(fx.config["train_batches"])
    weight = fx.tmass["support_loss_weight"]
    for step, record in enumerate(run.steps):
        output, expected = record["output"], expected_losses[step]
        assert abs(float(output.loss_main.detach()) - expected["loss"]) <= 1e-5, step
        assert abs(float(output.loss_support.detach()) - expected["loss_support"]) <= 1e-5, step
        assert abs(float(output.loss.detach()) - expected["loss_total"]) <= 1e-5, step
        assert abs(float(output.loss.detach()) - (float(output.loss_main.detach()) + weight * float(output.loss_support.detach()))) <= 1e-6
        reference_norm = optimizer_facts["grad_norm_before_clip_per_step"][step]
        assert abs(record["grad_norm"] - reference_norm) <= 1e-5 * reference_norm, (record["grad_norm"], reference_norm)
        assert record["lrs"] == pytest.approx(optimizer_facts["lr_used_per_step"][step], rel=1e-9, abs=1e-15)
    mean_total = sum(float(r["output"].loss.detach()) for r in run.steps) / len(run.steps)
    assert abs(mean_total - fx.expected["train_epoch_mean_total_loss"]) <= 1e-5


def test_weights_after_training_steps(fx):
    run = _train(fx)
    state = run.model.state_dict()
    compared = 0
    for key, reference in fx.outputs.items():
        if not key.startswith("after_train."):
            continue
        official_key = key[len("after_train.") :]
        if official_key in DEAD_KEYS:
            continue  # `learnable_scalar`: unused by the reference, dropped by the converter
        _assert_close(state[rename_official_key(official_key)], reference, WEIGHT_ATOL, key)
        compared += 1
    assert compared > 0


@pytest.mark.parametrize("fixture_dir", _fixture_params("official_checkpoint.pth"))
def test_official_checkpoint_equals_trained_weights(fixture_dir):
    fx = _LOADED.setdefault(fixture_dir, TMassFixture.load(fixture_dir))
    checkpoint = torch.load(str(fixture_dir / "official_checkpoint.pth"), map_location="cpu", weights_only=True)
    assert set(checkpoint) >= {"epoch", "state_dict", "optimizer"}
    converted = fx.convert("official_checkpoint.pth")
    assert converted.config.num_frames == fx.tmass["num_frames"]
    converted_state = converted.state_dict()
    for key, reference in fx.outputs.items():
        official_key = key[len("after_train.") :]
        if key.startswith("after_train.") and official_key not in DEAD_KEYS:
            _assert_close(converted_state[rename_official_key(official_key)], reference, WEIGHT_ATOL, key)
    # Every converted weight equals our own replay of the training steps.
    trained_state = _train(fx).model.state_dict()
    assert set(trained_state) == set(converted_state)
    for key, tensor in converted_state.items():
        _assert_close(trained_state[key], tensor, WEIGHT_ATOL, key)
    # The raw state dict inside the wrapper reads the same.
    raw = load_official_state_dict(fixture_dir / "official_checkpoint.pth")
    assert set(raw) == set(checkpoint["state_dict"])


# ---------------------------------------------------------------------------------------------------------------------
# Other sizes: vectorised similarity vs a literal per-video loop of the pooling, radius and evaluation (not tuned to any fixture)
# ---------------------------------------------------------------------------------------------------------------------


def _random_tmass(seed: int, *, embed_dim: int, num_frames: int, heads: int, prior: str, std: float) -> TMassModel:
    return random_tmass(seed, dim=embed_dim, frames=num_frames, heads=heads, prior=prior, std=std, trials=5,
                        dropout=0.0, unit_gains=("norm1",))


def _literal_pool(model: TMassModel, text: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """The X-Pool pooling written out for ONE text and ONE video, head by head."""
    pooling = model.frame_pooling
    attention = pooling.cross_attn
    eps = model.config.pooling_layer_norm_eps
    dim, heads = text.shape[-1], attention.num_heads
    head_dim = dim // heads

    def layer_norm(x, norm):
        return F.layer_norm(x, (dim,), norm.weight, norm.bias, eps)

    def linear(x, layer):
        return x @ layer.weight.T + layer.bias

    text_n, frames_n = layer_norm(text, pooling.layer_norm1), layer_norm(frames, pooling.layer_norm1)
    query, keys, values = linear(text_n, attention.q_proj), linear(frames_n, attention.k_proj), linear(frames_n, attention.v_proj)
    parts = []
    for h in range(heads):
        span = slice(h * head_dim, (h + 1) * head_dim)
        logits = torch.stack([keys[i, span] @ query[span] for i in range(frames.shape[0])]) / math.sqrt(head_dim)
        weights = torch.softmax(logits, dim=0)
        parts.append(sum(weights[i] * values[i, span] for i in range(frames.shape[0])))
    x = layer_norm(linear(torch.cat(parts), attention.out_proj), pooling.layer_norm2)
    return layer_norm(x + linear(x, pooling.linear_proj), pooling.layer_norm3)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a / a.norm()) @ (b / b.norm())


def _literal_official_evaluation(model, text, frames, text_to_video, trials, prior, std, generator):
    """The evaluation as the official code runs it: per video, radius per text, trial by trial with one [N_t, D] draw each,
    best trial per text, then the official regrouping and (leaking) similarity, and the paper scores."""
    num_texts, num_videos = text.shape[0], frames.shape[0]
    selected = torch.empty(num_videos, num_texts, text.shape[1])
    pooled = torch.empty(num_videos, num_texts, text.shape[1])
    paper = torch.empty(num_texts, num_videos)
    weight, bias = model.radius.linear_proj.weight, model.radius.linear_proj.bias
    for a in range(num_videos):
        for n in range(num_texts):
            pooled[a, n] = _literal_pool(model, text[n], frames[a])
        log_radius = torch.stack(
            [weight @ torch.stack([_cos(text[n], frames[a, i]) for i in range(frames.shape[1])]) + bias for n in range(num_texts)]
        )
        best = torch.full((num_texts,), -float("inf"))
        for _ in range(trials):
            if prior == "uniform01":
                eps = torch.rand(num_texts, text.shape[1], generator=generator)
            else:
                eps = torch.normal(0.0, std, size=(num_texts, text.shape[1]), generator=generator)
            for n in range(num_texts):
                sample = text[n] + eps[n] * torch.exp(log_radius[n])
                cosine = _cos(sample, pooled[a, n])
                if cosine > best[n]:  # strict: the first trial wins ties
                    best[n] = cosine
                    selected[a, n] = sample / sample.norm()
        paper[:, a] = best
    captions = [[n for n in range(num_texts) if text_to_video[n] == j] for j in range(num_videos)]
    max_captions = max(len(c) for c in captions)
    official = torch.full((num_videos, max_captions, num_videos), float("nan"))
    for j in range(num_videos):
        for c, n in enumerate(captions[j]):
            for a in range(num_videos):
                if c < len(captions[a]):
                    official[j, c, a] = _cos(selected[a, n], pooled[a, captions[a][c]])
    return paper, official


@pytest.mark.parametrize(
    "setting",
    [
        # two heads, F=3, normal prior with a block size (N_t * D = 60) that is not a multiple of 16
        dict(seed=3, embed_dim=10, num_frames=3, heads=2, prior="normal", std=0.5, captions=(2, 1, 3), trials=4),
        # uniform prior, F=5, one head, texts listed out of video order
        dict(seed=11, embed_dim=8, num_frames=5, heads=1, prior="uniform01", std=1.0, captions=(1, 3, 2, 1), trials=3),
    ],
    ids=["2heads-F3-normal-ragged213", "1head-F5-uniform-ragged1321"],
)
def test_vectorised_similarity_matches_literal_loop(setting):
    model = _random_tmass(
        setting["seed"], embed_dim=setting["embed_dim"], num_frames=setting["num_frames"], heads=setting["heads"],
        prior=setting["prior"], std=setting["std"],
    )
    data = torch.Generator().manual_seed(setting["seed"] + 100)
    captions = setting["captions"]
    text_to_video = torch.tensor([v for v, count in enumerate(captions) for _ in range(count)])
    text_to_video = text_to_video[torch.randperm(len(text_to_video), generator=data)]
    text = torch.randn(len(text_to_video), setting["embed_dim"], generator=data)
    frames = torch.randn(len(captions), setting["num_frames"], setting["embed_dim"], generator=data)
    trials = setting["trials"]

    with torch.no_grad():
        paper_ref, official_ref = _literal_official_evaluation(
            model, text, frames, text_to_video, trials, setting["prior"], setting["std"], torch.Generator().manual_seed(7)
        )
        for chunk_size in (1, 2, len(captions)):
            for protocol, reference in (("paper", paper_ref), ("official", official_ref)):
                sims = model.similarity(
                    text, frames, num_trials=trials, protocol=protocol, noise="per_pair", text_to_video=text_to_video,
                    generator=torch.Generator().manual_seed(7), chunk_size=chunk_size,
                )
                _assert_close(sims, reference, 1e-5, f"{protocol} sims, chunk {chunk_size}")
    # The official NaN pattern on ragged caption sets: missing caption rows and columns of videos without a c-th
    # caption.
    counts = torch.tensor(captions)
    slot = torch.arange(official_ref.shape[1])
    missing = slot[None, :] >= counts[:, None]  # [N_v, C]
    expected_nan = missing[:, :, None] | missing.T[None, :, :]
    assert torch.equal(torch.isnan(official_ref), expected_nan)
