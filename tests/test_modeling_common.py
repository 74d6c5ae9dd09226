"""The project's common model tests, written once and run on both models (tiny `TMassModel` and tiny `UnifyModel`),
in the spirit of transformers' `ModelTesterMixin` (whose test folder does not ship in the wheel): save/load round
trip, Auto classes, remote code without our packages, dtype loading, gradient checkpointing, SDPA vs eager,
meta-device construction, determinism, and the transformers conventions every model should follow."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel

from modeling_tmass import TMassConfig, TMassModel
from modeling_unify import UnifyConfig, UnifyModel
from tests import test_tmass_model as tmass_tests
from tests import test_unify_model as unify_tests


@dataclass
class ModelCase:
    """How to build a tiny model of one kind and a training batch for it."""

    name: str
    model_class: type
    config_class: type
    build: Callable[[int], torch.nn.Module]  # seed -> model in eval mode, distinctive weights
    inputs: Callable[[], dict]  # a batch for forward(..., return_loss=True), noise included where drawn
    remote_files: tuple[str, ...]
    compared: tuple[str, ...] = ("loss", "logits_per_video")


def _tmass_inputs() -> dict:
    inputs = tmass_tests.tiny_inputs()
    inputs["noise"] = torch.rand(3, tmass_tests.EMBED_DIM, generator=torch.Generator().manual_seed(7))
    return inputs


CASES = {
    "tmass": ModelCase(
        name="tmass", model_class=TMassModel, config_class=TMassConfig,
        build=lambda seed: tmass_tests.tiny_model(seed=seed), inputs=_tmass_inputs,
        remote_files=("configuration_tmass.py", "modeling_tmass.py", "scoring_tmass.py"),
    ),
    "unify": ModelCase(
        name="unify", model_class=UnifyModel, config_class=UnifyConfig,
        build=lambda seed: unify_tests.tiny_model(seed=seed).eval(), inputs=lambda: unify_tests.full_inputs(batch=3),
        remote_files=("configuration_unify.py", "modeling_unify.py"),
    ),
}


@pytest.fixture(params=sorted(CASES))
def case(request) -> ModelCase:
    return CASES[request.param]


def _outputs(model, inputs: dict, case: ModelCase) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        output = model(**inputs, return_loss=True)
    return {name: output[name] for name in case.compared}


def _assert_outputs(actual: dict, expected: dict, exact: bool, what: str) -> None:
    for name, tensor in expected.items():
        if exact:
            assert torch.equal(actual[name], tensor), f"{what}: {name} differs"
        else:
            torch.testing.assert_close(actual[name], tensor, atol=1e-5, rtol=1e-5, msg=f"{what}: {name}")


def _architecture(config_dict: dict) -> dict:
    """A config dict without the fields `from_pretrained` fills in."""
    return {
        key: _architecture(value) if isinstance(value, dict) else value
        for key, value in config_dict.items()
        if key not in ("_name_or_path", "dtype")
    }


# ---------------------------------------------------------------------------------------------------------------------
# Conventions
# ---------------------------------------------------------------------------------------------------------------------


def test_main_input_name_is_forwards_first_argument(case):
    names = [name for name in inspect.signature(case.model_class.forward).parameters if name != "self"]
    assert case.model_class.main_input_name == names[0] == "input_ids"


def test_return_loss_is_off_by_default(case):
    parameter = inspect.signature(case.model_class.forward).parameters["return_loss"]
    assert parameter.default is None


# ---------------------------------------------------------------------------------------------------------------------
# Save / load, Auto classes, remote code, dtype
# ---------------------------------------------------------------------------------------------------------------------


def test_save_load_round_trip(case, tmp_path):
    model, inputs = case.build(0), case.inputs()
    model.save_pretrained(tmp_path)
    loaded, info = case.model_class.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert _architecture(loaded.config.to_dict()) == _architecture(model.config.to_dict())
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    _assert_outputs(_outputs(loaded.eval(), inputs, case), _outputs(model, inputs, case), exact=True, what="reload")


def test_auto_classes_load_the_folder(case, tmp_path):
    model, inputs = case.build(0), case.inputs()
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), case.config_class)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is case.model_class
    _assert_outputs(_outputs(loaded.eval(), inputs, case), _outputs(model, inputs, case), exact=True, what="auto")


def test_save_pretrained_writes_remote_code_without_registration_by_the_caller(case, tmp_path):
    case.build(0).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    stem = case.model_class.__module__.split(".")[-1]
    assert config["auto_map"] == {
        "AutoConfig": f"{case.config_class.__module__.split('.')[-1]}.{case.config_class.__name__}",
        "AutoModel": f"{stem}.{case.model_class.__name__}",
    }
    for name in case.remote_files:
        assert (tmp_path / name).is_file(), name


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
    for package in BLOCKED:
        try:
            __import__(package)
            raise SystemExit(f"the blocker failed: {package} was importable")
        except ModuleNotFoundError:
            pass

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModel

    folder, fields = sys.argv[1], sys.argv[2].split(",")
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    inputs = load_file(folder + "/test_inputs.safetensors")
    with torch.no_grad():
        output = model(**inputs, return_loss=True)
    results = {name: output[name].reshape(-1).contiguous() for name in fields}
    extra = folder + "/test_similarity_inputs.safetensors"
    import os
    if os.path.exists(extra):  # T-MASS: retrieval scores with injected noise, through the copied scoring file
        scoring = load_file(extra)
        with torch.no_grad():
            results["similarity"] = model.similarity(output.text_embeds, output.video_embeds,
                                                     noise_tensor=scoring["noise_tensor"])
    save_file(results, folder + "/remote_outputs.safetensors")
    """
)


