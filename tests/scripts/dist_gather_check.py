"""Run under `accelerate launch --multi_gpu --num_processes 2` (CPU, gloo): the gradient of a
contrastive loss on embeddings gathered with `gather_with_grad` must equal the single-process gradient
on the full batch. Writes a JSON report to argv[1] from the main process."""

import copy
import json
import sys

import torch
from accelerate import Accelerator

from video_text_retrieval.training.distributed import gather_with_grad


def symmetric_info_nce(text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    logits = torch.nn.functional.normalize(text, dim=-1) @ torch.nn.functional.normalize(video, dim=-1).T * 10.0
    targets = torch.arange(len(text))
    return 0.5 * (torch.nn.functional.cross_entropy(logits, targets) + torch.nn.functional.cross_entropy(logits.T, targets))


class TwoTowers(torch.nn.Module):
    """Two encoders before the gather and a head used after it (on the global batch)."""

    def __init__(self):
        super().__init__()
        self.text = torch.nn.Linear(6, 4)
        self.video = torch.nn.Linear(5, 4)
        self.head = torch.nn.Linear(4, 4)

    def forward(self, text_inputs, video_inputs, gather=lambda x: x):
        text, video = gather(self.text(text_inputs)), gather(self.video(video_inputs))
        return symmetric_info_nce(self.head(text), video)


def main(report_path: str) -> None:
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = TwoTowers()
    reference = copy.deepcopy(model)
    text_inputs, video_inputs = torch.randn(8, 6), torch.randn(8, 5)

    # Full batch, one process.
    ref_loss = reference(text_inputs, video_inputs)
    ref_loss.backward()

    # Each rank holds its slice; the loss uses everyone's embeddings.
    model = accelerator.prepare(model)
    per_rank = 8 // accelerator.num_processes
    local = slice(accelerator.process_index * per_rank, (accelerator.process_index + 1) * per_rank)
    loss = model(text_inputs[local], video_inputs[local], gather=gather_with_grad)
    accelerator.backward(loss)

    unwrapped = accelerator.unwrap_model(model)
    max_grad_diff = max(
        (p.grad - q.grad).abs().max().item() for p, q in zip(unwrapped.parameters(), reference.parameters())
    )

    # Uneven local batches (samples dropped on one process): rank 0 holds 5 pairs, rank 1 holds 3.
    unwrapped.zero_grad()
    uneven = slice(0, 5) if accelerator.process_index == 0 else slice(5, 8)
    uneven_loss = model(text_inputs[uneven], video_inputs[uneven], gather=gather_with_grad)
    accelerator.backward(uneven_loss)
    max_grad_diff_uneven = max(
        (p.grad - q.grad).abs().max().item() for p, q in zip(unwrapped.parameters(), reference.parameters())
    )
    if accelerator.is_main_process:
        with open(report_path, "w") as handle:
            json.dump(
                {
                    "num_processes": accelerator.num_processes,
                    "loss": loss.item(),
                    "reference_loss": ref_loss.item(),
                    "max_grad_diff": max_grad_diff,
                    "uneven_loss": uneven_loss.item(),
                    "max_grad_diff_uneven": max_grad_diff_uneven,
                },
                handle,
            )


if __name__ == "__main__":
    main(sys.argv[1])
    # Tear the process group down before the interpreter exits: a gloo group left to the atexit
    # machinery can abort a rank ("terminate called without an active exception").
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
