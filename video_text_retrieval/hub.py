"""Model folders, model cards and Hub uploads.

* ``write_model_folder`` saves a model and its processor as one Hub-ready folder (remote-code files
  included), after checking that the processor fits the model (``pairing.check_processor_matches_model``),
  and writes the card and metrics.
* ``build_model_card`` renders a card with ``model-index`` metadata (every retrieval metric of every
  direction as an ``EvalResult``), usage code, training data and hyper-parameters, limitations and the
  paper's citation. Local absolute paths never reach the card: a path-like hyper-parameter is recorded
  by its name (``/home/me/data/msrvtt`` -> ``msrvtt``).
* ``push_folder_to_hub`` uploads exactly the files that make the model folder, in ONE commit (an
  allow-list, never a crawl): transformers' own ``push_to_hub`` makes one commit per object and rewrites
  README.md with a generic card each time. See ``model_folder_files`` for the list and the checks
  (no dotfiles, no link leaving the folder, no local absolute path in any uploaded text file).
  Design notes: `docs/data.md`.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData

__all__ = [
    "MODEL_FACTS",
    "build_model_card",
    "eval_results_from_metrics",
    "find_local_paths",
    "model_folder_files",
    "push_folder_to_hub",
    "write_model_folder",
]

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
    # The card is published: a local absolute path (a data folder, an output folder) is recorded by name.
    hyperparameters = {key: _without_local_paths(value) for key, value in (hyperparameters or {}).items()}
    if _is_absolute_path(load_path):
        load_path = f"path/to/{Path(load_path).name or 'model_folder'}"
    dataset_name = _without_local_paths(dataset_name)
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


# ----------------------------------------------------------------------------------------------
# Local paths
# ----------------------------------------------------------------------------------------------

# An absolute path under a root that only exists on someone's machine. The look-behind keeps URLs
# (`https://host/abs/...`) and relative paths (`outputs/demo/data/...`) out.
_LOCAL_PATH_PATTERN = re.compile(
    r"(?<![\w.:/~-])(?:/(?:home|Users|root|tmp|private|var/folders|mnt|media|scratch|work|data|srv|opt|net|nfs|gpfs"
    r"|lustre|content|kaggle|workspace|export|storage)(?![\w.-])(?:/[^\s\"'`<>)\]},;]*)?|[A-Za-z]:\\\\?[^\s\"'`<>]+)"
)


def _is_absolute_path(value) -> bool:
    return isinstance(value, str) and bool(value) and (os.path.isabs(value) or re.match(r"^[A-Za-z]:[\\/]", value) is not None)


def _without_local_paths(value):
    """`value` with every absolute path replaced by its last component (recursively in lists and dicts)."""
    if isinstance(value, str):
        if _is_absolute_path(value.strip()):
            return Path(value.strip().replace("\\", "/")).name or "."
        return _LOCAL_PATH_PATTERN.sub(lambda match: Path(match.group(0).replace("\\", "/")).name or ".", value)
    if isinstance(value, Mapping):
        return {key: _without_local_paths(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_local_paths(item) for item in value]
    return value


def find_local_paths(text: str, extra_paths: Iterable[str] = ()) -> list[tuple[int, str]]:
    """`(line_number, path)` of every local absolute path in `text`: paths under the usual local roots
    (`/home`, `/Users`, `/tmp`, `C:\\...`, ...) and any occurrence of `extra_paths` (e.g. the folder's
    own absolute path)."""
    found = []
    # Only paths of two or more components: a bare `/root` or `/tmp` is the pattern's, and a short
    # working directory such as `/w` would match ordinary text.
    extras = [p for p in {str(p).rstrip("/") for p in extra_paths} if p.count("/") >= 2]
    for line_number, line in enumerate(text.splitlines(), start=1):
        hits = [match.group(0) for match in _LOCAL_PATH_PATTERN.finditer(line)]
        hits += [extra for extra in extras if extra in line and not any(extra in hit for hit in hits)]
        found += [(line_number, hit) for hit in hits]
    return found


# ----------------------------------------------------------------------------------------------
# What a model folder is made of
# ----------------------------------------------------------------------------------------------

# Files of a saved model folder, by exact name or pattern (top level only).
MODEL_FOLDER_FILES = (
    "*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "README.md",
    "metrics.json",
    "*.png",
)
TRAINING_LOG_FILE = "train_log.jsonl"
_CONFIG_FILES_WITH_AUTO_MAP = (
    "config.json", "processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json",
    "tokenizer_config.json",
)
_TEXT_SUFFIXES = {".json", ".jsonl", ".md", ".py", ".txt", ".jinja", ".yaml", ".yml", ".csv"}


def _auto_map_modules(value) -> set[str]:
    """Module names (`modeling_tmass`) named by an `auto_map` (any nesting); references to other repos
    (`org/repo--module.Class`) are not files of this folder."""
    modules = set()
    if isinstance(value, str):
        if "--" not in value and "." in value:
            modules.add(value.rsplit(".", 1)[0])
    elif isinstance(value, Mapping):
        for item in value.values():
            modules |= _auto_map_modules(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            modules |= _auto_map_modules(item)
    return modules


def _collect_auto_maps(data) -> set[str]:
    modules = set()
    if isinstance(data, Mapping):
        for key, value in data.items():
            modules |= _auto_map_modules(value) if key == "auto_map" else _collect_auto_maps(value)
    elif isinstance(data, list):
        for item in data:
            modules |= _collect_auto_maps(item)
    return modules


def _relative_imports(source: str, path: Path) -> set[str]:
    """Flat sibling modules a remote-code file imports (`from .x import y`, `from . import x`), which
    transformers fetches with it."""
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as error:
        raise ValueError(f"{path}: not valid Python ({error.msg}, line {error.lineno})") from error
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                modules.add(node.module.split(".")[0])
            else:
                modules.update(alias.name for alias in node.names)
    return modules


def _check_inside(folder: Path, path: Path) -> Path:
    """`path`, refused when it is a link that leads out of `folder` (or not a plain file)."""
    resolved = path.resolve()
    if folder.resolve() not in resolved.parents:
        raise ValueError(f"{path} is a link to {resolved}, outside {folder}: refusing to upload it")
    if not resolved.is_file():
        raise ValueError(f"{path} is not a regular file: refusing to upload it")
    return resolved


def model_folder_files(
    folder: str | Path,
    *,
    include_training_log: bool = False,
    extra_files: Iterable[str] = (),
) -> list[str]:
    """The files of `folder` that make the model folder, as POSIX paths relative to it (sorted).

    Taken from the top level only, never a crawl: the weights (`*.safetensors` and their index),
    `config.json`, generation / processor / tokenizer / video-processor files, the `*.py` files named by
    an `auto_map` of those configs together with the flat siblings they import (what transformers loads
    with `trust_remote_code=True`), `README.md`, `metrics.json`, figures (`*.png`), and
    `train_log.jsonl` when `include_training_log`. `extra_files` adds exact top-level names.
    Dotfiles (`.env`, `.git...`) never qualify; checkpoints and any sub-folder are left out.

    Raises:
        ValueError: a listed file is a link leading out of `folder`, or a remote-code module named by
            an `auto_map` is missing from the folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder")
    names = sorted(entry.name for entry in folder.iterdir() if not entry.name.startswith("."))
    wanted = [name for name in names if any(fnmatch.fnmatchcase(name, pattern) for pattern in MODEL_FOLDER_FILES)]
    if include_training_log and TRAINING_LOG_FILE in names:
        wanted.append(TRAINING_LOG_FILE)
    for name in extra_files:
        if name.startswith(".") or "/" in name or "\\" in name:
            raise ValueError(f"extra_files entry {name!r}: only visible top-level file names are allowed")
        if name not in names:
            raise FileNotFoundError(f"extra_files entry {name!r} is not in {folder}")
        wanted.append(name)
    wanted = [name for name in dict.fromkeys(wanted) if (folder / name).is_file() or (folder / name).is_symlink()]

    # Remote code: modules named by an auto_map, then their relative imports, transitively.
    pending = set()
    for name in _CONFIG_FILES_WITH_AUTO_MAP:
        if name in wanted:
            path = _check_inside(folder, folder / name)
            try:
                pending |= _collect_auto_maps(json.loads(path.read_text(encoding="utf-8")))
            except json.JSONDecodeError as error:
                raise ValueError(f"{folder / name}:{error.lineno}: invalid JSON ({error.msg})") from error
    code_files: set[str] = set()
    while pending:
        module = pending.pop()
        file_name = f"{module}.py"
        if file_name in code_files:
            continue
        path = folder / file_name
        if not path.is_file():
            raise ValueError(
                f"{folder}: an auto_map or a remote-code import names module {module!r}, but {file_name} is not in "
                "the folder; the uploaded model could not be loaded with trust_remote_code=True"
            )
        code_files.add(file_name)
        pending |= _relative_imports(_check_inside(folder, path).read_text(encoding="utf-8"), path) - {
            f[:-3] for f in code_files
        }
    files = sorted(set(wanted) | code_files)
    for name in files:
        _check_inside(folder, folder / name)
    return files


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    commit_message: str = "Upload model, processor and model card",
    private: bool | None = None,
    token: str | None = None,
    api: HfApi | None = None,
    include_training_log: bool = False,
    extra_files: Iterable[str] = (),
):
    """Upload the model folder's files (see ``model_folder_files``) to ``repo_id`` in one commit.

    Every uploaded text file (JSON, Markdown, Python, logs) is read once, checked for local absolute
    paths (paths under `/home`, `/Users`, `/tmp`, ..., or the folder's own location) and uploaded from
    those exact bytes, so what was checked is what is sent; a hit refuses the whole upload, naming the
    file and line. Weights are uploaded from their (checked, inside-the-folder) path.

    Why `create_commit` with explicit operations rather than `HfApi.upload_folder(allow_patterns=...)`:
    `upload_folder` reads the files again after any check made here and follows symbolic links
    wherever they point, so neither "what was scanned is what is sent" nor "no link leaves the folder"
    would hold; the explicit operations make both true by construction, in the same single commit.

    Returns:
        The ``CommitInfo`` of ``HfApi.create_commit``.

    Raises:
        ValueError: no README.md card, nothing to upload, a link out of the folder, a missing
            remote-code file, or a local absolute path in an uploaded text file.
    """
    folder = Path(folder)
    files = model_folder_files(folder, include_training_log=include_training_log, extra_files=extra_files)
    if not files:
        raise ValueError(f"nothing to upload: {folder} holds none of the model folder's files")
    if "README.md" not in files:
        raise ValueError(f"{folder} has no README.md model card; write one with `build_model_card(...).save(...)`")
    own_paths = {str(folder.absolute()), str(folder.resolve()), str(Path.home()), os.getcwd(), tempfile.gettempdir()}
    operations, problems = [], []
    for name in files:
        path = _check_inside(folder, folder / name)
        if path.suffix.lower() in _TEXT_SUFFIXES:
            content = path.read_bytes()
            text = content.decode("utf-8", errors="replace")
            problems += [f"{name}:{line}: {hit}" for line, hit in find_local_paths(text, own_paths)]
            operations.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=content))
        else:
            operations.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)))
    if problems:
        raise ValueError(
            f"refusing to upload {folder}: local absolute paths in the files to publish ({problems[:5]}); "
            "record them relative to the folder or by name"
        )
    api = api or HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    return api.create_commit(repo_id=repo_id, operations=operations, commit_message=commit_message, repo_type="model")


