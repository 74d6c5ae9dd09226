"""Model cards and Hub uploads.

``build_model_card`` renders a card with ``model-index`` metadata (every retrieval metric of every
direction as an ``EvalResult``), usage code, training data and hyper-parameters, limitations and the
paper's citation. ``push_folder_to_hub`` uploads a saved folder (weights, code, processor files and
README.md) in ONE commit: transformers' own ``push_to_hub`` makes one commit per object and rewrites
README.md with a generic card each time (hf_conventions.md §4).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData

__all__ = ["MODEL_FACTS", "build_model_card", "eval_results_from_metrics", "push_folder_to_hub"]

# Metric names of our outputs -> model-index metric types.
_METRIC_TYPES = {"R@1": "r_at_1", "R@5": "r_at_5", "R@10": "r_at_10", "R@50": "r_at_50", "MdR": "median_rank", "MnR": "mean_rank"}
_DIRECTIONS = {
    "t2v": ("text-to-video-retrieval", "Text-to-Video Retrieval"),
    "v2t": ("video-to-text-retrieval", "Video-to-Text Retrieval"),
}

MODEL_FACTS = {
    "tmass": {
        "title": "T-MASS",
        "summary": (
            "T-MASS (Wang et al., CVPR 2024) retrieves videos with CLIP towers and X-Pool text-conditioned "
            "frame pooling, and models each caption as a stochastic *text mass*: a region around the text "
            "embedding whose per-dimension radius depends on the text-frame similarities. At inference each "
            "(text, video) pair is scored by the best of several stochastic samples of the text."
        ),
        "paper": "https://arxiv.org/abs/2403.17998",
        "limitations": [
            "The official evaluation code scores each candidate video pooled with that video's own ground-truth "
            "caption, which leaks the answer into the score. The numbers here use the per-pair paper protocol "
            "(`protocol=\"paper\"`); `protocol=\"official\"` exists only to reproduce published numbers.",
            "Training computes the radius from the positive pair only, while inference computes it per pair "
            "(a train/test mismatch kept for parity with the released code).",
            "Stochastic inference: scores depend on the noise; pass a `torch.Generator` for reproducible results.",
        ],
        "citation": (
            "@inproceedings{wang2024tmass,\n"
            "  title     = {Text Is MASS: Modeling as Stochastic Embedding for Text-Video Retrieval},\n"
            "  author    = {Wang, Jiamian and Sun, Guohao and Wang, Pichao and Liu, Dongfang and Dianat, Sohail "
            "and Rabbani, Majid and Rao, Raghuveer and Tao, Zhiqiang},\n"
            "  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},\n"
            "  year      = {2024}\n}"
        ),
        "base_license_note": "CLIP weights, when used, are released by OpenAI under the MIT license.",
    },
    "unify": {
        "title": "UNIFY",
        "summary": (
            "UNIFY (Liu et al., LREC-COLING 2024) is a dual encoder whose video and text towers share a stem "
            "and split into a latent branch (a dense global embedding) and a lexicon branch (a sparse, "
            "non-negative vector over the BERT vocabulary produced by a shared MLM head). Latent and lexicon "
            "similarities are fused 1:1; the lexicon is interpretable: its top words describe the video."
        ),
        "paper": "https://arxiv.org/abs/2402.16769",
        "limitations": [
            "No official UNIFY code exists; this implementation follows a reconstruction of the paper's equations "
            "(see the configuration docstrings for every choice).",
            "The lexicon is only as good as the text side's vocabulary knowledge: start from a pretrained "
            "BERT (or pretrain the text tower with MLM) before aligning videos to it.",
        ],
        "citation": (
            "@inproceedings{liu2024unify,\n"
            "  title     = {Unifying Latent and Lexicon Representations for Effective Video-Text Retrieval},\n"
            "  author    = {Liu, Haowei and others},\n"
            "  booktitle = {Proceedings of LREC-COLING 2024},\n"
            "  year      = {2024}\n}"
        ),
        "base_license_note": "BERT weights, when used, are released under Apache-2.0; the ImageNet-21K ViT under Apache-2.0.",
    },
}

_TEMPLATE = """---
{{ card_data }}
---

# {{ model_title }}: {{ model_name }}

{{ summary }}

Paper: {{ paper }}

## How to use

```python
import torch
import modeling_{{ model_type }}  # registers the classes; or pass trust_remote_code=True without the package
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{{ load_path }}")
processor = AutoProcessor.from_pretrained("{{ load_path }}")
inputs = processor(text=["{{ example_caption }}"], videos=["video.mp4"], return_tensors="pt")
with torch.no_grad():
{{ usage_scoring }}
```

Inputs: {{ num_frames }} frames per video sampled with the `{{ frame_sampling }}` strategy, {{ image_size }} px.
Requires `transformers>=5.23,<6`.

## Evaluation

{{ results_table }}

## Training

Data: {{ dataset_name }}. Hyper-parameters:

{{ hyperparameters }}

## Limitations

{{ limitations }}

## License

{{ license }}. {{ base_license_note }}

## Citation

