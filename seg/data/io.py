"""Reading images and index masks from disk, with errors that name the file.

Pixels are read as stored: a JPEG's EXIF orientation tag is not applied (PIL and torchvision do not apply it
either, and masks are stored unrotated), so an image and its mask always line up. :func:`orientation_tagged`
finds the files that carry such a tag, for a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from seg.utils.atomic import atomic_write

log = logging.getLogger(__name__)
EXIF_ORIENTATION = 0x0112  # 1 = as stored; 2-8 = mirrored and/or rotated on display

# image files seg reads (data=folder, seg-predict): formats both OpenCV (pixels) and PIL (headers) read
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
INDEX_MASK_MODES = ("P", "L")
JPEG_END = b"\xff\xd9"  # end-of-image marker
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk that closes every PNG


def _jpeg_ends(tail: bytes, whole: Callable[[], bytes]) -> bool:
    """Whether a JPEG has its end-of-image marker: at the end (the fast, usual case) or before trailing data that
    some cameras append (phones' motion photos, maker trailers), found by reading the whole file."""
    return JPEG_END in tail or JPEG_END in whole()


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 HxWx3 RGB; a missing, unreadable or truncated file raises naming it."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    if data is None:
        raise FileNotFoundError(f"{path}: image file does not exist")
    # IMREAD_IGNORE_ORIENTATION: OpenCV would otherwise rotate by the EXIF tag while the mask stays as stored
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if image is None:
        raise ValueError(f"{path}: cannot decode image (corrupt or not an image file)")
    # OpenCV 4.x decodes a truncated JPEG with only a warning: check the end-of-image marker ourselves
    if data[:2].tobytes() == b"\xff\xd8" and not _jpeg_ends(data[-16:].tobytes(), lambda: data.tobytes()):
        raise ValueError(f"{path}: truncated JPEG (no end-of-image marker)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_index_mask(path: str | Path) -> np.ndarray:
    """Read a class-index mask (palette 'P' or grayscale 'L' PNG) as uint8 HxW, without palette conversion."""
    try:
        with Image.open(path) as im:
            check_index_mode(path, im.mode)
            return np.array(im, dtype=np.uint8)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{path}: mask file does not exist") from e
    except (OSError, SyntaxError) as e:  # PIL raises OSError for truncated or non-image files
        raise ValueError(f"{path}: cannot decode mask ({e})") from e


def check_index_mode(path: str | Path, mode: str) -> None:
    """ValueError naming ``path`` unless ``mode`` is an index-mask mode (palette 'P' or grayscale 'L')."""
    if mode not in INDEX_MASK_MODES:
        raise ValueError(
            f"{path}: mask is in mode {mode}; expected an index mask (palette 'P' or grayscale 'L'), "
            "not a colour-coded RGB mask"
        )


def read_header(path: str | Path, what: str = "image", tagged: list[Path] | None = None) -> tuple[tuple[int, int], str]:
    """``((width, height), mode)`` of an image file from its header alone, nothing decoded (~0.1 ms).

    Also checks that a JPEG or PNG file is complete (its end marker is there). Raises naming the file and
    ``what`` it is ("image", "mask") when it is missing, unreadable or truncated.
    """
    try:
        with open(path, "rb") as f:
            with Image.open(f) as im:
                size, mode, fmt = im.size, im.mode, im.format
                if tagged is not None and fmt == "JPEG" and int(im.getexif().get(EXIF_ORIENTATION, 1)) not in (0, 1):
                    tagged.append(Path(path))  # for one warning naming the rotated files
            f.seek(max(f.seek(0, 2) - 16, 0))
            tail = f.read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{path}: {what} file does not exist") from e
    except (OSError, SyntaxError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"{path}: cannot decode {what} (corrupt or not an image file)") from e
    if fmt == "JPEG" and not _jpeg_ends(tail, lambda: Path(path).read_bytes()):
        raise ValueError(f"{path}: truncated JPEG (no end-of-image marker)")
    if fmt == "PNG" and PNG_END not in tail:
        raise ValueError(f"{path}: truncated PNG (no IEND chunk at the end)")
    return size, mode


def orientation_tagged(path: str | Path) -> bool:
    """Whether ``path`` carries an EXIF orientation other than "as stored" (cameras set it on rotated shots)."""
    try:
        with Image.open(path) as im:
            return int(im.getexif().get(EXIF_ORIENTATION, 1)) not in (0, 1)
    except (OSError, SyntaxError, ValueError):
        return False


def warn_orientation_tags(paths: list[Path], show: int = 3, tagged: list[Path] | None = None) -> list[Path]:
    """Log one warning naming the JPEGs of ``paths`` that carry an EXIF orientation tag (or, when the caller has
    already found them while reading headers, those in ``tagged``); return them."""
    if tagged is None:
        tagged = [p for p in paths if Path(p).suffix.lower() in (".jpg", ".jpeg") and orientation_tagged(p)]
    if tagged:
        names = ", ".join(str(p) for p in tagged[:show]) + (
            f" and {len(tagged) - show} more" if len(tagged) > show else ""
        )
        log.warning(
            "%d image(s) carry an EXIF orientation tag (%s): seg reads pixels as stored, as the masks are, and does "
            "not rotate them; rotate the files themselves if the tag was meant",
            len(tagged),
            names,
        )
    return tagged


def write_index_mask(path: str | Path, mask: np.ndarray, palette: np.ndarray) -> None:
    """Write a uint8 HxW index mask as a palette PNG (the VOC format), whole or not at all."""
    im = Image.fromarray(mask.astype(np.uint8))  # mode L; putpalette turns it into P keeping the indices
    im.putpalette(palette[:256].astype(np.uint8).reshape(-1).tolist())
    with atomic_write(path) as f:
        im.save(f, format="PNG")


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write an HxW or HxWx3 (RGB) uint8 array in the format of ``path``'s suffix, whole or not at all; an error
    when it cannot be written (``cv2.imwrite`` only returns False)."""
    path = Path(path)
    bgr = image[..., ::-1] if image.ndim == 3 else image
    ok, encoded = cv2.imencode(path.suffix, np.ascontiguousarray(bgr))
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot encode a {image.shape} {image.dtype} image as {path.suffix}")
    with atomic_write(path) as f:
        f.write(encoded.tobytes())