# ----------------------------------------------------------------------------------------------
# Writing a model folder
# ----------------------------------------------------------------------------------------------


def write_model_folder(
    model,
    processor,
    output_dir: str | Path,
    *,
    card: ModelCard | None = None,
    metrics: Mapping | None = None,
    on_too_long: str = "clamp",
) -> Path:
    """Save `model` and `processor` as one loadable, publishable folder.

    First `pairing.check_processor_matches_model` (the tokenizer's vocabulary must be the model's, and
    its `model_max_length` never beyond the position table: clamped, or an error with
    `on_too_long="error"`). Then the model, config and remote-code files (`auto_map`), the processor
    (its tokenizer and video-processor settings, with their remote-code files), and, when given, the
    card as `README.md` and `metrics` as `metrics.json`.

    Returns:
        `output_dir` as a `Path`.
    """
    from .pairing import check_processor_matches_model

    check_processor_matches_model(processor, model, on_too_long=on_too_long)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    type(model).register_for_auto_class("AutoModel")
    type(model.config).register_for_auto_class()
    type(processor).register_for_auto_class()
    if getattr(processor, "video_processor", None) is not None:
        type(processor.video_processor).register_for_auto_class()
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    if card is not None:
        card.save(output_dir / "README.md")
    if metrics is not None:
        (output_dir / "metrics.json").write_text(json.dumps(_without_local_paths(dict(metrics)), indent=2) + "\n")
    return output_dir