def test_remote_code_loading_without_our_packages(case, tmp_path):
    model, inputs = case.build(0), case.inputs()
    folder = tmp_path / f"{case.name}-remote"
    model.save_pretrained(folder)
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(folder / "test_inputs.safetensors"))
    noise_tensor = None
    if case.name == "tmass":
        noise_tensor = torch.rand(3, model.config.num_trials, 3, tmass_tests.EMBED_DIM)
        save_file({"noise_tensor": noise_tensor}, str(folder / "test_similarity_inputs.safetensors"))
    script = tmp_path / "load_remote.py"
    script.write_text(_REMOTE_SCRIPT)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, str(script), str(folder), ",".join(case.compared)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = load_file(str(folder / "remote_outputs.safetensors"))
    with torch.no_grad():
        local = model(**inputs, return_loss=True)
    for name in case.compared:
        assert torch.equal(remote[name], local[name].reshape(-1)), name
    if noise_tensor is not None:
        with torch.no_grad():
            sims = model.similarity(local.text_embeds, local.video_embeds, noise_tensor=noise_tensor)
        assert torch.equal(remote["similarity"], sims)


def test_loading_with_a_dtype(case, tmp_path):
    model, inputs = case.build(0), case.inputs()
    model.save_pretrained(tmp_path)
    half = case.model_class.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    dtypes = {p.dtype for p in half.parameters() if p.is_floating_point()}
    assert dtypes == {torch.bfloat16}, dtypes
    inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}
    with torch.no_grad():
        output = half(**inputs, return_loss=True)
    assert torch.isfinite(output.loss.float())
    reference = _outputs(model, case.inputs(), case)["loss"]
    assert abs(float(output.loss) - float(reference)) < 0.1 * abs(float(reference)) + 0.1


# ---------------------------------------------------------------------------------------------------------------------
# Training conventions: gradient checkpointing, attention implementations
# ---------------------------------------------------------------------------------------------------------------------


def _gradients(model, inputs) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(**inputs, return_loss=True).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients(case):
    model, inputs = case.build(0).train(), case.inputs()
    assert model.supports_gradient_checkpointing
    plain = _gradients(model, inputs)
    enable = getattr(model, "activation_checkpointing_enable", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if enable is not None:
            enable()
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert any(getattr(module, "gradient_checkpointing", False) for module in model.modules())
    checkpointed = _gradients(model, inputs)
    assert plain and set(plain) == set(checkpointed)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-4, msg=name)


def test_sdpa_and_eager_attention_agree(case, tmp_path):
    model, inputs = case.build(0), case.inputs()
    assert model.config._attn_implementation == "sdpa"
    sdpa = _outputs(model, inputs, case)
    assert case.model_class._can_set_attn_implementation()
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    eager = _outputs(model, inputs, case)
    _assert_outputs(eager, sdpa, exact=False, what="eager vs sdpa")
    model.save_pretrained(tmp_path)
    loaded = case.model_class.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert loaded.config._attn_implementation == "eager"
    _assert_outputs(_outputs(loaded, inputs, case), sdpa, exact=False, what="loaded eager vs sdpa")


# ---------------------------------------------------------------------------------------------------------------------
# Construction: meta device, determinism
# ---------------------------------------------------------------------------------------------------------------------


_META_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from accelerate import init_empty_weights
    from tests.test_modeling_common import CASES

    case = CASES[sys.argv[1]]
    config = case.build(0).config
    with torch.device("meta"):
        model = case.model_class(config)
    assert all(p.device.type == "meta" for p in model.parameters()), "torch.device('meta')"
    with init_empty_weights(include_buffers=True):
        model = case.model_class(config)
    assert all(t.device.type == "meta" for t in list(model.parameters()) + list(model.buffers())), "init_empty_weights"
    """
)


@pytest.mark.parametrize("name", sorted(CASES))
def test_construction_on_the_meta_device(name, tmp_path):
    # A fresh process: construction must not depend on what earlier tests left in torch's global state.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", _META_SCRIPT, name], cwd=root, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_determinism(case):
    first, second = case.build(0), case.build(0)
    inputs = case.inputs()
    _assert_outputs(_outputs(second, inputs, case), _outputs(first, inputs, case), exact=True, what="same seed")
    if "generator" in inspect.signature(case.model_class.forward).parameters:  # noise drawn from the generator
        inputs = {k: v for k, v in inputs.items() if k != "noise"}

        def run(seed):
            with torch.no_grad():
                return first(**inputs, generator=torch.Generator().manual_seed(seed), return_loss=True).loss

        assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))
