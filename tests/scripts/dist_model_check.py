"""Run under `accelerate launch --multi_gpu --num_processes 2` (CPU, gloo). For a tiny T-MASS and a tiny
UNIFY (stage 1), the training step of `RetrievalTrainingModule` on two processes (4 pairs each, embeddings
gathered with gradient) must give the loss and the gradients of one process on all 8 pairs.
Writes a JSON report to argv[1] from the main process."""

import copy
import json
import sys
from unittest import mock

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs

import video_text_retrieval.training.tasks as tasks
from modeling_tmass import TMassConfig, TMassModel
from modeling_unify import UnifyConfig, UnifyModel
from video_text_retrieval.training.tasks import RetrievalTrainingModule, StepContext

VOCAB, FRAMES, BATCH = 40, 3, 8


def tiny_model(kind: str):
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    if kind == "tmass":
        text = dict(tower, vocab_size=VOCAB, max_position_embeddings=16, bos_token_id=VOCAB - 2, eos_token_id=VOCAB - 1, pad_token_id=VOCAB - 1)
        vision = dict(tower, image_size=32, patch_size=8)
        config = TMassConfig(clip_config={"text_config": text, "vision_config": vision, "projection_dim": 32},
                             num_frames=FRAMES, pooling_dropout=0.0, support_loss_weight=0.8)
        return TMassModel(config)
    text = dict(tower, vocab_size=VOCAB, max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    vision = dict(tower, image_size=32, patch_size=8, num_frames=FRAMES)
    return UnifyModel(UnifyConfig(text_config=text, vision_config=vision, num_shared_layers=1, projection_dim=16))


def make_batch(generator):
    input_ids = torch.randint(3, VOCAB - 2, (BATCH, 7), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = VOCAB - 2, VOCAB - 1
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values_videos": torch.randn(BATCH, FRAMES, 3, 32, 32, generator=generator),
    }


def context():
    return StepContext(
        step=0, total_steps=10, generator=torch.Generator().manual_seed(7), local_generator=torch.Generator().manual_seed(8),
        distill_weight=1.0,  # UNIFY's schedule at its first step
    )


def main(report_path: str) -> None:
    accelerator = Accelerator(cpu=True, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    report = {"num_processes": accelerator.num_processes}
    for kind in ("tmass", "unify"):
        torch.manual_seed(0)
        model = tiny_model(kind)
        reference = copy.deepcopy(model)
        task = tasks.TASKS[kind]()
        batch = make_batch(torch.Generator().manual_seed(1))
        if kind == "unify":
            reference.set_training_stage(1)

        # One process, all 8 pairs.
        with mock.patch.object(tasks, "gather_with_grad", lambda x: x):
            reference_loss = task.training_losses(reference, batch, context())["loss"]
        reference_loss.backward()

        # Two processes, 4 pairs each; wrapped with everything trainable, then staged (as the script does).
        module = accelerator.prepare(RetrievalTrainingModule(model, task))
        if kind == "unify":
            accelerator.unwrap_model(module).model.set_training_stage(1)
        per_rank = BATCH // accelerator.num_processes
        local = slice(accelerator.process_index * per_rank, (accelerator.process_index + 1) * per_rank)
        loss = module({name: value[local] for name, value in batch.items()}, context())["loss"]
        accelerator.backward(loss)

        unwrapped = accelerator.unwrap_model(module).model
        diffs, frozen_with_grad, largest = [], 0, 0.0
        for p, q in zip(unwrapped.parameters(), reference.parameters()):
            if q.grad is None:
                frozen_with_grad += int(p.grad is not None and bool(p.grad.abs().sum() > 0))
                continue
            diffs.append((p.grad - q.grad).abs().max().item())
            largest = max(largest, q.grad.abs().max().item())
        report[kind] = {
            "loss": loss.item(),
            "reference_loss": reference_loss.item(),
            "max_grad_diff": max(diffs),
            "max_grad": largest,
            "num_parameters_compared": len(diffs),
            "frozen_parameters_with_gradient": frozen_with_grad,
        }
    if accelerator.is_main_process:
        with open(report_path, "w") as handle:
            json.dump(report, handle)


if __name__ == "__main__":
    main(sys.argv[1])
    # Tear the process group down before the interpreter exits: a gloo group left to the atexit
    # machinery can abort a rank ("terminate called without an active exception").
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
