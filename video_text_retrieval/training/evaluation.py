"""Evaluation of a retrieval model on a split: encode every caption and video (videos sharded over the
processes), score with the model's task, compute the metrics of every score variant, and UNIFY's
lexicon analysis."""

from __future__ import annotations

import math

import torch
from accelerate import Accelerator

from ..metrics import dual_softmax, retrieval_metrics
from .data import EvalVideosDataset, collate_pairs

__all__ = ["encode_split", "evaluate", "print_metrics_table", "lexicon_analysis"]


@torch.no_grad()
def encode_split(model, task, processor, split: dict, accelerator: Accelerator, *, batch_size: int, num_workers: int = 0):
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
        videos, batch_size=batch_size, num_workers=num_workers, collate_fn=lambda items: collate_pairs(items, tokenizer)
    )
    video_features = []
    for batch in video_loader:
        with accelerator.autocast():
            video_features.append(_float(task.encode_videos(model, batch["pixel_values_videos"].to(accelerator.device))))
    video_features = _truncate(accelerator.gather(_concat(video_features)), num_videos)
    captions = split["captions"]
    text_features = []
    caption_batches = [captions[i : i + batch_size] for i in range(0, len(captions), batch_size)]
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


def evaluate(
    model, task, processor, split: dict, accelerator: Accelerator, *, batch_size: int, num_workers: int = 0,
    seed: int = 0, num_trials: int | None = None, dsl: bool = False,
) -> tuple[dict, dict, tuple]:
    """Metrics of every score variant (and `+DSL` variants when asked), the score matrices and the
    `(text, video)` features."""
    was_training = model.training
    text_features, video_features = encode_split(
        model, task, processor, split, accelerator, batch_size=batch_size, num_workers=num_workers
    )
    scores = task.score(model, text_features, video_features, seed=seed, num_trials=num_trials)
    metrics = {}
    for variant, sims in scores.items():
        sims = sims.float().cpu()
        metrics[variant] = retrieval_metrics(sims, split["text_to_video"])
        if dsl:
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
        "concept_word_hit_rate_top10": hits / total if total else None,  # None: no concept words (JSON has no NaN)
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
