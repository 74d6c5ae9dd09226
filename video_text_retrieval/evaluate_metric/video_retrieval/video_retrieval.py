"""`evaluate` metric: text-to-video and video-to-text retrieval recall and ranks.

Each prediction is one text's row of similarity scores against every video of the gallery
(higher is better); each reference is the index of that text's video. Several texts may share a
video (multi-caption sets). Returns ``{"t2v": {...}, "v2t": {...}}`` with R@K in percent and the
1-based median and mean ranks (MdR, MnR), computed by ``video_text_retrieval.metrics``.
"""

import datasets
import evaluate
import numpy as np

from video_text_retrieval.metrics import DEFAULT_KS, retrieval_metrics

_DESCRIPTION = __doc__

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of N_t lists of N_v floats, the similarity of each text to every video.
    references: list of N_t ints, the video of each text.
    ks: recall cut-offs (default (1, 5, 10, 50)).
    ties: "pessimistic" (default: a target tied with other candidates ranks below them) or "optimistic".
Returns:
    {"t2v": {"R@1", ..., "MdR", "MnR"}, "v2t": {...}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VideoRetrieval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, ks=DEFAULT_KS, ties="pessimistic"):
        sims = np.asarray(predictions, dtype=np.float32)
        return retrieval_metrics(sims, np.asarray(references, dtype=np.int64), ks=tuple(ks), ties=ties)
