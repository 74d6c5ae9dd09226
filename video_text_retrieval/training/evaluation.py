"""Evaluation of a retrieval model on a split: encode every caption and video (videos sharded over the
processes), score with the model's task, compute the metrics of every score variant, and UNIFY's
lexicon analysis."""

from __future__ import annotations

import math

import torch
from accelerate import Accelerator

from ..metrics import (
    bootstrap_recall_intervals,
    chance_recall,
    dual_softmax,
    paired_bootstrap_difference,
    retrieval_metrics,
    text_to_video_ranks,
    video_to_text_ranks,
)
from .data import EvalVideosDataset, collate_pairs

__all__ = ["encode_split", "evaluate", "print_metrics_table", "lexicon_analysis", "add_intervals", "text_lexicon_grounding", "video_lexicon_grounding"]

# Bootstrap settings of the reported intervals (queries resampled; see `video_text_retrieval.metrics`).
NUM_BOOTSTRAP_RESAMPLES = 1000
INTERVAL_KS = (1, 5, 10)


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
    metrics, all_sims = {}, {}
    for variant, sims in scores.items():
        sims = sims.float().cpu()
        all_sims[variant] = sims
        metrics[variant] = retrieval_metrics(sims, split["text_to_video"])
        if dsl:
            all_sims[f"{variant}+DSL"] = dual_softmax(sims, dim=0)
            metrics[f"{variant}+DSL"] = retrieval_metrics(all_sims[f"{variant}+DSL"], split["text_to_video"])
    add_intervals(metrics, all_sims, split["text_to_video"], main_variant=task.main_variant, seed=seed)
    model.train(was_training)
    return metrics, {variant: sims.float().cpu() for variant, sims in scores.items()}, (text_features, video_features)


def add_intervals(metrics: dict, sims: dict, text_to_video, *, main_variant: str | None, seed: int = 0) -> dict:
    """Add bootstrap 95 % intervals (queries resampled, seeded) beside the metrics of every variant, in place:
    ``metrics[variant]["t2v_ci95"] = {"R@K": [low, high]}`` (and ``v2t_ci95``); the chance level of each
    direction (``t2v_chance``, ``v2t_chance``); and, in ``main_variant``'s entry, the paired difference to
    every other variant, ``"<direction>_minus_<other>" = {"R@K": {"difference", "ci95", "share_a_not_better"}}``
    (points of R@K, the same resampled queries for both). ``t2v``/``v2t`` themselves are not changed."""
    ranks = {
        variant: {"t2v": text_to_video_ranks(matrix, text_to_video), "v2t": video_to_text_ranks(matrix, text_to_video)}
        for variant, matrix in sims.items()
    }
    num_videos = next(iter(sims.values())).shape[1] if sims else 0
    num_groups = len(set(int(v) for v in text_to_video))
    for variant, by_direction in ranks.items():
        for direction, direction_ranks in by_direction.items():
            metrics[variant][f"{direction}_ci95"] = bootstrap_recall_intervals(
                direction_ranks, INTERVAL_KS, num_resamples=NUM_BOOTSTRAP_RESAMPLES, seed=seed
            )
        metrics[variant]["t2v_chance"] = chance_recall(num_videos, INTERVAL_KS)
        metrics[variant]["v2t_chance"] = chance_recall(num_groups, INTERVAL_KS)
    if main_variant in ranks:
        for other in ranks:
            if other == main_variant or other.endswith("+DSL"):
                continue
            for direction in ("t2v", "v2t"):
                metrics[main_variant][f"{direction}_minus_{other}"] = paired_bootstrap_difference(
                    ranks[main_variant][direction], ranks[other][direction], INTERVAL_KS,
                    num_resamples=NUM_BOOTSTRAP_RESAMPLES, seed=seed,
                )
    return metrics


def print_metrics_table(accelerator: Accelerator, title: str, metrics: dict) -> None:
    lines = [title, f"{'scores':<22} {'dir':<4} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MdR':>6} {'MnR':>7}"]
    for variant, directions in metrics.items():
        for direction in ("t2v", "v2t"):
            m = directions[direction]
            lines.append(f"{variant:<22} {direction:<4} {m['R@1']:6.1f} {m['R@5']:6.1f} {m['R@10']:6.1f} {m['MdR']:6.1f} {m['MnR']:7.1f}")
    accelerator.print("\n".join(lines))


