"""Prediction of one large raster split into shards that any scheduler can run in parallel.

Shard ``K/N`` predicts the K-th of N bands of rows of the input (``predict_raster(window=...)``):
it runs every tile touching its rows, normalises with the whole input's statistics, and writes
only its own rows, each pixel exactly as a prediction of the whole input would (the tiles, blend
weights and normalisation are the same; the tile rows at each shard border run in both shards,
one tile row of extra work per border). Its outputs sit beside the final ones, named
``<name>.shard-K-of-N.tif``. ``assemble`` then joins the N shards into the final output: a VRT
that refers to them (instant; keep the shard files), or one GeoTIFF encoded like an unsharded
prediction's (then the shard files can go).

Shard boundaries fall a tile overlap below the top of a tile row, where the fewest tiles meet.
Many rasters need no help from here: one ``python -m model predict`` per raster is already a
shard (GNU parallel, a Slurm array).

    python -m model predict big.tif --model m.pt --probability p.tif --mask mask.tif --shard 3/8
    python -m model assemble p.tif mask.tif --shards 8          # or p.vrt mask.vrt
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from xml.etree import ElementTree

from ..errors import InputError
from ..progress import CancelFn, ProgressFn, Reporter

if TYPE_CHECKING:  # the command line imports this module before it needs torch or rasterio
    from ..net.modelfile import LoadedModel
    from .predict import PredictionResult

SHARD_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
GDAL_TYPES = {"uint8": "Byte", "float32": "Float32"}  # the encodings prediction writes
ASSEMBLE_ROWS = 256  # rows copied at a time into an assembled GeoTIFF: one row of its blocks


def parse_shard(text: str) -> tuple[int, int]:
    """ "K/N" -> (K, N) with 1 <= K <= N."""
    match = SHARD_SPEC.match(text)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise InputError(f"A shard is given as K/N with 1 <= K <= N, e.g. '3/8' for the third of eight; got {text!r}.")
    return int(match.group(1)), int(match.group(2))


def shard_path(output: str | Path, index: int, count: int) -> Path:
    """Where shard ``index`` of ``count`` of ``output`` is written (always a GeoTIFF)."""
    output = Path(output)
    return output.with_name(f"{output.stem}.shard-{index}-of-{count}.tif")


def plan_row_shards(tile_rows: Sequence[int], overlap_px: int, height: int, count: int) -> list[tuple[int, int]]:
    """``count`` output row ranges ``[start, end)`` covering ``height`` rows, with about the same
    number of tile rows each. Each border lies ``overlap_px`` below the top of a tile row: on the
    regular grid the tile row above ends there, so only that one tile row is run by both shards."""
    if count > len(tile_rows):
        raise InputError(
            f"This raster has {len(tile_rows)} row(s) of tiles: split it into at most "
            f"{len(tile_rows)} shard(s), not {count}."
        )
    borders = [tile_rows[round(index * len(tile_rows) / count)] + overlap_px for index in range(1, count)]
    edges = [0, *borders, height]
    return list(zip(edges[:-1], edges[1:]))


def predict_shard(
    image_path: str | Path,
    model: str | Path | LoadedModel,
    index: int,
    count: int,
    *,
    probability_path: str | Path | None = None,
    mask_path: str | Path | None = None,
    device: str = "auto",
    tile_size_px: int | None = None,
    overlap_px: int | None = None,
    **options,
) -> PredictionResult:
    """Shard ``index`` of ``count`` of ``predict_raster(image_path, model, ...)``: the same options,
    written to ``shard_path`` of each output."""
    import rasterio
    from rasterio.windows import Window

    from ..net.device import resolve_device
    from ..net.modelfile import LoadedModel, load_model
    from .predict import predict_raster, tiling_options
    from .tiling import ground_phase_px, plan_tiles

    if not 1 <= index <= count:
        raise InputError(f"Shard {index} of {count} does not exist: shards are numbered 1 to {count}.")
    loaded = model if isinstance(model, LoadedModel) else load_model(Path(model), resolve_device(device))
    tile_px, overlap = tiling_options(loaded.info, tile_size_px, overlap_px)
    with rasterio.open(image_path) as dataset:
        width, height, phase = dataset.width, dataset.height, ground_phase_px(dataset.transform)
    layout = plan_tiles(width, height, tile_px, overlap, loaded.net.config.size_multiple_px, phase)
    rows = plan_row_shards(layout.rows, layout.overlap_px, height, count)[index - 1]
    return predict_raster(
        image_path,
        loaded,
        device=device,
        tile_size_px=tile_px,
        overlap_px=overlap,
        window=Window(0, rows[0], width, rows[1] - rows[0]),
        probability_path=shard_path(probability_path, index, count) if probability_path else None,
        mask_path=shard_path(mask_path, index, count) if mask_path else None,
        **options,
    )


def shard_predictor(spec: str) -> Callable[..., PredictionResult]:
    """``predict_raster``'s stand-in for the shard ``spec`` ("K/N"), for the command line."""
    index, count = parse_shard(spec)

    def predict(image_path, model, **options):
        return predict_shard(image_path, model, index, count, **options)

    return predict


@dataclass(frozen=True)
class _Shard:
    path: Path
    row_off: int
    height: int


