import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from video_text_retrieval.training.distributed import gather_with_grad

SCRIPTS = Path(__file__).parent / "scripts"


def test_gather_with_grad_is_identity_without_distributed():
    tensor = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(tensor) is tensor


def _launch_two_processes(script: str, report: Path) -> dict:
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(SCRIPTS / script), str(report),
    ]
    # One retry: a gloo rank occasionally aborts while the interpreter shuts down, after the work is done.
    for _ in range(2):
        report.unlink(missing_ok=True)
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        if result.returncode == 0:
            break
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(report.read_text())


def test_two_process_gather_gives_the_full_batch_gradient(tmp_path):
    data = _launch_two_processes("dist_gather_check.py", tmp_path / "report.json")
    assert data["num_processes"] == 2
    assert data["loss"] == pytest.approx(data["reference_loss"], abs=1e-6)
    assert data["max_grad_diff"] < 1e-6
    # Local batches of different sizes (unreadable videos dropped on one process) gather exactly too.
    assert data["uneven_loss"] == pytest.approx(data["reference_loss"], abs=1e-6)
    assert data["max_grad_diff_uneven"] < 1e-6


def test_two_process_training_step_of_both_models_equals_one_process(tmp_path):
    data = _launch_two_processes("dist_model_check.py", tmp_path / "report.json")
    assert data["num_processes"] == 2
    for kind in ("tmass", "unify"):
        result = data[kind]
        assert result["loss"] == pytest.approx(result["reference_loss"], rel=1e-5), kind
        assert result["num_parameters_compared"] > 10
        assert result["max_grad_diff"] < 1e-5 * result["max_grad"], kind
        assert result["frozen_parameters_with_gradient"] == 0, kind
