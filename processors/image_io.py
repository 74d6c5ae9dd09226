"""Image decoding for image-text pairs used as one-frame clips.

An image is a clip of one frame: `load_image` returns a uint8 `(1, H, W, 3)` RGB array, the layout
`video_io.load_video` returns for videos, so images and videos share every later step (augmentation,
normalisation, the models' video towers).

Only third-party imports (PIL, numpy), so the module can be copied into a Hub model folder.
"""

from __future__ import annotations

import io
import os

import numpy as np

class ImageDecodingError(RuntimeError):
    """Bytes or a file that PIL cannot decode as an image; the message names the source."""


def decode_image(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, WebP, ...) to a one-frame clip.

    The EXIF orientation is applied (phone photos in web-crawled sets such as CC3M are often stored
    rotated with an orientation tag) and the image is converted to RGB (greyscale, palette, CMYK and
    alpha images occur in web data). Animated images give their first frame.

    Args:
        data: the encoded bytes.
        source: a name for error messages (a file or a shard member).

    Returns:
        `np.ndarray` uint8 of shape `(1, H, W, 3)`, RGB.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as image:
            image = ImageOps.exif_transpose(image)
            array = np.array(image.convert("RGB"), dtype=np.uint8)  # a writable copy (torch.from_numpy needs one)
    except Exception as error:  # PIL raises UnidentifiedImageError, OSError (truncated), SyntaxError, ...
        raise ImageDecodingError(f"Could not decode image {source!r}: {type(error).__name__}: {error}") from error
    if array.ndim != 3 or array.shape[-1] != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageDecodingError(f"Image {source!r} decoded to shape {array.shape}; expected (H, W, 3)")
    return np.ascontiguousarray(array[None])


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as a uint8 `(1, H, W, 3)` RGB clip (see `decode_image`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image file not found: {path!r}")
    with open(path, "rb") as handle:
        return decode_image(handle.read(), source=path)


__all__ = ["ImageDecodingError", "decode_image", "load_image"]
