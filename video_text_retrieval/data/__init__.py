"""Video-text data sets in one schema: one JSON object per video,
`{"video_id": str, "video_path": str (relative to the annotation file's folder), "captions": [str, ...]}`.

Submodules, imported explicitly (this package imports nothing heavy):

* `video_text_retrieval.data.synthetic`: the embedded synthetic data set (real mp4 files), written only
  into an empty folder or one the generator made itself.
* `video_text_retrieval.data.tokenizers`: tokenizers built offline from captions, and the real CLIP BPE
  tokenizer built from its vocabulary file.
* `video_text_retrieval.data.loaders`: MSR-VTT, DiDeMo, MSVD, LSMDC, VATEX and Charades annotation
  loaders, jsonl writing and `datasets` loading.
* `video_text_retrieval.data.action_recognition`: HMDB51 and UCF101 (three official splits each) for
  zero-shot classification (records with `label` and `class_name`).
* `video_text_retrieval.data.annotation_io`: the readers every loader shares (BOM/CRLF-safe, errors
  naming file and line) and the restricted unpickler.
"""
