"""Images larger than memory: read by bands of rows, class maps written as tiled TIFFs band by band.

A tiled or striped TIFF (what GDAL, QGIS and slide scanners write) is read chunk by chunk with tifffile: only the
chunks a band of rows touches are decoded, so memory holds a band, not the image. Any other file is decoded whole
by :func:`seg.data.io.read_image` and served band by band from memory. Either way the pixels pass the same depth and
band rules (``data.image_scaling``, ``data.extra_bands``) as in training.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from seg.data.io import model_bands, read_image
from seg.utils.atomic import atomic_write

TIFF_SUFFIXES = (".tif", ".tiff")
MASK_TILE = 256  # side of the tiles of a written class map (GDAL's default block size)


class RowSource(Protocol):
    """An image that hands out bands of rows as the model's uint8 (h, W, bands)."""

    path: Path
    height: int
    width: int

    def read(self, y0: int, y1: int) -> np.ndarray: ...

    def close(self) -> None: ...


class ArrayRows:
    """A decoded image served band by band (the whole image is in memory)."""

    def __init__(self, path: str | Path, image: np.ndarray) -> None:
        self.path, self.image = Path(path), image
        self.height, self.width = image.shape[:2]

    def read(self, y0: int, y1: int) -> np.ndarray:
        return self.image[y0:y1]

    def close(self) -> None:
        """Nothing to release: the image is in memory."""


class NotChunked(Exception):
    """A TIFF that :class:`TiffRows` does not read chunk by chunk (layout or codec): decoded whole instead."""


class TiffRows:
    """A tiled or striped TIFF read chunk by chunk: a band of rows decodes only the chunk rows it touches (the last
    two chunk rows are kept, as bands of windows overlap)."""

    def __init__(self, path: str | Path, scaling: str | float | None, extra_bands: str) -> None:
        import tifffile

        self.path, self.scaling, self.extra_bands = Path(path), scaling, extra_bands
        try:
            self._tif = tifffile.TiffFile(self.path)
        except Exception as e:
            raise NotChunked(f"{path}: tifffile cannot open it") from e
        try:
            page = self._tif.pages[0]
            if page.planarconfig != 1 and page.samplesperpixel > 1:
                raise NotChunked(f"{path}: bands stored as separate planes")
            if page.imagedepth != 1 or not page.dataoffsets:
                raise NotChunked(f"{path}: a volume, or no image data")
            self._page = page
            self.height, self.width = int(page.imagelength), int(page.imagewidth)
            self._chunk_h = int(page.tilelength if page.is_tiled else page.rowsperstrip or self.height)
            self._chunk_w = int(page.tilewidth if page.is_tiled else self.width)
            self._across = math.ceil(self.width / self._chunk_w)
            self._cache: dict[int, np.ndarray] = {}
            try:
                self._chunk_row(0)  # a codec tifffile lacks fails here, not in the middle of the image
            except Exception as e:
                raise NotChunked(f"{path}: tifffile cannot decode its chunks") from e
            self.read(0, min(self._chunk_h, self.height))  # the depth and band rules, checked on the first rows
        except Exception:
            self._tif.close()
            raise

    def _chunk_row(self, r: int) -> np.ndarray:
        """Chunk row ``r`` as stored (h, W, samples), any depth."""
        if r not in self._cache:
            page, fh = self._page, self._tif.filehandle
            rows = min(self._chunk_h, self.height - r * self._chunk_h)
            out = None
            for c in range(self._across):
                index = r * self._across + c
                fh.seek(page.dataoffsets[index])
                data = fh.read(page.databytecounts[index])
                chunk, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
                chunk = chunk.reshape(chunk.shape[-3:])  # (h, w, samples), padded to the tile size
                if out is None:
                    out = np.empty((rows, self.width, chunk.shape[-1]), dtype=chunk.dtype)
                x0 = c * self._chunk_w
                x1 = min(x0 + self._chunk_w, self.width)
                out[:, x0:x1] = chunk[:rows, : x1 - x0]
            self._cache = {k: v for k, v in self._cache.items() if k == r - 1}  # keep the previous chunk row
            self._cache[r] = out
        return self._cache[r]

    def read(self, y0: int, y1: int) -> np.ndarray:
        first, last = y0 // self._chunk_h, (y1 - 1) // self._chunk_h
        parts = [self._chunk_row(r) for r in range(first, last + 1)]
        band = np.concatenate(parts) if len(parts) > 1 else parts[0]
        offset = first * self._chunk_h
        band = band[y0 - offset : y1 - offset]
        band = band[..., 0] if band.shape[-1] == 1 else band  # grey as (h, W), as OpenCV decodes it
        try:
            return model_bands(band, self.path, self.scaling, self.extra_bands, bgr=False)
        except ValueError as e:
            raise ValueError(f"{e} (rows {y0}-{y1} of the {self.width}x{self.height} image)") from e

    def close(self) -> None:
        self._tif.close()


