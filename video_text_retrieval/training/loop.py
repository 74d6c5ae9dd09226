"""The training run: arguments in, model folder out.

:func:`run` validates every argument, prepares the data (read only), builds the model, the optimizer
and the schedule, resumes from the latest complete checkpoint when asked, trains with every random
draw keyed to (seed, epoch, step), evaluates, and writes the model folder (weights, processor, card,
``metrics.json``, figures). :func:`main` parses the command line (``examples/run_retrieval.py``).

Failure behaviour (see ``docs/training.md``): a non-finite loss or gradient norm skips the step and
stops the run after ``--max_consecutive_nonfinite_steps`` in a row; non-finite weights are never
saved; the log stays valid JSON Lines; a run with no optimizer step is an error before training.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.utils import ProjectConfiguration, gather_object, send_to_device, set_seed
from tqdm.auto import tqdm

from .arguments import RunArguments, _split_names, default_num_threads, parse_arguments, resolve_defaults, validate_arguments
from .checkpointing import CheckpointManager, is_disk_full, check_finite_weights, disk_full_error
from .data import (
    ClipAugmentation,
    TrainPairsDataset,
    build_shard_loader,
    collate_pairs,
    file_sha256,
    load_split,
    prepare_data_dir,
    seed_for_step,
    shard_captions,
    shard_source_fingerprint,
)
from .evaluation import evaluate, print_metrics_table
from .optim import get_phased_warmup_cosine_schedule
from .outputs import save_model_folder, video_normalisation, write_plots
from .stages import warmup_steps_for
from .tasks import RetrievalTrainingModule, StepContext, task_for_model

__all__ = ["run", "main", "NonFiniteLossError", "build_model_and_processor", "RESUME_IGNORED_ARGUMENTS"]

logger = logging.getLogger("video_text_retrieval.training")
LOG_FILE = "train_log.jsonl"

# Arguments that may differ between a run and its resumption without changing what is trained: where
# things go, how often to checkpoint or evaluate, how evaluation is reported, how many loader workers.
# `data_dir` is compared through the training annotation file's hash instead of its path.
RESUME_IGNORED_ARGUMENTS = {
    "output_dir", "resume", "allow_changed", "overwrite_output_dir", "max_train_steps", "checkpointing_steps",
    "checkpoints_total_limit", "eval_every_epochs", "eval_only", "eval_batch_size", "num_trials", "dsl", "plots",
    "push_to_hub", "hub_model_id", "hub_private", "num_workers", "data_dir", "generate_synthetic_data",
    "skip_unreadable_videos", "max_consecutive_nonfinite_steps", "eval_split", "test_split", "num_threads",
}


class NonFiniteLossError(FloatingPointError):
    """Too many optimizer steps in a row had a non-finite loss or gradient norm."""


# --------------------------------------------------------------------------------------------------- model


def build_model_and_processor(args: RunArguments, train_captions: list[str] | None):
    import modeling_tmass  # noqa: F401  (registers the Auto classes)
    import modeling_unify  # noqa: F401
    from transformers import AutoModel, AutoProcessor

    m = args.model
    if m.model_name_or_path:
        model = AutoModel.from_pretrained(m.model_name_or_path)
        processor = AutoProcessor.from_pretrained(m.model_name_or_path)
        try:
            from video_text_retrieval.pairing import check_processor_matches_model
        except ImportError:
            check_processor_matches_model = None
        if check_processor_matches_model is not None:
            check_processor_matches_model(processor, model)
        return model, processor
    from video_text_retrieval.presets import build_from_scratch

    return build_from_scratch(m.model, m.preset, train_captions, num_frames=args.data.num_frames, **_model_overrides(m.model_config))


def _model_overrides(model_config: str | None) -> dict:
    if not model_config:
        return {}
    text = model_config
    if not text.lstrip().startswith("{"):
        if not Path(text).is_file():
            raise FileNotFoundError(f"--model_config {text!r} is neither a JSON object nor an existing file")
        text = Path(text).read_text()
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--model_config: invalid JSON ({error})") from error
    if not isinstance(overrides, dict):
        raise ValueError(f"--model_config must hold a JSON object, got {type(overrides).__name__}")
    return overrides


# --------------------------------------------------------------------------------------------------- helpers


def _json_value(value):
    """A log value JSON can hold: finite floats as they are, NaN/inf as the strings "nan"/"inf"/"-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _write_log_line(path: Path, entry: dict) -> None:
    try:
        with path.open("a") as handle:
            handle.write(json.dumps({key: _json_value(value) for key, value in entry.items()}, allow_nan=False) + "\n")
    except OSError as error:
        if is_disk_full(error, path.parent):
            raise disk_full_error(path.parent, error, f"the training log {path.name}") from error
        raise


