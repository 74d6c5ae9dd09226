#!/usr/bin/env python
"""Train and evaluate T-MASS or UNIFY for video-text retrieval with Accelerate.

One CPU, one GPU or many:

    accelerate launch examples/run_retrieval.py --model tmass --data_dir outputs/demo/data --output_dir outputs/tmass
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 examples/run_retrieval.py ...

Data: a folder holding `train.jsonl`, `validation.jsonl` and `test.jsonl` in the common schema
(`{"video_id", "video_path" relative to the jsonl's folder, "captions": [...]}`); it is only read.
`--generate_synthetic_data` writes the embedded synthetic set into a new or empty folder first.
Real data sets (MSR-VTT, DiDeMo, MSVD, LSMDC) are converted to that schema with
`video_text_retrieval.data.loaders` (see the README).

Model: `--model tmass|unify` builds a small model from scratch (tokenizer built from the training
captions), or `--model_name_or_path` loads a saved folder (`AutoModel`/`AutoProcessor`).

The output folder ends up as a model folder (`AutoModel.from_pretrained(output_dir)` works) with its
processor, a model card (README.md), `metrics.json`, plots and `checkpoints/` for `--resume`.
The training itself is the installed package `video_text_retrieval.training` (see docs/training.md).
"""

from video_text_retrieval.training import main

if __name__ == "__main__":
    main()
