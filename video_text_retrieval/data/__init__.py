"""Video-text data sets in one schema: one JSON object per video,
`{"video_id": str, "video_path": str (relative to the annotation file's folder), "captions": [str, ...]}`.

Submodules, imported explicitly (this package imports nothing heavy):

* `video_text_retrieval.data.synthetic`: the embedded synthetic data set (real mp4 files).
* `video_text_retrieval.data.tokenizers`: tokenizers built offline from captions.
* `video_text_retrieval.data.loaders`: MSR-VTT, DiDeMo, MSVD and LSMDC annotation loaders, jsonl
  writing and `datasets` loading.
"""
