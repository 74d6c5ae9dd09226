#!/usr/bin/env python
"""Train and evaluate T-MASS or UNIFY for video-text retrieval with Accelerate.

One CPU, one GPU or many:

    accelerate launch examples/run_retrieval.py --model tmass --data_dir outputs/demo/data --output_dir outputs/tmass
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 examples/run_retrieval.py ...

Data: a folder holding `train.jsonl`, `validation.jsonl` and `test.jsonl` in the common schema
(`{"video_id", "video_path" relative to the jsonl's folder, "captions": [...]}`); the embedded
synthetic set is generated there when the folder is empty and `--dataset synthetic` (the default).
Real data sets (MSR-VTT, DiDeMo, MSVD, LSMDC) are converted to that schema with
`video_text_retrieval.data.loaders` (see the README).

Model: `--model tmass|unify` builds a small model from scratch (tokenizer built from the training
captions), or `--model_name_or_path` loads a saved folder (`AutoModel`/`AutoProcessor`).

The output folder ends up as a model folder (`AutoModel.from_pretrained(output_dir)` works) with its
processor, a model card (README.md), `metrics.json`, plots and `checkpoints/` for `--resume`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # running from a clone without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

import modeling_tmass  # noqa: E402,F401  (registers the Auto classes)
import modeling_unify  # noqa: E402,F401
from transformers import AutoModel, AutoProcessor  # noqa: E402

from video_text_retrieval.data.loaders import read_jsonl, text_to_video_index  # noqa: E402
from video_text_retrieval.metrics import dual_softmax, retrieval_metrics, text_to_video_ranks  # noqa: E402
from video_text_retrieval.optim import LegacyAdamW, get_phased_warmup_cosine_schedule, split_parameter_groups  # noqa: E402
from video_text_retrieval.tasks import RetrievalTrainingModule, StepContext, task_for_model  # noqa: E402
from video_text_retrieval.training import (  # noqa: E402
    ClipAugmentation,
    EvalVideosDataset,
    TrainPairsDataset,
    collate_pairs,
    seed_for_step,
)

logger = logging.getLogger("run_retrieval")
PROGRESS_FILE = "progress.json"


# --------------------------------------------------------------------------------------------------- arguments


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=["tmass", "unify"], help="build a small model of this kind from scratch")
    model.add_argument("--model_name_or_path", help="a saved model folder (with its processor) to fine-tune or evaluate")
    model.add_argument("--model_config", default=None, help="JSON file or string of overrides for the from-scratch model (nested dicts merge into the preset)")
    model.add_argument("--preset", default="tiny", help="from-scratch size preset (video_text_retrieval.presets.PRESETS)")
    model.add_argument("--gradient_checkpointing", action="store_true")

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="synthetic", choices=["synthetic", "jsonl"], help="synthetic: generate the embedded set into --data_dir when missing")
    data.add_argument("--data_dir", default="outputs/demo/data", help="folder with train.jsonl, validation.jsonl, test.jsonl")
    data.add_argument("--eval_split", default="validation", help="split used for evaluation during training (model selection)")
    data.add_argument("--test_split", default="test", help="split evaluated at the end")
    data.add_argument("--num_frames", type=int, default=None, help="frames per clip (default: the processor's)")
    data.add_argument("--train_frame_sampling", default="rand", help="frame sampling for training (processors.FRAME_SAMPLING_STRATEGIES)")
    data.add_argument("--crop_scale", type=float, nargs=2, default=(0.5, 1.0), help="random resized crop area range; 1 1 disables cropping")
    data.add_argument("--horizontal_flip", type=float, default=0.0, help="clip-level flip probability (keep 0 when captions name left/right)")
    data.add_argument("--num_workers", type=int, default=0)
    data.add_argument("--max_train_pairs", type=int, default=None, help="use only the first N training pairs (debugging)")

    train = parser.add_argument_group("training")
    train.add_argument("--output_dir", required=True)
    train.add_argument("--num_epochs", type=int, default=5)
    train.add_argument("--max_train_steps", type=int, default=None, help="stop after this many optimizer steps (the schedule still spans --num_epochs)")
    train.add_argument("--per_device_batch_size", type=int, default=32)
    train.add_argument("--gradient_accumulation_steps", type=int, default=1)
    train.add_argument("--learning_rate", type=float, default=1e-4, help="new modules (T-MASS pooling/radius; all of UNIFY)")
    train.add_argument("--backbone_learning_rate", type=float, default=None, help="pretrained backbone (T-MASS CLIP); default --learning_rate")
    train.add_argument("--weight_decay", type=float, default=0.2)
    train.add_argument("--warmup_proportion", type=float, default=0.1)
    train.add_argument("--optimizer", choices=["legacy_adamw", "adamw"], default=None, help="default: legacy_adamw for T-MASS (tmass.md §5.5), adamw for UNIFY")
    train.add_argument("--max_grad_norm", type=float, default=1.0)
    train.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None, help="default: accelerate launch's setting")
    train.add_argument("--seed", type=int, default=24)
    train.add_argument("--stage0_epochs", type=int, default=0, help="UNIFY: epochs of text-only MLM pretraining (from-scratch text towers)")
    train.add_argument("--stage1_epochs", type=int, default=1, help="UNIFY: epochs of stage 1 (text side frozen) after stage 0; the rest is stage 2")
    train.add_argument("--checkpointing_steps", type=int, default=0, help="save_state every N optimizer steps (0: only at the end of each epoch)")
    train.add_argument("--checkpoints_total_limit", type=int, default=2)
    train.add_argument("--resume", nargs="?", const="latest", default=None, help="resume from the latest checkpoint in output_dir/checkpoints, or from a given folder")
    train.add_argument("--overwrite_output_dir", action="store_true", help="start over even if output_dir holds checkpoints of an earlier run (they are deleted)")
    train.add_argument("--eval_every_epochs", type=int, default=1, help="evaluate --eval_split every N epochs (0: never during training)")
    train.add_argument("--eval_only", action="store_true", help="only evaluate --model_name_or_path on --test_split")

    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--eval_batch_size", type=int, default=32)
    evaluation.add_argument("--num_trials", type=int, default=None, help="T-MASS stochastic trials at inference (default: the config's)")
    evaluation.add_argument("--dsl", action="store_true", help="also report dual-softmax post-processed results (keys suffixed +DSL)")
    evaluation.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True)

    hub = parser.add_argument_group("hub")
    hub.add_argument("--push_to_hub", action="store_true")
    hub.add_argument("--hub_model_id", default=None)
    hub.add_argument("--hub_private", action="store_true")
    args = parser.parse_args(argv)
    if not args.model and not args.model_name_or_path:
        parser.error("pass --model tmass|unify (from scratch) or --model_name_or_path FOLDER")
    if args.eval_only and not args.model_name_or_path:
        parser.error("--eval_only needs --model_name_or_path")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id")
    return args


# --------------------------------------------------------------------------------------------------- data


def ensure_data(args, accelerator: Accelerator) -> Path:
    data_dir = Path(args.data_dir)
    if args.dataset == "synthetic" and not (data_dir / "dataset_info.json").is_file():
        if accelerator.is_main_process:
            from video_text_retrieval.data.synthetic import generate_synthetic_dataset

            info = generate_synthetic_dataset(data_dir, seed=0)
            accelerator.print(f"synthetic data set written to {data_dir} ({info})")
        accelerator.wait_for_everyone()
    for split in ("train", args.eval_split, args.test_split):
        if not (data_dir / f"{split}.jsonl").is_file():
            raise FileNotFoundError(f"{data_dir / (split + '.jsonl')} not found (--data_dir {data_dir}, split {split!r})")
    return data_dir


def load_split(data_dir: Path, split: str) -> dict:
    """Video-level records with absolute paths, the flattened captions and their video index."""
    records = read_jsonl(data_dir / f"{split}.jsonl")
    for record in records:
        record["video_path"] = str((data_dir / record["video_path"]).resolve())
    captions = [caption for record in records for caption in record["captions"]]
    return {"records": records, "captions": captions, "text_to_video": text_to_video_index(records)}


# --------------------------------------------------------------------------------------------------- model


def build_model_and_processor(args, train_captions: list[str]):
    if args.model_name_or_path:
        model = AutoModel.from_pretrained(args.model_name_or_path)
        processor = AutoProcessor.from_pretrained(args.model_name_or_path)
        return model, processor
    from video_text_retrieval.presets import build_from_scratch

    overrides = {}
    if args.model_config:
        text = args.model_config
        if not text.lstrip().startswith("{"):
            if not Path(text).is_file():
                raise FileNotFoundError(f"--model_config {text!r} is neither a JSON object nor an existing file")
            text = Path(text).read_text()
        overrides = json.loads(text)
    return build_from_scratch(args.model, args.preset, train_captions, num_frames=args.num_frames, **overrides)


def video_normalisation(processor) -> tuple[int, list[float], list[float]]:
    video_processor = processor.video_processor
    crop = video_processor.crop_size
    size = crop["height"] if isinstance(crop, dict) else crop.height
    return int(size), list(video_processor.image_mean), list(video_processor.image_std)


# --------------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def encode_split(model, task, processor, split: dict, accelerator: Accelerator, args):
    """Text features of every caption and video features of every video, gathered on every process."""
    model.eval()
    tokenizer = processor.tokenizer
    # Each process encodes a contiguous shard of the videos, padded to equal length with its last video,
    # so that the gathered tensor lists the videos in order followed by the padding. (A loader from
    # `accelerator.prepare` would be registered for checkpointing, which evaluation loaders must not be.)
    num_videos = len(split["records"])
    per_process = math.ceil(num_videos / accelerator.num_processes)
    first = accelerator.process_index * per_process
    shard = [min(i, num_videos - 1) for i in range(first, first + per_process)]
    videos = EvalVideosDataset([split["records"][i]["video_path"] for i in shard], processor.video_processor)
    video_loader = torch.utils.data.DataLoader(
        videos, batch_size=args.eval_batch_size, num_workers=args.num_workers, collate_fn=lambda items: collate_pairs(items, tokenizer)
    )
    video_features = []
    for batch in video_loader:
        with accelerator.autocast():
            video_features.append(_float(task.encode_videos(model, batch["pixel_values_videos"].to(accelerator.device))))
    video_features = _truncate(accelerator.gather(_concat(video_features)), num_videos)
    captions = split["captions"]
    text_features = []
    caption_batches = [captions[i : i + args.eval_batch_size] for i in range(0, len(captions), args.eval_batch_size)]
    for batch_captions in caption_batches:  # cheap: every process encodes all captions
        tokens = tokenizer(batch_captions, padding=True, truncation=True, return_tensors="pt").to(accelerator.device)
        with accelerator.autocast():
            features = task.encode_texts(model, tokens["input_ids"], tokens["attention_mask"])
        text_features.append(_float(features))
    return _concat(text_features), video_features


def _float(features):
    if isinstance(features, tuple):
        return tuple(f.float() for f in features)
    return features.float()


def _truncate(features, length: int):
    if isinstance(features, tuple):
        return tuple(f[:length] for f in features)
    return features[:length]


def _concat(chunks):
    if isinstance(chunks[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*chunks))
    return torch.cat(chunks)


def evaluate(model, task, processor, split: dict, accelerator: Accelerator, args) -> tuple[dict, dict, tuple]:
    """Metrics of every score variant (and `+DSL` variants when asked), the score matrices and the
    `(text, video)` features."""
    was_training = model.training
    text_features, video_features = encode_split(model, task, processor, split, accelerator, args)
    scores = task.score(model, text_features, video_features, seed=args.seed, num_trials=args.num_trials)
    metrics = {}
    for variant, sims in scores.items():
        sims = sims.float().cpu()
        metrics[variant] = retrieval_metrics(sims, split["text_to_video"])
        if args.dsl:
            metrics[f"{variant}+DSL"] = retrieval_metrics(dual_softmax(sims, dim=0), split["text_to_video"])
    model.train(was_training)
    return metrics, {variant: sims.float().cpu() for variant, sims in scores.items()}, (text_features, video_features)


def print_metrics_table(accelerator: Accelerator, title: str, metrics: dict) -> None:
    lines = [title, f"{'scores':<22} {'dir':<4} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MdR':>6} {'MnR':>7}"]
    for variant, directions in metrics.items():
        for direction in ("t2v", "v2t"):
            m = directions[direction]
            lines.append(f"{variant:<22} {direction:<4} {m['R@1']:6.1f} {m['R@5']:6.1f} {m['R@10']:6.1f} {m['MdR']:6.1f} {m['MnR']:7.1f}")
    accelerator.print("\n".join(lines))


# --------------------------------------------------------------------------------------------------- checkpoints


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    candidates = [p for p in checkpoints_dir.glob("checkpoint_*") if (p / PROGRESS_FILE).is_file()]
    return max(candidates, key=lambda p: int(p.name.split("_")[-1]), default=None)


def save_checkpoint(accelerator: Accelerator, progress: dict) -> None:
    path = Path(accelerator.save_state())
    if accelerator.is_main_process:
        (path / PROGRESS_FILE).write_text(json.dumps(progress))
    accelerator.wait_for_everyone()


def unify_stage_for_epoch(args, epoch: int) -> int:
    if epoch < args.stage0_epochs:
        return 0
    if epoch < args.stage0_epochs + args.stage1_epochs:
        return 1
    return 2


# --------------------------------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        # UNIFY's stages freeze one side; T-MASS uses every parameter (the check costs little there).
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        project_config=ProjectConfiguration(project_dir=str(output_dir), automatic_checkpoint_naming=True, total_limit=args.checkpoints_total_limit),
    )
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    set_seed(args.seed)
    started = time.time()

    data_dir = ensure_data(args, accelerator)
    train_split = load_split(data_dir, "train")
    eval_split = load_split(data_dir, args.eval_split)
    test_split = load_split(data_dir, args.test_split)

    model, processor = build_model_and_processor(args, train_split["captions"])
    task = task_for_model(model)
    if args.num_frames is None:
        args.num_frames = int(processor.video_processor.num_frames)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()

    if args.eval_only:
        model.to(accelerator.device)
        metrics, sims, _ = evaluate(model, task, processor, test_split, accelerator, args)
        print_metrics_table(accelerator, f"{args.test_split} ({len(test_split['records'])} videos)", metrics)
        result = finalize_metrics(metrics, test_split)
        if accelerator.is_main_process:
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / "metrics.json").write_text(json.dumps(result, indent=2))
        return result

    # ---- training data
    pairs = [(r["video_path"], c) for r in train_split["records"] for c in r["captions"]]
    if args.max_train_pairs:
        pairs = pairs[: args.max_train_pairs]
    size, mean, std = video_normalisation(processor)
    train_dataset = TrainPairsDataset(
        [p for p, _ in pairs], [c for _, c in pairs], num_frames=args.num_frames,
        augmentation=ClipAugmentation(size=size, mean=mean, std=std, crop_scale=tuple(args.crop_scale), horizontal_flip=args.horizontal_flip),
        frame_sampling=args.train_frame_sampling, seed=args.seed,
    )
    tokenizer = processor.tokenizer
    train_loader = torch.utils.data.DataLoader(
        train_dataset, batch_size=args.per_device_batch_size, shuffle=True, drop_last=True,
        num_workers=args.num_workers, collate_fn=lambda items: collate_pairs(items, tokenizer),
    )

    # ---- optimisation: the training module is wrapped with every parameter trainable (UNIFY's stages
    # only freeze afterwards), so that DDP registers all of them.
    if task.name == "unify":
        model.set_training_stage(2)
    optimizer_name = args.optimizer or ("legacy_adamw" if task.name == "tmass" else "adamw")
    groups = split_parameter_groups(
        model.named_parameters(), task.is_backbone,
        backbone_lr=args.backbone_learning_rate or args.learning_rate, head_lr=args.learning_rate, weight_decay=args.weight_decay,
    )
    optimizer = LegacyAdamW(groups) if optimizer_name == "legacy_adamw" else torch.optim.AdamW(groups)
    num_update_steps_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes / args.gradient_accumulation_steps)
    total_steps = max(1, args.num_epochs * num_update_steps_per_epoch)
    # The schedule restarts after UNIFY's text-only pretraining (stage 0). A prepared scheduler steps once per
    # process per optimizer step (hf_conventions.md §6), hence the factor num_processes.
    stage0_steps = min(args.stage0_epochs, args.num_epochs) * num_update_steps_per_epoch if task.name == "unify" else 0
    phases = [(n, int(args.warmup_proportion * n)) for n in (stage0_steps, total_steps - stage0_steps) if n > 0]
    scheduler = get_phased_warmup_cosine_schedule(
        optimizer, [(n * accelerator.num_processes, w * accelerator.num_processes) for n, w in phases]
    )
    training_module = RetrievalTrainingModule(model, task)
    training_module, optimizer, train_loader, scheduler = accelerator.prepare(training_module, optimizer, train_loader, scheduler)
    unwrapped = accelerator.unwrap_model(training_module).model

    # ---- resume
    step, start_epoch, batches_done = 0, 0, 0
    checkpoints_dir = output_dir / "checkpoints"
    if not args.resume and checkpoints_dir.is_dir() and any(checkpoints_dir.iterdir()):
        if not args.overwrite_output_dir:
            raise FileExistsError(
                f"{checkpoints_dir} holds checkpoints of an earlier run: pass --resume to continue it or "
                "--overwrite_output_dir to start over"
            )
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(checkpoints_dir)
        accelerator.wait_for_everyone()
    if args.resume:
        checkpoint = latest_checkpoint(checkpoints_dir) if args.resume == "latest" else Path(args.resume)
        if checkpoint is None:
            accelerator.print(f"--resume: no checkpoint under {output_dir / 'checkpoints'}; starting from scratch")
        else:
            accelerator.load_state(str(checkpoint))
            accelerator.project_configuration.iteration = int(checkpoint.name.split("_")[-1]) + 1
            progress = json.loads((checkpoint / PROGRESS_FILE).read_text())
            step, start_epoch, batches_done = progress["step"], progress["epoch"], progress["batches_done"]
            accelerator.print(f"resumed from {checkpoint}: step {step}, epoch {start_epoch}, {batches_done} batches into it")

    max_steps = min(total_steps, args.max_train_steps or total_steps)
    log_path = output_dir / "train_log.jsonl"
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        # A resumed run keeps the log up to its checkpoint (a killed run may have logged further).
        kept = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] <= step] if step and log_path.is_file() else []
        log_path.write_text("".join(line + "\n" for line in kept))
    progress_bar = tqdm(total=max_steps, initial=step, disable=not accelerator.is_local_main_process, desc=f"train {task.name}")
    for epoch in range(start_epoch, args.num_epochs):
        if step >= max_steps:
            break
        if task.name == "unify":
            stage = unify_stage_for_epoch(args, epoch)
            if stage != 0 and epoch == args.stage0_epochs and args.stage0_epochs > 0 and batches_done == 0:
                unwrapped.copy_text_lexicon_branch_to_latent_branch()  # the MLM-trained layers start both branches
            unwrapped.set_training_stage(stage)
            train_dataset.set_load_videos(stage != 0)  # stage 0 is text-only MLM: no decoding
        training_module.train()
        train_loader.set_epoch(epoch)
        train_dataset.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_loader, batches_done) if batches_done else train_loader
        batch_in_epoch = batches_done
        batches_done = 0
        for batch in loader:
            micro_step = epoch * len(train_loader) + batch_in_epoch
            local_seed = seed_for_step(args.seed, micro_step, accelerator.process_index)
            torch.manual_seed(local_seed)  # dropout and any other global draw of this step, on this process
            context = StepContext(
                step=step - stage0_steps,
                total_steps=max(1, total_steps - stage0_steps),
                # Draws over the gathered global batch (T-MASS noise) must agree on every process.
                generator=torch.Generator(device=accelerator.device).manual_seed(seed_for_step(args.seed, micro_step)),
                local_generator=torch.Generator(device=accelerator.device).manual_seed(local_seed),
                extra={"tokenizer": tokenizer},
            )
            with accelerator.accumulate(training_module):
                losses = training_module(batch, context)
                accelerator.backward(losses["loss"])
                for parameter in unwrapped.parameters():  # frozen (stage) parameters must not move
                    if not parameter.requires_grad:
                        parameter.grad = None
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(training_module.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            batch_in_epoch += 1
            if accelerator.sync_gradients:
                task.after_optimizer_step(unwrapped)
                step += 1
                progress_bar.update(1)
                logs = {name: float(value.detach()) for name, value in losses.items()}
                logs["lr"] = scheduler.get_last_lr()[-1]
                progress_bar.set_postfix(loss=f"{logs['loss']:.3f}")
                if accelerator.is_main_process:
                    with log_path.open("a") as log_file:
                        log_file.write(json.dumps({"step": step, "epoch": epoch, **logs}) + "\n")
                epoch_done = batch_in_epoch >= len(train_loader)
                if epoch_done or step >= max_steps or (args.checkpointing_steps and step % args.checkpointing_steps == 0):
                    save_checkpoint(accelerator, {"step": step, "epoch": epoch + epoch_done, "batches_done": 0 if epoch_done else batch_in_epoch})
                if step >= max_steps:
                    break
        if args.eval_every_epochs and (epoch + 1) % args.eval_every_epochs == 0 and eval_split["captions"]:
            if task.name != "unify" or unwrapped.training_stage != 0:
                metrics, _, _ = evaluate(unwrapped, task, processor, eval_split, accelerator, args)
                print_metrics_table(accelerator, f"epoch {epoch + 1}: {args.eval_split}", metrics)
    progress_bar.close()

    # ---- final evaluation, model folder, card, plots
    accelerator.wait_for_everyone()
    metrics, sims, features = evaluate(unwrapped, task, processor, test_split, accelerator, args)
    print_metrics_table(accelerator, f"{args.test_split} ({len(test_split['records'])} videos, {len(test_split['captions'])} captions)", metrics)
    result = finalize_metrics(metrics, test_split)
    result["train_seconds"] = time.time() - started
    if task.name == "unify":
        result["lexicon"] = lexicon_analysis(processor.tokenizer, test_split, *features)
        accelerator.print(
            f"lexicon: {result['lexicon']['concept_word_hit_rate_top10']:.1%} of caption concept words in the top-10 video "
            f"words; non-zeros per vector: video {result['lexicon']['video_nonzeros_mean']:.1f}, "
            f"text {result['lexicon']['text_nonzeros_mean']:.1f} (of {result['lexicon']['vocab_size']})"
        )
    if accelerator.is_main_process:
        save_model_folder(unwrapped, processor, task, result, args, output_dir)
        if args.plots:
            write_plots(task, sims, test_split, output_dir, result.get("lexicon"))
        if args.push_to_hub:
            from video_text_retrieval.hub import push_folder_to_hub

            push_folder_to_hub(output_dir, args.hub_model_id, private=args.hub_private)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def finalize_metrics(metrics: dict, split: dict) -> dict:
    return {
        "metrics": metrics,
        "num_test_videos": len(split["records"]),
        "num_test_texts": len(split["captions"]),
    }


def save_model_folder(model, processor, task, result: dict, args, output_dir: Path) -> None:
    from video_text_retrieval.hub import build_model_card

    output_dir.mkdir(parents=True, exist_ok=True)
    type(model).register_for_auto_class("AutoModel")
    type(model.config).register_for_auto_class()
    type(processor).register_for_auto_class()
    type(processor.video_processor).register_for_auto_class()
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    metrics = result["metrics"]
    main_variant = "tmass" if task.name == "tmass" else "fused"
    hyperparameters = {k: v for k, v in vars(args).items() if k not in {"output_dir", "push_to_hub", "hub_model_id", "hub_private"}}
    card = build_model_card(
        task.name,
        model_name=args.hub_model_id or output_dir.name,
        metrics_by_variant={k: v for k, v in metrics.items()},
        main_variant=main_variant,
        dataset_name=f"{args.dataset} ({args.test_split} split, {result['num_test_videos']} videos)",
        dataset_type=args.dataset,
        hyperparameters=hyperparameters,
        num_frames=args.num_frames,
        image_size=video_normalisation(processor)[0],
        load_path=args.hub_model_id or str(output_dir),
        example_caption=result.get("example_caption", "a red square moves left"),
    )
    card.save(output_dir / "README.md")
    (output_dir / "metrics.json").write_text(json.dumps(result, indent=2))


def lexicon_analysis(tokenizer, split: dict, text_features, video_features, k: int = 10, num_examples: int = 4) -> dict:
    """How interpretable the UNIFY lexicon is on a split: sparsity of the video and text lexicon vectors,
    and, when the records name their concepts (the synthetic set), the fraction of a caption's concept
    words found among the top-`k` words of its *video's* lexicon."""
    from modeling_unify import lexicon_top_words

    (_, text_lexicon), (_, video_lexicon) = text_features, video_features
    video_words = lexicon_top_words(video_lexicon, tokenizer, k)
    vocabulary = _concept_vocabulary()
    hits = total = 0
    for record, words in zip(split["records"], video_words):
        if not record.get("concepts"):
            continue
        concept_words = set(record["captions"][0].split()) & vocabulary
        hits += len(concept_words & {word for word, _ in words})
        total += len(concept_words)
    text_words = lexicon_top_words(text_lexicon, tokenizer, k)
    first_caption = [split["text_to_video"].index(v) for v in range(min(num_examples, len(split["records"])))]
    return {
        "vocab_size": int(video_lexicon.shape[-1]),
        "video_nonzeros_mean": float((video_lexicon > 0).sum(-1).float().mean()),
        "text_nonzeros_mean": float((text_lexicon > 0).sum(-1).float().mean()),
        "concept_word_hit_rate_top10": hits / total if total else float("nan"),
        "examples": [
            {
                "video_id": split["records"][v]["video_id"],
                "caption": split["captions"][t],
                "video_top_words": video_words[v],
                "caption_top_words": text_words[t],
            }
            for v, t in enumerate(first_caption)
        ],
    }


