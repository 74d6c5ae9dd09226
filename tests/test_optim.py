import math

import pytest
import torch

from video_text_retrieval.training.optim import (
    LegacyAdamW,
    get_phased_warmup_cosine_schedule,
    get_warmup_cosine_schedule,
    split_parameter_groups,
    warmup_cosine_factor,
)


def _reference_legacy_step(param, grad, state, lr, betas, eps, weight_decay):
    """Literal per-element transcription of the legacy AdamW update in float64, for comparison."""
    beta1, beta2 = betas
    state["step"] += 1
    state["m"] = beta1 * state["m"] + (1 - beta1) * grad
    state["v"] = beta2 * state["v"] + (1 - beta2) * grad * grad
    k = state["step"]
    step_size = lr * math.sqrt(1 - beta2**k) / (1 - beta1**k)
    param = param - step_size * state["m"] / (state["v"].sqrt() + eps)
    return param - lr * weight_decay * param


def test_legacy_adamw_matches_the_equations_over_three_steps():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(4, 3))
    reference = weight.detach().double().clone()
    state = {"step": 0, "m": torch.zeros_like(reference), "v": torch.zeros_like(reference)}
    optimizer = LegacyAdamW([weight], lr=0.1, weight_decay=0.2)
    for _ in range(3):
        grad = torch.randn(4, 3)
        weight.grad = grad.clone()
        optimizer.step()
        reference = _reference_legacy_step(reference, grad.double(), state, 0.1, (0.9, 0.999), 1e-6, 0.2)
    torch.testing.assert_close(weight.detach().double(), reference, atol=1e-6, rtol=0)


def test_legacy_adamw_differs_from_torch_adamw_and_skips_params_without_grad():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5))
    b = torch.nn.Parameter(a.detach().clone())
    untouched = torch.nn.Parameter(torch.randn(2))
    grad = torch.randn(5)
    a.grad, b.grad = grad.clone(), grad.clone()
    LegacyAdamW([a, untouched], lr=0.1, weight_decay=0.2).step()
    torch.optim.AdamW([b], lr=0.1, weight_decay=0.2, eps=1e-6).step()
    assert not torch.allclose(a, b)  # decay after vs before the update
    assert untouched.grad is None


def test_warmup_cosine_schedule():
    assert warmup_cosine_factor(0, 10, 100) == 0.0  # first update has lr 0 with warm-up
    assert warmup_cosine_factor(5, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine_factor(10, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine_factor(55, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine_factor(100, 10, 100) == pytest.approx(0.0)
    assert warmup_cosine_factor(0, 0, 5) == pytest.approx(1.0)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = LegacyAdamW([{"params": [param], "lr": 1.0}])
    schedule = get_warmup_cosine_schedule(optimizer, 2, 6)
    seen = []
    for _ in range(6):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert seen == pytest.approx([0.0, 0.5] + [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)])
    with pytest.raises(ValueError, match="num_warmup_steps"):
        get_warmup_cosine_schedule(optimizer, 7, 6)


def test_split_parameter_groups_orders_backbone_first_and_drops_frozen():
    model = torch.nn.ModuleDict({"clip": torch.nn.Linear(2, 2), "pool": torch.nn.Linear(2, 2)})
    model["pool"].bias.requires_grad_(False)
    groups = split_parameter_groups(
        model.named_parameters(), lambda name: name.startswith("clip."), backbone_lr=1e-6, head_lr=1e-5, weight_decay=0.2
    )
    assert [g["name"] for g in groups] == ["backbone", "new_modules"]
    assert groups[0]["params"] == [model["clip"].weight, model["clip"].bias]
    assert groups[1]["params"] == [model["pool"].weight]
    assert groups[1]["lr"] == 1e-5 and groups[0]["weight_decay"] == 0.2


def test_phased_schedule_restarts_each_phase():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    schedule = get_phased_warmup_cosine_schedule(optimizer, [(4, 2), (3, 0)])
    seen = []
    for _ in range(8):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    phase_one = [warmup_cosine_factor(k, 2, 4) for k in range(4)]
    phase_two = [warmup_cosine_factor(k, 0, 3) for k in range(3)]
    assert seen == pytest.approx(phase_one + phase_two + [0.0])
    with pytest.raises(ValueError, match="phases"):
        get_phased_warmup_cosine_schedule(optimizer, [(3, 4)])


def test_unify_decay_groups_hold_weight_matrices_only():
    from transformers import BertConfig, BertForMaskedLM

    from video_text_retrieval.training.optim import weight_matrix_decay_groups

    model = BertForMaskedLM(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, max_position_embeddings=12))
    decayed, plain = weight_matrix_decay_groups(model, lr=1e-3, weight_decay=0.05)
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0 and decayed["lr"] == plain["lr"] == 1e-3
    names = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), set()).add(name)
    names = {key: sorted(value)[0] for key, value in names.items()}  # a tied matrix under its embedding name
    decayed_names = {names[id(p)] for p in decayed["params"]}
    plain_names = {names[id(p)] for p in plain["params"]}
    assert decayed_names and all(n.endswith("weight") and "LayerNorm" not in n and "embeddings" not in n for n in decayed_names)
    assert "bert.embeddings.word_embeddings.weight" in plain_names  # tied with the MLM decoder: an embedding
    assert any(n.endswith("bias") for n in plain_names) and any("LayerNorm" in n for n in plain_names)
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_unify_stage_schedule_follows_the_paper_recipe():
    from video_text_retrieval.training.stages import UnifyStageSchedule, warmup_steps_for

    schedule = UnifyStageSchedule(num_epochs=10, stage1_epochs=3)
    assert [schedule.stage_at_epoch(e) for e in range(10)] == [1, 1, 1] + [2] * 7
    assert schedule.lr_phase_lengths(steps_per_epoch=4) == [40]
    assert schedule.distill_weight(0, 4) == 1.0 and schedule.distill_weight(39, 4) == 0.0
    assert warmup_steps_for(40, 4, warmup_epochs=1.0, warmup_proportion=0.0) == 4  # the first epoch
    with_stage0 = UnifyStageSchedule(num_epochs=5, stage0_epochs=2, stage1_epochs=1)
    assert [with_stage0.stage_at_epoch(e) for e in range(5)] == [0, 0, 1, 2, 2]
    assert with_stage0.lr_phase_lengths(steps_per_epoch=3) == [6, 9]  # the schedule restarts after stage 0
    assert with_stage0.is_first_video_text_epoch(2) and with_stage0.distill_weight(6, 3) == 1.0
    with pytest.raises(ValueError, match="--stage1_epochs"):
        UnifyStageSchedule(num_epochs=3, stage1_epochs=4)