```bibtex
{{ citation }}
```
"""

_USAGE = {
    "tmass": (
        "    text = model.get_text_features(inputs[\"input_ids\"], inputs[\"attention_mask\"]).pooler_output\n"
        "    frames = model.get_video_features(inputs[\"pixel_values_videos\"]).pooler_output\n"
        "    scores = model.similarity(text, frames)  # (num_texts, num_videos), paper protocol"
    ),
    "unify": (
        "    out = model(**inputs)\n"
        "    scores = out.logits_per_text  # fused latent + lexicon similarity, (num_texts, num_videos)"
    ),
}


def eval_results_from_metrics(metrics: Mapping, dataset_name: str, dataset_type: str, split: str = "test") -> list[EvalResult]:
    """One ``EvalResult`` per (direction, metric) from ``{"t2v": {"R@1": ...}, "v2t": {...}}``."""
    results = []
    for direction, values in metrics.items():
        if direction not in _DIRECTIONS:
            continue
        task_type, task_name = _DIRECTIONS[direction]
        for metric_name, value in values.items():
            results.append(
                EvalResult(
                    task_type=task_type,
                    task_name=task_name,
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    dataset_split=split,
                    metric_type=_METRIC_TYPES.get(metric_name, metric_name.lower()),
                    metric_name=metric_name,
                    metric_value=float(value),
                )
            )
    return results


def _results_table(results_by_variant: Mapping[str, Mapping]) -> str:
    lines = ["| scores | direction | R@1 | R@5 | R@10 | MdR | MnR |", "|---|---|---|---|---|---|---|"]
    for variant, metrics in results_by_variant.items():
        for direction in ("t2v", "v2t"):
            if direction in metrics:
                m = metrics[direction]
                lines.append(
                    f"| {variant} | {direction} | {m['R@1']:.1f} | {m['R@5']:.1f} | {m['R@10']:.1f} | {m['MdR']:.1f} | {m['MnR']:.1f} |"
                )
    return "\n".join(lines)


def build_model_card(
    model_type: str,
    *,
    model_name: str,
    metrics_by_variant: Mapping[str, Mapping],
    main_variant: str,
    dataset_name: str,
    dataset_type: str,
    hyperparameters: Mapping | None = None,
    num_frames: int,
    frame_sampling: str = "uniform",
    image_size: int = 224,
    load_path: str = "path/to/model_folder",
    example_caption: str = "a red square moves left",
    base_model: str | None = None,
    license: str = "apache-2.0",
) -> ModelCard:
    """Render a model card.

    Args:
        model_type: ``"tmass"`` or ``"unify"``.
        metrics_by_variant: e.g. ``{"paper protocol, 20 trials": {"t2v": {...}, "v2t": {...}}}``; every
            variant is shown in the table, ``main_variant``'s numbers go into the ``model-index``.
        hyperparameters: training settings shown as a list.
    """
    if model_type not in MODEL_FACTS:
        raise ValueError(f"`model_type` must be one of {sorted(MODEL_FACTS)}, got {model_type!r}")
    if main_variant not in metrics_by_variant:
        raise ValueError(f"`main_variant` {main_variant!r} is not a key of `metrics_by_variant`")
    facts = MODEL_FACTS[model_type]
    card_data = ModelCardData(
        model_name=model_name,
        license=license,
        language="en",
        library_name="transformers",
        pipeline_tag="feature-extraction",
        tags=["video-text-retrieval", "custom_code", model_type],
        base_model=base_model,
        eval_results=eval_results_from_metrics(metrics_by_variant[main_variant], dataset_name, dataset_type),
    )
    hyperparameters = hyperparameters or {}
    return ModelCard.from_template(
        card_data,
        template_str=_TEMPLATE,
        model_title=facts["title"],
        model_name=model_name,
        model_type=model_type,
        summary=facts["summary"],
        paper=facts["paper"],
        load_path=load_path,
        example_caption=example_caption,
        usage_scoring=_USAGE[model_type],
        num_frames=num_frames,
        frame_sampling=frame_sampling,
        image_size=image_size,
        results_table=_results_table(metrics_by_variant),
        dataset_name=dataset_name,
        hyperparameters="\n".join(f"- `{k}`: {json.dumps(v)}" for k, v in hyperparameters.items()) or "- (not recorded)",
        limitations="\n".join(f"- {item}" for item in facts["limitations"]),
        license=license,
        base_license_note=facts["base_license_note"],
        citation=facts["citation"],
    )


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    commit_message: str = "Upload model, processor and model card",
    private: bool | None = None,
    token: str | None = None,
    api: HfApi | None = None,
    exclude: tuple[str, ...] = ("checkpoints", "__pycache__"),
):
    """Upload every file of ``folder`` (model, code, processor, README.md card) to ``repo_id`` in one commit.

    Sub-folders named in ``exclude`` (training checkpoints by default) are left out.
    Returns the ``CommitInfo`` of ``HfApi.create_commit``.
    """
    folder = Path(folder)
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and not set(p.relative_to(folder).parts[:-1]) & set(exclude)
    )
    if not files:
        raise ValueError(f"nothing to upload: {folder} holds no files")
    if not (folder / "README.md").is_file():
        raise ValueError(f"{folder} has no README.md model card; write one with `build_model_card(...).save(...)`")
    api = api or HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p)) for p in files]
    return api.create_commit(repo_id=repo_id, operations=operations, commit_message=commit_message, repo_type="model")