def _check_shards(output: Path, count: int) -> tuple[list[_Shard], dict]:
    """The shard files of ``output`` in order, checked to stack into one raster, and that raster's
    width, height, CRS, transform, type, nodata and kind."""
    import rasterio

    from ..io.rasters import KIND_TAG

    paths = [shard_path(output, index, count) for index in range(1, count + 1)]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise InputError(
            f"Missing shard output(s) of '{output}': {', '.join(missing)}. Run the prediction with "
            f"--shard K/{count} for each of them first."
        )
    shards: list[_Shard] = []
    first: dict | None = None
    for path in paths:
        with rasterio.open(path) as dataset:
            described = dict(
                width=dataset.width,
                crs=dataset.crs,
                dtype=dataset.dtypes[0],
                nodata=dataset.nodata,
                kind=dataset.tags().get(KIND_TAG, ""),
                transform=dataset.transform,
                height=dataset.height,
                tags=dataset.tags(),
            )
        if first is None:
            first = described
        row_off = sum(shard.height for shard in shards)
        expected = first["transform"] * first["transform"].translation(0, row_off)
        same = {key: described[key] == first[key] for key in ("width", "crs", "dtype", "nodata", "kind")}
        if not all(same.values()) or not described["transform"].almost_equals(expected):
            raise InputError(
                f"'{path}' does not continue the shards before it (different "
                f"{', '.join(key for key, ok in same.items() if not ok) or 'position'}): the shards "
                f"of one output come from one input, model and set of options."
            )
        shards.append(_Shard(path, row_off, described["height"]))
    assert first is not None  # count >= 1 shard paths were read
    first["height"] = sum(shard.height for shard in shards)
    return shards, first


def _vrt_text(shards: list[_Shard], raster: dict, relative_to: Path) -> str:
    """A GDAL VRT stacking the shards, referring to them relative to the VRT's folder."""
    root = ElementTree.Element("VRTDataset", rasterXSize=str(raster["width"]), rasterYSize=str(raster["height"]))
    if raster["crs"] is not None:
        ElementTree.SubElement(root, "SRS").text = raster["crs"].to_wkt()
    ElementTree.SubElement(root, "GeoTransform").text = ", ".join(
        repr(value) for value in raster["transform"].to_gdal()
    )
    if raster["tags"]:  # the output kind and pixel-is-area, as in the shards
        metadata = ElementTree.SubElement(root, "Metadata")
        for key, value in raster["tags"].items():
            ElementTree.SubElement(metadata, "MDI", key=key).text = value
    band = ElementTree.SubElement(root, "VRTRasterBand", dataType=GDAL_TYPES.get(raster["dtype"], "Float32"), band="1")
    if raster["nodata"] is not None:
        ElementTree.SubElement(band, "NoDataValue").text = repr(float(raster["nodata"]))
    for shard in shards:
        source = ElementTree.SubElement(band, "SimpleSource")
        ElementTree.SubElement(source, "SourceFilename", relativeToVRT="1").text = os.path.relpath(
            shard.path, relative_to
        )
        ElementTree.SubElement(source, "SourceBand").text = "1"
        size = dict(xSize=str(raster["width"]), ySize=str(shard.height))
        ElementTree.SubElement(source, "SrcRect", {"xOff": "0", "yOff": "0", **size})
        ElementTree.SubElement(source, "DstRect", {"xOff": "0", "yOff": str(shard.row_off), **size})
    return ElementTree.tostring(root, encoding="unicode")


def assemble(
    output: str | Path,
    count: int,
    *,
    remove_shards: bool = False,
    progress: ProgressFn | None = None,
    cancelled: CancelFn | None = None,
) -> Path:
    """Join the ``count`` shards of ``output`` into ``output``: a VRT referring to the shard files when
    its name ends in .vrt, else one GeoTIFF with the encoding, blocks and compression of an unsharded
    prediction (and ``remove_shards`` deletes the shard files afterwards)."""
    import rasterio

    from ..io.files import replaced_when_done, temporary_beside
    from ..io.outputs import create_geotiff
    from ..io.rasters import Grid, raster_windows, written_geotiff_problem

    output = Path(output)
    reporter = Reporter.of(progress, cancelled)
    as_vrt = output.suffix.lower() == ".vrt"
    if as_vrt and remove_shards:
        raise InputError("A VRT refers to the shard files: keep them, or assemble into a GeoTIFF.")
    shards, raster = _check_shards(output, count)
    if as_vrt:
        with replaced_when_done(output) as temporary:
            Path(temporary).write_text(_vrt_text(shards, raster, output.parent))
        reporter.report(1.0, f"Assembled {count} shards into {output.name}")
        return output
    vrt = temporary_beside(output, ".part.vrt")
    try:
        vrt.write_text(_vrt_text(shards, raster, vrt.parent))
        grid = Grid(
            raster["crs"].to_wkt() if raster["crs"] else "", raster["transform"], raster["width"], raster["height"]
        )

        def problem(written: Path) -> str | None:
            return written_geotiff_problem(written, grid.width, grid.height)

        with replaced_when_done(output, ".part.tif", verify=problem) as temporary, rasterio.open(vrt) as joined:
            written = create_geotiff(Path(temporary), grid, raster["dtype"], raster["nodata"], raster["kind"])
            try:
                for window in raster_windows(grid.width, grid.height, ASSEMBLE_ROWS):
                    reporter.check()
                    written.write(joined.read(1, window=window), 1, window=window)
                    reporter.report((window.row_off + window.height) / grid.height, f"Assembling {output.name}")
            finally:
                written.close()
    finally:
        vrt.unlink(missing_ok=True)
    if remove_shards:
        for shard in shards:
            shard.path.unlink()
    return output
