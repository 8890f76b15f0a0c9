"""The GeoTIFFs the engine writes: one creation profile for all of them (probability, mask, error map,
assembled shards), and the probability and mask GeoTIFFs of a prediction: created on the output grid,
written in row blocks, encoded as ``rasters.py`` says, verified and renamed into place when complete,
removed on failure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from .files import incomplete_output, publish, temporary_beside
from .rasters import (
    KIND_TAG,
    MASK_NODATA,
    PROBABILITY_F32_NODATA,
    PROBABILITY_U8_NODATA,
    PROBABILITY_U8_SCALE,
    Grid,
    written_geotiff_problem,
)

# Side of the square GeoTIFF tiles: the prediction writer flushes whole rows of these blocks and the
# inference panels are multiples of it, so every compressed block is written once.
OUTPUT_BLOCK_PX = 256


def create_geotiff(path: Path, grid: Grid, dtype: str, nodata: float, kind: str) -> rasterio.io.DatasetWriter:
    """A single-band GeoTIFF on ``grid`` tagged with its ``kind``, open for writing. One profile for every
    raster the engine writes: tiled, DEFLATE at GDAL's default level with the predictor for the data
    type. Measured on 32 MP of real-scene rasters (2 CPU cores): on masks and error maps the default
    level writes as fast as level 1 and 30 % smaller; on probability rasters it costs about 2 s (uint8)
    or 10 s (float32) more per 32 MP for 10-15 % smaller files, written by the prediction's writer
    thread while the network runs. 512-px tiles and GDAL's multi-threaded compression gained nothing."""
    block = OUTPUT_BLOCK_PX
    profile = dict(
        driver="GTiff",
        width=grid.width,
        height=grid.height,
        count=1,
        dtype=dtype,
        crs=grid.crs,
        transform=grid.transform,
        nodata=nodata,
        compress="deflate",
        predictor=3 if dtype == "float32" else 2,
        BIGTIFF="IF_SAFER",
    )
    if grid.width >= block and grid.height >= block:  # GeoTIFF tiles larger than the raster only waste space
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    dataset = rasterio.open(path, "w", **profile)
    dataset.update_tags(**{KIND_TAG: kind})
    return dataset


@dataclass
class _OutputFile:
    path: Path
    temporary: Path
    dataset: rasterio.io.DatasetWriter
    kind: str
    pending: list  # encoded rows not yet making a whole GeoTIFF block row


class OutputRasters:
    """The probability and/or mask GeoTIFFs of one prediction, fed with float32 probability rows
    (NaN = nodata) one column panel at a time, each top to bottom. Rows are encoded at once (1 byte
    a pixel for uint8 outputs) and written in whole GeoTIFF block rows of the panel, so each
    compressed block is written once whatever the size of GDAL's block cache when panel borders
    are multiples of the block size. Files live under temporary names until ``commit``."""

    def __init__(
        self,
        grid: Grid,
        probability_path: Path | None,
        probability_dtype: str,
        mask_path: Path | None,
        threshold: float,
        overviews: bool = False,
    ) -> None:
        self.grid = grid
        self.probability_path, self.mask_path = probability_path, mask_path
        self.probability_dtype = probability_dtype
        self.threshold = threshold
        self.overviews = overviews
        self._pending_col_off = 0
        self._pending_row_off = 0
        self._pending_rows = 0
        self._files: list[_OutputFile] = []
        try:
            if probability_path is not None:
                nodata = PROBABILITY_U8_NODATA if probability_dtype == "uint8" else PROBABILITY_F32_NODATA
                self._open(probability_path, probability_dtype, nodata, "probability")
            if mask_path is not None:
                self._open(mask_path, "uint8", MASK_NODATA, "mask")
        except BaseException:
            self.abort()
            raise

    def _open(self, path: Path, dtype: str, nodata: float, kind: str) -> None:
        temporary = temporary_beside(path, ".part.tif")
        try:
            dataset = create_geotiff(temporary, self.grid, dtype, nodata, kind)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self._files.append(_OutputFile(path, temporary, dataset, kind, []))

    def _encode(self, kind: str, probability: np.ndarray, nodata: np.ndarray) -> np.ndarray:
        if kind == "mask":
            encoded = (probability >= self.threshold).view(np.uint8)  # NaN compares False
            encoded[nodata] = MASK_NODATA
        elif self.probability_dtype == "uint8":
            scaled = probability * PROBABILITY_U8_SCALE
            np.nan_to_num(scaled, copy=False)
            encoded = np.rint(scaled, out=scaled).astype(np.uint8)
            encoded[nodata] = PROBABILITY_U8_NODATA
        else:
            encoded = probability.copy()
            encoded[nodata] = PROBABILITY_F32_NODATA
        return encoded

    def _flush(self, rows: int) -> None:
        for output in self._files:
            block = np.concatenate(output.pending) if len(output.pending) > 1 else output.pending[0]
            window = Window(self._pending_col_off, self._pending_row_off, block.shape[1], rows)
            output.dataset.write(block[:rows], 1, window=window)
            output.pending = [block[rows:]] if rows < len(block) else []
        self._pending_row_off += rows
        self._pending_rows -= rows

    def write(self, col_off: int, row_off: int, probability: np.ndarray) -> None:
        """Within a panel (same ``col_off`` and width) rows must arrive top to bottom without gaps;
        a new ``col_off`` starts the next panel."""
        if self._pending_rows and col_off != self._pending_col_off:
            self._flush(self._pending_rows)  # the previous panel's last rows
        if not self._pending_rows:
            self._pending_col_off, self._pending_row_off = col_off, row_off
        nodata = np.isnan(probability)
        for output in self._files:
            output.pending.append(self._encode(output.kind, probability, nodata))
        self._pending_rows += probability.shape[0]
        complete = self._pending_rows - self._pending_rows % OUTPUT_BLOCK_PX
        if complete:
            self._flush(complete)

    def commit(self) -> None:
        if self._pending_rows:
            self._flush(self._pending_rows)
        for output in self._files:
            if self.overviews:
                longest = max(self.grid.width, self.grid.height)
                factors = [2**level for level in range(1, 16) if longest >> level >= OUTPUT_BLOCK_PX]
                if factors:
                    resampling = Resampling.nearest if output.kind == "mask" else Resampling.average
                    output.dataset.build_overviews(factors, resampling)
            output.dataset.close()
        for output in self._files:  # GDAL only logs a failed write (a full disk): check before any rename
            problem = written_geotiff_problem(output.temporary, self.grid.width, self.grid.height)
            if problem:
                raise incomplete_output(output.path, problem)
        for output in self._files:
            publish(output.temporary, output.path)
        self._files = []

    def abort(self) -> None:
        for output in self._files:
            try:
                output.dataset.close()
            finally:
                output.temporary.unlink(missing_ok=True)
        self._files = []