def lexicon_analysis(tokenizer, split: dict, text_features, video_features, k: int = 10, num_examples: int = 4) -> dict:
    """How interpretable the UNIFY lexicon is on a split: sparsity of the video and text lexicon vectors, how
    well the text lexicons name their captions' words (`text_lexicon_grounding`), and, when the records name
    their concepts (the synthetic set), how well the video lexicons name their captions' concept words
    (`video_lexicon_grounding`), with chance levels."""
    from modeling_unify import lexicon_top_words

    (_, text_lexicon), (_, video_lexicon) = text_features, video_features
    video_words = lexicon_top_words(video_lexicon, tokenizer, k)
    text_words = lexicon_top_words(text_lexicon, tokenizer, k)
    first_caption = [split["text_to_video"].index(v) for v in range(min(num_examples, len(split["records"])))]
    video_grounding = video_lexicon_grounding(tokenizer, split, video_lexicon, k=k)
    return {
        "vocab_size": int(video_lexicon.shape[-1]),
        "video_nonzeros_mean": float((video_lexicon > 0).sum(-1).float().mean()),
        "text_nonzeros_mean": float((text_lexicon > 0).sum(-1).float().mean()),
        # None: no concept words (JSON has no NaN)
        "concept_word_hit_rate_top10": video_grounding["concept_word_share_in_top_k"] if video_grounding else None,
        "text_grounding": text_lexicon_grounding(tokenizer, split["captions"], text_lexicon),
        "video_grounding": video_grounding,
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


def _word_columns(tokenizer, vocab_size: int) -> tuple[list[str], torch.Tensor]:
    """The token of every lexicon dimension, and a mask of the dimensions that are words (not special tokens:
    [CLS], [SEP], [PAD], [MASK], [UNK] name nothing in a caption)."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    is_word = torch.ones(vocab_size, dtype=torch.bool)
    is_word[[i for i in tokenizer.all_special_ids if i < vocab_size]] = False
    return tokens, is_word


def _word_ids(tokenizer, words) -> set[int]:
    """Ids of whole-word tokens (every synthetic caption word is one, see the caption-built tokenizer)."""
    ids = tokenizer.convert_tokens_to_ids(sorted(words))
    return {int(i) for i in ids if i != tokenizer.unk_token_id}


def text_lexicon_grounding(tokenizer, captions: list[str], text_lexicon: torch.Tensor) -> dict:
    """Whether each caption's text lexicon names the caption's own words, and how far apart captions are.

    For a caption with ``n`` distinct words, its top-``n`` lexicon dimensions among the word dimensions (special
    tokens excluded) are compared with its words: ``share_top_n_all_own_words`` is the share of captions whose
    top-``n`` are exactly their own words, ``top_n_precision_mean`` the mean fraction of the top-``n`` that are
    own words. ``mean_pairwise_cosine`` is the mean cosine between the lexicons of two different captions (1 when
    every caption gets the same lexicon)."""
    lexicon = text_lexicon.float().cpu()
    _, is_word = _word_columns(tokenizer, lexicon.shape[-1])
    masked = lexicon.masked_fill(~is_word, float("-inf"))
    exact = precision = 0.0
    for row, caption in zip(masked, captions):
        own = _word_ids(tokenizer, set(caption.split()))
        top = set(row.topk(len(own)).indices.tolist())
        hits = len(top & own) / len(own)
        precision += hits
        exact += hits == 1.0
    num = len(captions)
    unit = torch.nn.functional.normalize(lexicon, dim=-1)
    gram = unit @ unit.T
    off_diagonal = (gram.sum() - gram.diagonal().sum()) / max(1, num * (num - 1))
    return {
        "num_captions": num,
        "share_top_n_all_own_words": exact / num,
        "top_n_precision_mean": precision / num,
        "mean_pairwise_cosine": float(off_diagonal),
        "nonzero_words_mean": float(((lexicon > 0) & is_word).sum(-1).float().mean()),
    }


def _hypergeometric_at_least(population: int, successes: int, draws: int, at_least: int) -> float:
    """P(X >= at_least) for X the number of the ``successes`` marked items among ``draws`` drawn without
    replacement from ``population`` items."""
    total = math.comb(population, draws)
    return sum(
        math.comb(successes, x) * math.comb(population - successes, draws - x) for x in range(at_least, min(successes, draws) + 1)
    ) / total


def video_lexicon_grounding(tokenizer, split: dict, video_lexicon: torch.Tensor, k: int = 10) -> dict | None:
    """Whether each video's lexicon names its caption's concept words (records with ``concepts``: the synthetic
    set; None otherwise), beside what ``k`` random word dimensions would give.

    Per video, with ``m`` concept words in its caption, ``W`` word dimensions and the top-``k`` word dimensions of
    its lexicon (those with a positive weight only, so fewer when fewer are active):
        * ``concept_word_share_in_top_k``: concept words in the top-``k`` / all concept words (pooled over videos);
          chance ``k / W`` (``chance_concept_word_share``).
        * ``share_videos_half_concepts_in_top_k``: videos with at least half (``ceil(m / 2)``) of their concept
          words in the top-``k``; chance from the hypergeometric law (``chance_share_videos_half_concepts``).
        * ``top_k_caption_word_precision``: mean fraction of the top-``k`` that are words of the caption (any
          word, e.g. "background"); chance ``mean(caption words) / W``.
        * ``active_caption_word_precision``: mean fraction of the non-zero word dimensions that are caption words
          (``active_words_mean`` of them per video)."""
    vocabulary = _concept_vocabulary()
    rows = [(i, r) for i, r in enumerate(split["records"]) if r.get("concepts")]
    if not rows or not vocabulary:
        return None
    lexicon = video_lexicon.float().cpu()
    _, is_word = _word_columns(tokenizer, lexicon.shape[-1])
    num_words = int(is_word.sum())
    masked = lexicon.masked_fill(~is_word, float("-inf"))
    top_k = masked.topk(min(k, num_words), dim=-1).indices
    hits = total = half = 0
    chance_half = top_precision = active_precision = active_count = caption_words = 0.0
    for index, record in rows:
        caption = record["captions"][0].split()
        concept_ids = _word_ids(tokenizer, set(caption) & vocabulary)
        caption_ids = _word_ids(tokenizer, set(caption))
        # Zero-weight dimensions tie; a word the lexicon gives no weight is not among its top words.
        top = {i for i in top_k[index].tolist() if lexicon[index, i] > 0}
        found = len(top & concept_ids)
        hits += found
        total += len(concept_ids)
        needed = math.ceil(len(concept_ids) / 2)
        half += found >= needed
        chance_half += _hypergeometric_at_least(num_words, len(concept_ids), min(k, num_words), needed)
        top_precision += len(top & caption_ids) / len(top) if top else 0.0
        active = set(torch.nonzero((lexicon[index] > 0) & is_word).flatten().tolist())
        active_count += len(active)
        active_precision += len(active & caption_ids) / len(active) if active else 0.0
        caption_words += len(caption_ids)
    num = len(rows)
    return {
        "k": k,
        "num_videos": num,
        "num_word_dimensions": num_words,
        "concept_word_share_in_top_k": hits / total,
        "chance_concept_word_share": min(k, num_words) / num_words,
        "share_videos_half_concepts_in_top_k": half / num,
        "chance_share_videos_half_concepts": chance_half / num,
        "top_k_caption_word_precision": top_precision / num,
        "chance_top_k_caption_word_precision": caption_words / num / num_words,
        "active_words_mean": active_count / num,
        "active_caption_word_precision": active_precision / num,
    }


def _concept_vocabulary() -> set[str]:
    try:
        from video_text_retrieval.data.synthetic import CONCEPT_WORDS
    except ImportError:
        return set()
    return {word for words in CONCEPT_WORDS.values() for word in words}
