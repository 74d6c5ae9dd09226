#!/usr/bin/env python
"""What T-MASS's stochastic trials do to the demo's scores (paper Sec. 3.2-3.3, the "paper" protocol).

At inference every (text, video) pair draws `T` texts `t + eps * r` (`eps` uniform on [0, 1) per dimension,
`r = exp(W_r s + b_r)` from the text-frame cosines `s`) and keeps the best cosine to the text-conditioned
video. The best-of-`T` can only raise a pair's score; trials help retrieval when they raise the matched pair
more than its competitors. This script measures, on the test split of a trained model folder, the score gain
`best-of-T - no-trial` for matched and for unmatched pairs, the radius relative to the text's norm, and how
much the radius differs between matched and unmatched pairs.

    python benchmarks/tmass_trial_gain.py --model-dir outputs/demo/tmass --data-dir outputs/demo/data
"""

from __future__ import annotations

import argparse
import json

import torch
from accelerate import Accelerator
from transformers import AutoModel, AutoProcessor

import modeling_tmass  # noqa: F401  (registers the Auto classes)
from video_text_retrieval.training.data import load_split
from video_text_retrieval.training.evaluation import encode_split
from video_text_retrieval.training.tasks import task_for_model


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--split", default="test")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = AutoModel.from_pretrained(args.model_dir).eval()
    processor = AutoProcessor.from_pretrained(args.model_dir)
    task = task_for_model(model)
    split = load_split(args.data_dir, args.split)
    text, frames = encode_split(model, task, processor, split, Accelerator(cpu=True), batch_size=64, num_workers=1)
    with torch.no_grad():
        trials = model.similarity(text, frames, generator=torch.Generator().manual_seed(0))
        plain = model.similarity(text, frames, num_trials=0)
        gain = (trials - plain).double()
        target = torch.as_tensor(split["text_to_video"])
        matched = torch.zeros_like(gain, dtype=torch.bool)
        matched[torch.arange(len(target)), target] = True
        # Radius of every text against its own video and against 50 other videos.
        log_radius = model.radius(text, frames)  # [N_v, N_t, D]
        radius_norm = log_radius.exp().norm(dim=-1).T.double()  # [N_t, N_v]
        text_norm = text.norm(dim=-1).double()
    result = {
        "num_trials": int(model.config.num_trials),
        "gain_matched_mean": float(gain[matched].mean()),
        "gain_unmatched_mean": float(gain[~matched].mean()),
        "gain_matched_minus_unmatched": float(gain[matched].mean() - gain[~matched].mean()),
        "plain_cosine_matched_mean": float(plain[matched].double().mean()),
        "plain_cosine_unmatched_mean": float(plain[~matched].double().mean()),
        "radius_norm_over_text_norm_matched": float((radius_norm / text_norm[:, None])[matched].mean()),
        "radius_norm_over_text_norm_unmatched": float((radius_norm / text_norm[:, None])[~matched].mean()),
        "radius_norm_matched_minus_unmatched_relative": float(radius_norm[matched].mean() / radius_norm[~matched].mean() - 1),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