def _card_hyperparameters(flat: dict) -> dict:
    """The run's settings for the model card, without local paths or publishing details."""
    hidden = {"output_dir", "data_dir", "resume", "allow_changed", "overwrite_output_dir", "push_to_hub", "hub_model_id", "hub_private"}
    shown = {k: v for k, v in flat.items() if k not in hidden}
    if shown.get("model_name_or_path"):
        shown["model_name_or_path"] = Path(shown["model_name_or_path"]).name
    if shown.get("model_config") and not str(shown["model_config"]).lstrip().startswith("{"):
        shown["model_config"] = Path(shown["model_config"]).name
    return shown


def _result(metrics: dict, split: dict) -> dict:
    return {"metrics": metrics, "num_test_videos": len(split["records"]), "num_test_texts": len(split["captions"])}


def _restore_shard_position(train_loader, progress: dict, process_index: int, shuffle_buffer: int) -> None:
    """Put the shard loader of this process where the checkpoint's run stood (its exact next sample)."""
    states = progress.get("data")
    if not isinstance(states, list) or len(states) <= process_index:
        raise ValueError(
            f"--resume: {progress['checkpoint']} holds no shard-loader position for process {process_index} "
            "(it was not written by a run from --train_shards with this number of processes)"
        )
    try:
        train_loader.load_state_dict(states[process_index])
    except (ValueError, KeyError) as error:
        raise ValueError(
            f"--resume: {progress['checkpoint']}: {error}. The order of the shard samples depends on --per_device_batch_size, "
            f"--num_workers, --shuffle_buffer ({shuffle_buffer}), --seed, --train_shard_weights and the number of processes: "
            "resume with the checkpoint's values"
        ) from error


# --------------------------------------------------------------------------------------------------- run


def run(args: RunArguments) -> dict:
    """Train (or only evaluate) as ``args`` say; returns the result written to ``metrics.json``.

    The intra-op thread count of the calling process is restored afterwards."""
    validate_arguments(args)
    previous_threads = torch.get_num_threads()
    try:
        return _run(args)
    finally:
        torch.set_num_threads(previous_threads)