def open_rows(path: str | Path, scaling: str | float | None = None, extra_bands: str = "error") -> RowSource:
    """The image at ``path`` as a :class:`RowSource`: a chunked TIFF read by chunks (:class:`TiffRows`) where
    tifffile can decode it and the scaling works band by band (``percentile`` needs the whole image), else the
    whole image decoded by :func:`read_image` (:class:`ArrayRows`). Errors name the file, as ``read_image``'s do."""
    if Path(path).suffix.lower() in TIFF_SUFFIXES and scaling != "percentile" and Path(path).is_file():
        try:
            return TiffRows(path, scaling, extra_bands)
        except NotChunked:  # OpenCV decodes it whole
            pass
    return ArrayRows(path, read_image(path, scaling, extra_bands))


def _tiles(rows: Iterable[np.ndarray], width: int, tile: int) -> Iterator[np.ndarray]:
    """Bands of rows (any heights, top to bottom) regrouped as tile x tile blocks in row-major order, the last row
    and column of tiles padded with zeros (TIFF stores whole tiles)."""
    pending: list[np.ndarray] = []
    held = 0

    def tile_row(band: np.ndarray) -> Iterator[np.ndarray]:
        padded = np.zeros((tile, math.ceil(width / tile) * tile), dtype=np.uint8)
        padded[: band.shape[0], :width] = band
        for x0 in range(0, width, tile):
            yield padded[:, x0 : x0 + tile]

    for band in rows:
        pending.append(band)
        held += band.shape[0]
        while held >= tile:
            joined = np.concatenate(pending)
            yield from tile_row(joined[:tile])
            rest = joined[tile:]
            pending, held = ([rest] if len(rest) else []), len(rest)
    if held:
        yield from tile_row(np.concatenate(pending))


def write_tiled_mask(
    path: str | Path, rows: Iterable[np.ndarray], height: int, width: int, palette: np.ndarray | None = None
) -> None:
    """Write a uint8 class map, given as bands of rows top to bottom, as a tiled, deflate-compressed TIFF with the
    dataset's palette (a palette TIFF: GDAL and QGIS show the colours, the values stay class indices). Each band is
    written as it comes, so memory holds one row of tiles; the file appears whole or not at all."""
    import tifffile

    colormap = None
    if palette is not None:
        table = np.zeros((256, 3), dtype=np.uint16)
        table[: len(palette[:256])] = np.asarray(palette[:256], dtype=np.uint16) * 257
        colormap = table.T.copy()
    with atomic_write(path) as f, tifffile.TiffWriter(f) as tiff:
        tiff.write(
            _tiles(rows, width, MASK_TILE),
            shape=(height, width),
            dtype=np.uint8,
            tile=(MASK_TILE, MASK_TILE),
            compression="zlib",
            photometric="palette" if colormap is not None else "minisblack",
            colormap=colormap,
        )
