"""A transformers pipeline for zero-shot video classification with UNIFY and T-MASS.

Importing this module registers the task `"zero-shot-video-classification"` with transformers'
`PIPELINE_REGISTRY` (the way transformers registers custom pipelines), and imports `modeling_unify`
and `modeling_tmass`, which register the models and processors with the Auto classes. Then:

    import video_text_retrieval.pipelines  # noqa: F401  (registers the task)
    from transformers import pipeline

    classifier = pipeline("zero-shot-video-classification", model="path/to/saved_model_folder")
    classifier("clip.mp4", candidate_labels=["brush hair", "cartwheel"], hypothesis_template="a video of a person {}.")
    # [{"score": 0.91, "label": "cartwheel"}, {"score": 0.09, "label": "brush hair"}]

As transformers' zero-shot image classification, the scores are a softmax over the candidate labels of
the model's similarity times its training inverse temperature (UNIFY `1 / config.temperature`,
T-MASS CLIP's `exp(logit_scale)`), sorted from the best label down (ties keep the candidate order).
The similarities are those of `video_text_retrieval.zero_shot` (UNIFY: `score="fused"` by default, or
`"latent"` / `"lexicon"`; T-MASS: text-conditioned pooling, `num_trials=0` by default).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModel
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.base import Pipeline

import modeling_tmass  # noqa: F401  (registers T-MASS with AutoModel / AutoProcessor)
import modeling_unify  # noqa: F401  (registers UNIFY with AutoModel / AutoProcessor)

from . import zero_shot

__all__ = ["TASK", "ZeroShotVideoClassificationPipeline"]

TASK = "zero-shot-video-classification"


class ZeroShotVideoClassificationPipeline(Pipeline):
    """Zero-shot video classification: the probability of each candidate label for a video, from the
    similarity of the video with a prompt made of each label (`hypothesis_template`).

    Call arguments:
        videos: a video path or decoded frames (`numpy` `(T, H, W, 3)` uint8), or a list of those.
        candidate_labels (`list[str]`): the class names.
        hypothesis_template (`str` or `list[str]`, defaults to `"a video of a person {}."`): `{}`
            marks the label; several templates are ensembled (see `video_text_retrieval.zero_shot`).
        score (`str`): UNIFY only, `"fused"` (default), `"latent"` or `"lexicon"`.
        num_trials (`int`, defaults to 0): T-MASS only, stochastic text samples per pair.
        seed (`int`): seeds the T-MASS trials (a fresh `torch.Generator` per forward pass, i.e. per
            video unless `batch_size > 1`); without one the global generator is used.
        top_k (`int`): return only the best `top_k` labels.
        Video-processor options (`num_frames`, `frame_sampling`) are passed on to the processor.

    Returns:
        For one video, a list of `{"score", "label"}` sorted by decreasing score (one per candidate
        label); for a list of videos, a list of such lists.
    """

    _load_processor = True
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    _VIDEO_OPTIONS = ("num_frames", "frame_sampling")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.model_kind = zero_shot.model_kind(self.model)
        if self.processor is None:
            raise ValueError(
                f"the {TASK} pipeline needs the model's processor (tokenizer + video processor): save it in the model "
                "folder (`processor.save_pretrained(folder)`) or pass `processor=`"
            )
        # The class prompts are encoded once per (labels, templates) and reused for every video.
        self._class_embeddings_cache: tuple[tuple, zero_shot.ClassEmbeddings] | None = None

    def __call__(self, videos, candidate_labels: list[str] | None = None, **kwargs: Any):
        if candidate_labels is None:
            raise ValueError(f"the {TASK} pipeline needs `candidate_labels` (the class names)")
        if isinstance(videos, tuple):
            videos = list(videos)
        return super().__call__(videos, candidate_labels=candidate_labels, **kwargs)

    def _sanitize_parameters(
        self,
        candidate_labels=None,
        hypothesis_template=None,
        score=None,
        num_trials=None,
        seed=None,
        top_k=None,
        **kwargs,
    ):
        preprocess_params: dict[str, Any] = {}
        forward_params: dict[str, Any] = {}
        postprocess_params: dict[str, Any] = {}
        if candidate_labels is not None:
            preprocess_params["candidate_labels"] = candidate_labels
        if hypothesis_template is not None:
            preprocess_params["hypothesis_template"] = hypothesis_template
        video_options = {name: kwargs.pop(name) for name in self._VIDEO_OPTIONS if name in kwargs}
        if video_options:
            preprocess_params["video_options"] = video_options
        if kwargs:
            raise TypeError(f"unexpected arguments for the {TASK} pipeline: {sorted(kwargs)}")
        if score is not None:
            forward_params["score"] = score
        if num_trials is not None:
            forward_params["num_trials"] = num_trials
        if seed is not None:
            forward_params["seed"] = seed
        if top_k is not None:
            postprocess_params["top_k"] = top_k
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, video, candidate_labels=None, hypothesis_template=zero_shot.DEFAULT_TEMPLATES[0], video_options=None):
        # Validated here, before any video is decoded, so that a bad label or template fails fast.
        zero_shot.build_prompts(candidate_labels, hypothesis_template)
        templates = [hypothesis_template] if isinstance(hypothesis_template, str) else list(hypothesis_template)
        pixel_values = self.processor(videos=[video], return_tensors="pt", **(video_options or {}))["pixel_values_videos"]
        return {
            "pixel_values_videos": pixel_values.to(self.dtype),
            # Wrapped in a list so that batching (which collates list entries per item) keeps them whole.
            "candidate_labels": [list(candidate_labels)],
            "templates": [templates],
        }

    def _class_embeddings(self, candidate_labels: list[str], templates: list[str]) -> zero_shot.ClassEmbeddings:
        key = (tuple(candidate_labels), tuple(templates))
        if self._class_embeddings_cache is None or self._class_embeddings_cache[0] != key:
            embeddings = zero_shot.encode_class_prompts(self.model, self.processor, candidate_labels, templates)
            self._class_embeddings_cache = (key, embeddings)
        return self._class_embeddings_cache[1]

    def _forward(self, model_inputs, score=None, num_trials=0, seed=None):
        candidate_labels, templates = model_inputs["candidate_labels"], model_inputs["templates"]
        # Unbatched: [[labels]]; batched by the pipeline's collate: [[[labels]], [[labels]], ...].
        while isinstance(candidate_labels[0], list) and candidate_labels[0] and isinstance(candidate_labels[0][0], list):
            candidate_labels, templates = [item[0] for item in candidate_labels], [item[0] for item in templates]
        if any(labels != candidate_labels[0] for labels in candidate_labels):
            raise ValueError("all videos of a batch must be classified against the same candidate labels")
        class_embeddings = self._class_embeddings(candidate_labels[0], templates[0])
        score_name = zero_shot._default_score(self.model_kind, score)
        if self.model_kind == "unify" and (num_trials or seed is not None):
            raise ValueError("`num_trials` and `seed` apply to T-MASS only; UNIFY's scores are deterministic")
        generator = torch.Generator(device=self.device).manual_seed(int(seed)) if seed is not None else None
        video_embeddings = zero_shot.encode_videos(self.model, model_inputs["pixel_values_videos"])
        scores = zero_shot.zero_shot_scores(
            self.model, class_embeddings, video_embeddings, num_trials=num_trials, generator=generator
        )[score_name]
        return {
            "candidate_labels": candidate_labels,
            "logits": scores * zero_shot.logit_scale_of(self.model),
        }

    def postprocess(self, model_outputs, top_k=None):
        candidate_labels = model_outputs["candidate_labels"]
        if isinstance(candidate_labels[0], list):
            candidate_labels = candidate_labels[0]
        probabilities = model_outputs["logits"][0].float().softmax(dim=-1).tolist()
        ranked = sorted(zip(probabilities, candidate_labels), key=lambda pair: -pair[0])
        if top_k is not None:
            ranked = ranked[: max(int(top_k), 0)]
        return [{"score": probability, "label": label} for probability, label in ranked]


def _register() -> None:
    registered = PIPELINE_REGISTRY.supported_tasks.get(TASK)
    if registered is not None and registered.get("impl") is ZeroShotVideoClassificationPipeline:
        return  # already ours (e.g. the module was reloaded): no "overwriting" warning
    PIPELINE_REGISTRY.register_pipeline(
        TASK,
        pipeline_class=ZeroShotVideoClassificationPipeline,
        pt_model=AutoModel,
        type="multimodal",
    )


_register()
