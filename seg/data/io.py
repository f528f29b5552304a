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


SCALING_HELP = (
    "data.image_scaling=dtype (the dtype's whole range), a maximum such as data.image_scaling=4095 (a 12-bit "
    "sensor's), or data.image_scaling=percentile (each image's 0.5-99.5th percentiles)"
)
EXTRA_BANDS = ("error", "drop", "keep")
DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # PIL's modes of images deeper than 8 bits


def is_deep(mode: str) -> bool:
    """Whether a mode from :func:`read_header` is deeper than 8 bits (PIL's ``I;16``..., or ``RGB;16``: a 16-bit
    colour PNG or TIFF, which PIL reports as ``RGB``)."""
    return mode in DEEP_MODES or mode.endswith((";16", ";32"))


def _stored_bits(im: Image.Image, f) -> int:
    """Bits per sample as stored, for the formats PIL reports at 8 bits when they hold more: PNG (the IHDR's bit
    depth byte) and TIFF (BitsPerSample); 8 for the rest."""
    if im.format == "PNG":
        f.seek(24)
        depth = f.read(1)
        return depth[0] if depth else 8
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        return max(bits) if isinstance(bits, tuple) else int(bits)
    return 8


def check_image_options(scaling: str | float | None, extra_bands: str) -> str | float | None:
    """``scaling`` checked and normalised (``"4095"`` -> 4095.0); ValueError naming the key otherwise."""
    if extra_bands not in EXTRA_BANDS:
        raise ValueError(f"data.extra_bands={extra_bands!r}; expected one of {EXTRA_BANDS}")
    if scaling is None or scaling in ("dtype", "percentile"):
        return scaling
    try:
        value = float(scaling)
    except (TypeError, ValueError) as e:
        raise ValueError(f"data.image_scaling={scaling!r}; expected null, {SCALING_HELP}") from e
    if not value > 0:
        raise ValueError(f"data.image_scaling={scaling!r}; a maximum must be positive")
    return value


def to_uint8(image: np.ndarray, scaling: str | float, path: str | Path = "image") -> np.ndarray:
    """``image`` of any depth as uint8 by the stated rule: ``dtype`` maps the dtype's range (0-65535 for uint16;
    0-1 for floats) to 0-255, a number maps 0-that number, ``percentile`` each image's 0.5-99.5th percentiles;
    values outside are clipped."""
    x = image.astype(np.float32)
    if scaling == "dtype":
        lo, hi = 0.0, float(np.iinfo(image.dtype).max) if np.issubdtype(image.dtype, np.integer) else 1.0
    elif scaling == "percentile":
        lo, hi = (float(v) for v in np.percentile(x, (0.5, 99.5)))
        hi = hi if hi > lo else lo + 1.0  # a flat image: all black rather than a division by zero
    else:
        lo, hi = 0.0, float(scaling)
    return np.clip(np.rint((x - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _bands(image: np.ndarray) -> int:
    return 1 if image.ndim == 2 else image.shape[2]


def _describe(image: np.ndarray) -> str:
    lo, hi = image.min(), image.max()
    return f"{image.shape[1]}x{image.shape[0]}, {_bands(image)} band(s), {image.dtype}, values {lo:g}-{hi:g}"


def _refuse_depth(path: str | Path, image: np.ndarray) -> np.ndarray:
    """ValueError for an image deeper than 8 bits read without ``data.image_scaling``."""
    what = f"{path}: {_describe(image)}; the model takes 8-bit images"
    raise ValueError(f"{what}: choose how to convert with {SCALING_HELP}")


def read_image(path: str | Path, scaling: str | float | None = None, extra_bands: str = "error") -> np.ndarray:
    """Decode an image file to uint8 HxWx3 RGB; a missing, unreadable or truncated file raises naming it.

    The file is read at its stored depth and band count. 8-bit images are used as stored (one band: grey,
    repeated to three; a fourth band that is a fully opaque alpha: dropped). Any other depth (16-bit PNG or TIFF,
    float TIFF) is converted by ``scaling`` (:func:`to_uint8`; ``data.image_scaling``), and without a rule it is an
    error naming the file, its shape, dtype and values and the setting to choose; so is a band beyond the third
    that carries data, unless ``extra_bands`` (``data.extra_bands``) is ``drop`` (the first three are kept) or
    ``keep``: every band as stored, grey as one band (a model with ``model.net.in_channels`` bands). The first
    three bands are RGB in that order.
    """
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    if data is None:
        raise FileNotFoundError(f"{path}: image file does not exist")
    # IMREAD_IGNORE_ORIENTATION: OpenCV would otherwise rotate by the EXIF tag while the mask stays as stored
    flags = cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise ValueError(f"{path}: cannot decode image (corrupt or not an image file)")
    # OpenCV 4.x decodes a truncated JPEG with only a warning: check the end-of-image marker ourselves
    if data[:2].tobytes() == b"\xff\xd8" and not _jpeg_ends(data[-16:].tobytes(), lambda: data.tobytes()):
        raise ValueError(f"{path}: truncated JPEG (no end-of-image marker)")
    return model_bands(image, path, scaling, extra_bands)


def model_bands(
    image: np.ndarray, path: str | Path, scaling: str | float | None, extra_bands: str, bgr: bool = True
) -> np.ndarray:
    """A decoded image (or a band of its rows) at its stored depth as the model's uint8 RGB, by the rules of
    :func:`read_image`; ``bgr``: the first three bands are in OpenCV's order (False: RGB, as tifffile reads)."""
    bands = _bands(image)

    def rgb(x: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(x, cv2.COLOR_BGR2RGB) if bgr else x

    if extra_bands == "keep":
        if image.dtype != np.uint8:
            image = to_uint8(image, scaling, path) if scaling is not None else _refuse_depth(path, image)
        if image.ndim == 2:
            return image[..., None]
        first = rgb(np.ascontiguousarray(image[..., :3])) if bands >= 3 else image
        return np.concatenate([first, image[..., 3:]], axis=2) if bands > 3 else first
    if bands > 3:
        extra = image[..., 3:]
        opaque_alpha = (
            bands == 4 and np.issubdtype(image.dtype, np.integer) and extra.min() == np.iinfo(image.dtype).max
        )
        if not opaque_alpha and extra_bands != "drop":
            raise ValueError(
                f"{path}: {_describe(image)}: band 4 carries data and the model takes 3 bands (RGB); "
                "data.extra_bands=drop keeps the first three, data.extra_bands=keep all of them (for a model with "
                "model.net.in_channels set to their number)"
            )
        image = image[..., :3]
    if image.dtype != np.uint8:
        image = to_uint8(image, scaling, path) if scaling is not None else _refuse_depth(path, image)
    if _bands(image) == 1:
        return np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    return rgb(np.ascontiguousarray(image))


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
    """``((width, height), mode)`` of an image file from its header alone, nothing decoded (~0.1 ms); a colour
    image deeper than 8 bits has the mode ``RGB;16`` (:func:`is_deep`).

    Also checks that a JPEG or PNG file is complete (its end marker is there). Raises naming the file and
    ``what`` it is ("image", "mask") when it is missing, unreadable or truncated.
    """
    try:
        with open(path, "rb") as f:
            with Image.open(f) as im:
                size, mode, fmt = im.size, im.mode, im.format
                bits = _stored_bits(im, f)
                if bits > 8 and mode not in DEEP_MODES:
                    mode = f"{mode};{bits}"  # RGB;16: PIL itself would read it at 8 bits
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
