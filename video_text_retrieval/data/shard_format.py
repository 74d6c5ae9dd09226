"""Names shared by the shard writer and reader (kept free of heavy imports so that the converter starts
fast): the index file and the media extensions a sample may carry."""

INDEX_FILE = "index.json"
"""Written last by the converter: `{"shards": [{"name", "num_samples"}, ...], "num_samples", "kinds", ...}`."""

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".3gp", ".flv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
"""Member extensions (lower case, with the dot) read as a video or as an image."""
