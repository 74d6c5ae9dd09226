"""An `evaluate` wrapper around :mod:`video_text_retrieval.metrics`, loadable offline from its path:

    import evaluate
    from video_text_retrieval.evaluate_metric import VIDEO_RETRIEVAL_METRIC_PATH
    metric = evaluate.load(VIDEO_RETRIEVAL_METRIC_PATH)
    metric.compute(predictions=sims.tolist(), references=text_to_video)

The plain function :func:`video_text_retrieval.metrics.retrieval_metrics` is faster and needs no
`evaluate` import (which alone costs seconds); use this wrapper where an `evaluate` module is expected.
"""

from pathlib import Path

VIDEO_RETRIEVAL_METRIC_PATH = str(Path(__file__).parent / "video_retrieval")

__all__ = ["VIDEO_RETRIEVAL_METRIC_PATH"]
