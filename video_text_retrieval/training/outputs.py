"""What a finished run leaves behind: the model folder (weights, config, processor, card, metrics)
and the figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..metrics import text_to_video_ranks

__all__ = ["video_normalisation", "save_model_folder", "write_plots"]


def video_normalisation(processor) -> tuple[int, list[float], list[float]]:
    """``(crop side, mean, std)`` of the processor's video preprocessing."""
    video_processor = processor.video_processor
    crop = video_processor.crop_size
    size = crop["height"] if isinstance(crop, dict) else crop.height
    return int(size), list(video_processor.image_mean), list(video_processor.image_std)


def save_model_folder(model, processor, task, result: dict, hyperparameters: dict, output_dir: Path, *, dataset_name: str, hub_model_id: str | None = None) -> None:
    """Write the final model folder: weights, config, processor, code registration, card, metrics."""
    from video_text_retrieval.hub import build_model_card

    output_dir.mkdir(parents=True, exist_ok=True)
    type(model).register_for_auto_class("AutoModel")
    type(model.config).register_for_auto_class()
    type(processor).register_for_auto_class()
    type(processor.video_processor).register_for_auto_class()
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    metrics = result["metrics"]
    card = build_model_card(
        task.name,
        model_name=hub_model_id or output_dir.name,
        metrics_by_variant={k: v for k, v in metrics.items()},
        main_variant=task.main_variant,
        dataset_name=dataset_name,
        dataset_type=hyperparameters["dataset"],
        hyperparameters=hyperparameters,
        num_frames=hyperparameters["num_frames"],
        image_size=video_normalisation(processor)[0],
        load_path=hub_model_id or output_dir.name,
        example_caption=result.get("example_caption", "a red square moves left"),
    )
    card.save(output_dir / "README.md")
    (output_dir / "metrics.json").write_text(json.dumps(result, indent=2, allow_nan=False))


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