def _concept_vocabulary() -> set[str]:
    try:
        from video_text_retrieval.data.synthetic import CONCEPT_WORDS
    except ImportError:
        return set()
    return {word for words in CONCEPT_WORDS.values() for word in words}


def write_plots(task, sims: dict, split: dict, output_dir: Path, lexicon: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_videos = len(split["records"])
    ks = np.arange(1, num_videos + 1)
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for variant, matrix in sims.items():
        ranks = text_to_video_ranks(matrix, split["text_to_video"])
        ax.plot(ks, [100.0 * np.mean(ranks <= k) for k in ks], label=variant)
    ax.plot(ks, 100.0 * ks / num_videos, "k:", label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("text-to-video R@K (%)")
    ax.set_title(f"{task.name}: recall@K on {num_videos} test videos")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(output_dir / "recall_at_k.png")
    plt.close(fig)
    if lexicon and lexicon["examples"]:
        examples = lexicon["examples"]
        fig, axes = plt.subplots(len(examples), 2, figsize=(8, 1.9 * len(examples)), dpi=100, squeeze=False)
        for row, example in enumerate(examples):
            for col, (key, title) in enumerate((("video_top_words", "video"), ("caption_top_words", "caption"))):
                ax = axes[row, col]
                words = example[key][:8][::-1]
                ax.barh([w for w, _ in words], [v for _, v in words], color="tab:blue" if col == 0 else "tab:orange")
                ax.tick_params(labelsize=7)
                ax.set_title(f"{title} lexicon: \"{example['caption']}\"" if col == 1 else f"{title} lexicon ({example['video_id']})", fontsize=7)
        fig.tight_layout()
        fig.savefig(output_dir / "lexicon_words.png")
        plt.close(fig)


if __name__ == "__main__":
    main()
