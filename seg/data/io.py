"""Reading images and index masks from disk, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

INDEX_MASK_MODES = ("P", "L")


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 HxWx3 RGB; a missing, unreadable or truncated file raises naming it."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    if data is None:
        raise FileNotFoundError(f"{path}: image file does not exist")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ValueError(f"{path}: cannot decode image (corrupt or not an image file)")
    # OpenCV 4.x decodes a truncated JPEG with only a warning: check the end-of-image marker ourselves
    if data[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in data[-16:].tobytes():
        raise ValueError(f"{path}: truncated JPEG (no end-of-image marker)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_index_mask(path: str | Path) -> np.ndarray:
    """Read a class-index mask (palette 'P' or grayscale 'L' PNG) as uint8 HxW, without palette conversion."""
    try:
        with Image.open(path) as im:
            if im.mode not in INDEX_MASK_MODES:
                raise ValueError(
                    f"{path}: mask is in mode {im.mode}; expected an index mask (palette 'P' or grayscale 'L'), "
                    "not a colour-coded RGB mask"
                )
            return np.array(im, dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: mask file does not exist") from None
    except (OSError, SyntaxError) as e:  # PIL raises OSError for truncated or non-image files
        raise ValueError(f"{path}: cannot decode mask ({e})") from None


def write_index_mask(path: str | Path, mask: np.ndarray, palette: np.ndarray) -> None:
    """Write a uint8 HxW index mask as a palette PNG (the VOC format)."""
    im = Image.fromarray(mask.astype(np.uint8))  # mode L; putpalette turns it into P keeping the indices
    im.putpalette(palette[:256].astype(np.uint8).reshape(-1).tolist())
    im.save(path)