def _run(args: RunArguments) -> dict:
    m, d, t, e = args.model, args.data, args.training, args.evaluation
    output_dir = Path(t.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        mixed_precision=t.mixed_precision,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        # UNIFY's stages freeze one side; T-MASS uses every parameter (the check costs little there).
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        # Checkpoints are named, written and pruned by CheckpointManager (atomically), not by accelerate.
        project_config=ProjectConfiguration(project_dir=str(output_dir), automatic_checkpoint_naming=False),
    )
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    set_seed(t.seed)
    torch.set_num_threads(t.num_threads or default_num_threads(d.num_workers))
    started = time.time()

    # ---- data: read only; --eval_only needs the evaluated split alone, training from shards no train.jsonl.
    from_shards = bool(d.train_shards)
    splits = [d.test_split] if t.eval_only else (["train"] if not from_shards else []) + [d.eval_split, d.test_split]
    if accelerator.is_main_process:
        dataset_name = prepare_data_dir(d.data_dir, splits=splits, generate_synthetic=d.generate_synthetic_data, dataset=d.dataset)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        dataset_name = prepare_data_dir(d.data_dir, splits=splits, dataset=d.dataset)
    d.dataset = dataset_name
    data_dir = Path(d.data_dir)
    test_split = load_split(data_dir, d.test_split)

    if t.eval_only:
        model, processor = build_model_and_processor(args, None)
        task = task_for_model(model)
        model.to(accelerator.device)
        metrics, _, _ = evaluate(
            model, task, processor, test_split, accelerator, batch_size=e.eval_batch_size, num_workers=d.num_workers,
            seed=t.seed, num_trials=e.num_trials, dsl=e.dsl,
        )
        print_metrics_table(accelerator, f"{d.test_split} ({len(test_split['records'])} videos)", metrics)
        result = _result(metrics, test_split)
        if accelerator.is_main_process:
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / "metrics.json").write_text(json.dumps(result, indent=2, allow_nan=False))
        return result

    train_split = None if from_shards else load_split(data_dir, "train")
    eval_split = load_split(data_dir, d.eval_split)
    # A from-scratch model builds its tokenizer's vocabulary from the training captions.
    train_captions = None if m.model_name_or_path else (shard_captions(d.train_shards) if from_shards else train_split["captions"])
    model, processor = build_model_and_processor(args, train_captions)
    task = task_for_model(model)
    resolve_defaults(args, task.defaults)
    if d.num_frames is None:
        d.num_frames = int(processor.video_processor.num_frames)
    if m.gradient_checkpointing:
        model.gradient_checkpointing_enable()

    # ---- training data
    size, mean, std = video_normalisation(processor)
    augmentation = ClipAugmentation(size=size, mean=mean, std=std, crop_scale=tuple(d.crop_scale), horizontal_flip=d.horizontal_flip)
    tokenizer = processor.tokenizer
    if from_shards:
        # Built after `Accelerator()`: every source reads this process's split of its shards. Not prepared
        # by accelerate (it would split the split stream again); batches are moved with `send_to_device`.
        train_loader = build_shard_loader(
            d.train_shards, weights=d.train_shard_weights, num_frames=d.num_frames, image_num_frames=task.image_num_frames(d.num_frames),
            augmentation=augmentation, batch_size=t.per_device_batch_size, frame_sampling=d.train_frame_sampling, seed=t.seed,
            shuffle_buffer=d.shuffle_buffer, num_workers=d.num_workers, tokenizer=tokenizer,
        )
        train_data = train_loader  # what `start_epoch` turns pixel decoding on and off for
        num_training_pairs = sum(source.num_samples for source in train_loader.sources)
        batches_per_process = len(train_loader)  # already per process
    else:
        pairs = [(r["video_path"], c) for r in train_split["records"] for c in r["captions"]]
        if d.max_train_pairs:
            pairs = pairs[: d.max_train_pairs]
        train_data = TrainPairsDataset(
            [p for p, _ in pairs], [c for _, c in pairs], num_frames=d.num_frames, augmentation=augmentation,
            frame_sampling=d.train_frame_sampling, seed=t.seed, skip_unreadable=d.skip_unreadable_videos,
        )
        train_loader = torch.utils.data.DataLoader(
            train_data, batch_size=t.per_device_batch_size, shuffle=True, drop_last=True,
            num_workers=d.num_workers, collate_fn=lambda items: collate_pairs(items, tokenizer),
        )
        num_training_pairs = len(pairs)
        batches_per_process = len(train_loader) // accelerator.num_processes
    # Whole optimizer steps only: batches past the last full accumulation of an epoch are not trained (and
    # no process trains on the padding accelerate adds to equalise the processes' batch counts). From
    # shards those batches are not read either: the sources continue with them in the next epoch.
    num_update_steps_per_epoch = batches_per_process // t.gradient_accumulation_steps
    if num_update_steps_per_epoch < 1:
        raise ValueError(
            f"no optimizer step per epoch: {num_training_pairs} training pairs, --per_device_batch_size {t.per_device_batch_size} x "
            f"{accelerator.num_processes} process(es) x --gradient_accumulation_steps {t.gradient_accumulation_steps} "
            f"(incomplete batches are dropped); lower the batch size"
        )
    schedule = task.stage_schedule(model, t)
    total_steps = t.num_epochs * num_update_steps_per_epoch
    max_steps = min(total_steps, t.max_train_steps or total_steps)

    # ---- optimisation
    task.prepare_for_wrapping(model)
    optimizer = task.build_optimizer(model, t)
    phases = [
        (n, warmup_steps_for(n, num_update_steps_per_epoch, t.warmup_epochs, t.warmup_proportion))
        for n in schedule.lr_phase_lengths(num_update_steps_per_epoch)
    ]
    # A prepared scheduler steps once per process per optimizer step, hence the factor num_processes.
    scheduler = get_phased_warmup_cosine_schedule(
        optimizer, [(n * accelerator.num_processes, w * accelerator.num_processes) for n, w in phases]
    )
    training_module = RetrievalTrainingModule(model, task)
    if from_shards:
        training_module, optimizer, scheduler = accelerator.prepare(training_module, optimizer, scheduler)
    else:
        training_module, optimizer, train_loader, scheduler = accelerator.prepare(training_module, optimizer, train_loader, scheduler)
    unwrapped = accelerator.unwrap_model(training_module).model

    # ---- what a resumption must agree on
    run_arguments = dict(args.to_dict())
    if from_shards:
        run_arguments["train_shards_fingerprints"] = [shard_source_fingerprint(folder) for folder in d.train_shards]
    else:
        run_arguments["train_annotations_sha256"] = file_sha256(data_dir / "train.jsonl")
    run_arguments.update(
        num_training_pairs=num_training_pairs,
        num_processes=accelerator.num_processes,
        mixed_precision=str(accelerator.mixed_precision),
    )

    # ---- resume
    step, start_epoch, batches_done, nonfinite_in_a_row = 0, 0, 0, 0
    checkpoints_dir = output_dir / "checkpoints"
    checkpoints = CheckpointManager(accelerator, checkpoints_dir, t.checkpoints_total_limit)
    if not t.resume and checkpoints_dir.is_dir() and any(checkpoints_dir.iterdir()):
        if not t.overwrite_output_dir:
            raise FileExistsError(
                f"{checkpoints_dir} holds checkpoints of an earlier run: pass --resume to continue it or "
                "--overwrite_output_dir to start over"
            )
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(checkpoints_dir)
        accelerator.wait_for_everyone()
    if t.resume:
        progress = checkpoints.resume(
            t.resume, run_arguments=run_arguments, ignored=RESUME_IGNORED_ARGUMENTS, allowed=set(_split_names(t.allow_changed)),
        )
        if progress is None:
            accelerator.print(f"--resume: no complete checkpoint under {checkpoints_dir}; starting from scratch")
        else:
            step, start_epoch, batches_done = progress["step"], progress["epoch"], progress["batches_done"]
            nonfinite_in_a_row = progress.get("nonfinite_in_a_row", 0)
            if from_shards:
                _restore_shard_position(train_loader, progress, accelerator.process_index, d.shuffle_buffer)
            accelerator.print(f"resumed from {progress['checkpoint']}: step {step}, epoch {start_epoch}, {batches_done} batches into it")

    log_path = output_dir / LOG_FILE
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        # A resumed run keeps the log up to its checkpoint (a killed run may have logged further).
        kept = []
        if step and log_path.is_file():
            for line in log_path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= step:
                        kept.append(line)
                except (json.JSONDecodeError, KeyError, TypeError):
                    pass  # a line cut by a kill
        log_path.write_text("".join(line + "\n" for line in kept))

    def save_checkpoint(progress: dict) -> None:
        if from_shards:
            # One position per process (each reads its own split); every process takes part in the gather.
            progress["data"] = gather_object([train_loader.state_dict()])
        checkpoints.save(unwrapped, progress, run_arguments)

    progress_bar = tqdm(total=max_steps, initial=step, disable=not accelerator.is_local_main_process, desc=f"train {task.name}")
    micro_losses_finite = True
    for epoch in range(start_epoch, t.num_epochs):
        if step >= max_steps:
            break
        # A shard loader restored by `_restore_shard_position` is already inside this epoch: `set_epoch` of
        # the current epoch keeps its position; it continues at the exact sample instead of skipping batches.
        train_loader.set_epoch(epoch)
        if not from_shards:
            train_data.set_epoch(epoch)
        task.start_epoch(unwrapped, schedule, epoch, train_data, mid_epoch=batches_done > 0)
        training_module.train()
        if from_shards or not batches_done:
            loader = train_loader
        else:
            loader = accelerator.skip_first_batches(train_loader, batches_done)
        batch_in_epoch = batches_done
        batches_done = 0
        batches_to_train = num_update_steps_per_epoch * t.gradient_accumulation_steps
        for batch in loader:
            if batch_in_epoch >= batches_to_train:
                break  # a remainder that does not fill an optimizer step
            if from_shards:
                batch = send_to_device(batch, accelerator.device)
            micro_step = epoch * len(train_loader) + batch_in_epoch  # per process: the shard loader, or the prepared one
            local_seed = seed_for_step(t.seed, micro_step, accelerator.process_index)
            torch.manual_seed(local_seed)  # dropout and any other global draw of this step, on this process
            phase_step, phase_total = schedule.phase_step(step, num_update_steps_per_epoch)
            context = StepContext(
                step=phase_step,
                total_steps=phase_total,
                # Draws over the gathered global batch (T-MASS noise) must agree on every process.
                generator=torch.Generator(device=accelerator.device).manual_seed(seed_for_step(t.seed, micro_step)),
                local_generator=torch.Generator(device=accelerator.device).manual_seed(local_seed),
                distill_weight=schedule.distill_weight(step, num_update_steps_per_epoch),
                extra={"tokenizer": tokenizer},
            )
            skipped_videos = batch.pop("skipped", None)
            if skipped_videos and accelerator.is_main_process:
                for index, path, error in skipped_videos:
                    logger.warning("skipping unreadable training video %s (sample %d): %s", path, index, error)
            with accelerator.accumulate(training_module):
                losses = training_module(batch, context)
                loss_is_finite = bool(torch.isfinite(losses["loss"].detach()))
                # Every process must take the same decision: one non-finite local loss skips the step everywhere.
                any_nonfinite = accelerator.reduce(torch.tensor(0.0 if loss_is_finite else 1.0, device=accelerator.device), "sum")
                micro_losses_finite = micro_losses_finite and float(any_nonfinite) == 0.0
                accelerator.backward(losses["loss"])
                for parameter in unwrapped.parameters():  # frozen (stage) parameters must not move
                    if not parameter.requires_grad:
                        parameter.grad = None
                grad_norm = None
                if accelerator.sync_gradients:
                    if t.max_grad_norm:
                        grad_norm = accelerator.clip_grad_norm_(training_module.parameters(), t.max_grad_norm)
                    else:  # still measured: a non-finite gradient must not reach the weights
                        norms = [p.grad.detach().norm() for p in training_module.parameters() if p.grad is not None]
                        grad_norm = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
                    grad_norm = float(grad_norm)
                    step_ok = micro_losses_finite and math.isfinite(grad_norm)
                    if step_ok:
                        optimizer.step()
                else:
                    step_ok = True
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            batch_in_epoch += 1
            if accelerator.sync_gradients:
                if step_ok:
                    task.after_optimizer_step(unwrapped)
                    nonfinite_in_a_row = 0
                else:
                    nonfinite_in_a_row += 1
                step += 1
                progress_bar.update(1)
                logs = {name: float(value.detach()) for name, value in losses.items()}
                logs["lr"] = scheduler.get_last_lr()[-1]
                logs["grad_norm"] = grad_norm
                if skipped_videos:
                    logs["skipped_videos"] = [{"index": int(i), "video": Path(p).name, "error": err} for i, p, err in skipped_videos]
                if not step_ok:
                    reason = "non-finite loss" if not micro_losses_finite else "non-finite gradient norm"
                    logs["skipped_step"] = reason
                    accelerator.print(f"step {step}: {reason} (loss {logs['loss']}, gradient norm {grad_norm}); update skipped")
                micro_losses_finite = True
                progress_bar.set_postfix(loss=f"{logs['loss']:.3f}")
                if accelerator.is_main_process:
                    _write_log_line(log_path, {"step": step, "epoch": epoch, **logs})
                if nonfinite_in_a_row >= t.max_consecutive_nonfinite_steps:
                    raise NonFiniteLossError(
                        f"{nonfinite_in_a_row} optimizer steps in a row (up to step {step}) had a non-finite loss or gradient "
                        f"norm (see {log_path}); the learning rate ({t.learning_rate}) may be too high. The last complete "
                        f"checkpoint under {checkpoints_dir} holds finite weights"
                    )
                epoch_done = batch_in_epoch >= num_update_steps_per_epoch * t.gradient_accumulation_steps
                if epoch_done or step >= max_steps or (t.checkpointing_steps and step % t.checkpointing_steps == 0):
                    save_checkpoint({
                        "step": step, "epoch": epoch + epoch_done, "batches_done": 0 if epoch_done else batch_in_epoch,
                        "nonfinite_in_a_row": nonfinite_in_a_row,
                    })
                if step >= max_steps:
                    break
            if from_shards and batch_in_epoch >= batches_to_train:
                break  # before reading a remainder batch: the shard sources keep it for the next epoch
        if t.eval_every_epochs and (epoch + 1) % t.eval_every_epochs == 0 and eval_split["captions"] and task.evaluates_now(unwrapped):
            metrics, _, _ = evaluate(
                unwrapped, task, processor, eval_split, accelerator, batch_size=e.eval_batch_size, num_workers=d.num_workers,
                seed=t.seed, num_trials=e.num_trials, dsl=e.dsl,
            )
            print_metrics_table(accelerator, f"epoch {epoch + 1}: {d.eval_split}", metrics)
    progress_bar.close()

    # ---- final evaluation, model folder, card, plots
    accelerator.wait_for_everyone()
    metrics, sims, features = evaluate(
        unwrapped, task, processor, test_split, accelerator, batch_size=e.eval_batch_size, num_workers=d.num_workers,
        seed=t.seed, num_trials=e.num_trials, dsl=e.dsl,
    )
    print_metrics_table(accelerator, f"{d.test_split} ({len(test_split['records'])} videos, {len(test_split['captions'])} captions)", metrics)
    result = _result(metrics, test_split)
    result["train_seconds"] = time.time() - started
    analysis = task.analyse(processor, test_split, *features)
    result.update(analysis)
    if analysis:
        accelerator.print(task.summary_line(analysis))
    if accelerator.is_main_process:
        check_finite_weights(unwrapped, f"the model folder {output_dir}")
        try:
            save_model_folder(
                unwrapped, processor, task, result, _card_hyperparameters(args.to_dict()), output_dir,
                dataset_name=f"{d.dataset} ({d.test_split} split, {result['num_test_videos']} videos)", hub_model_id=e.hub_model_id,
            )
        except Exception as error:
            if is_disk_full(error, output_dir):
                raise disk_full_error(output_dir, error, "the model folder") from error
            raise
        if e.plots:
            write_plots(task, sims, test_split, output_dir, result.get("lexicon"))
        if e.push_to_hub:
            from video_text_retrieval.hub import push_folder_to_hub

            push_folder_to_hub(output_dir, e.hub_model_id, private=e.hub_private)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def main(argv: list[str] | None = None) -> dict:
    """Parse the command line (see ``--help``) and :func:`run`."""
    return run(parse_arguments(argv))

