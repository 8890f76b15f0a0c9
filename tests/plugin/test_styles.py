"""The plugin's layer styles as a user sees them: each output raster rendered with its .qml style."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qgis.core import QgsMapRendererSequentialJob, QgsMapSettings, QgsRasterLayer
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor

from .conftest import write_raster

BLOCK_PX = 4  # each value fills a BLOCK_PX square, rendered one screen pixel per raster pixel


def rendered_colours(unet_buildings, folder: Path, kind: str, values: list[int]) -> list[QColor]:
    """Writes one row of value blocks as the engine encodes that kind (uint8, nodata 255), styles it as
    the plugin does and renders it on a transparent background; returns each block's centre colour."""
    from unet_buildings.plugin.layers import apply_style

    row = np.repeat(np.array(values, np.uint8), BLOCK_PX)
    path = write_raster(folder / f"{kind}.tif", np.tile(row, (BLOCK_PX, 1))[None], nodata=255, kind=kind)
    layer = QgsRasterLayer(str(path), kind)
    apply_style(layer, kind)
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(layer.extent())
    settings.setOutputSize(QSize(layer.width(), layer.height()))
    settings.setBackgroundColor(QColor(0, 0, 0, 0))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    return [image.pixelColor(index * BLOCK_PX + BLOCK_PX // 2, BLOCK_PX // 2) for index in range(len(values))]


def test_probability_is_transparent_when_low_and_a_warm_see_through_colour_when_high(unet_buildings, tmp_path) -> None:
    zero, low, half, high, one, nodata = rendered_colours(
        unet_buildings, tmp_path, "probability", [0, 25, 127, 220, 254, 255]
    )
    assert zero.alpha() == low.alpha() == nodata.alpha() == 0  # the image shows through
    # stronger with the probability, yet the roof under it stays visible where the model is sure
    assert 0 < half.alpha() < high.alpha() < one.alpha() <= 160
    for colour in (half, high, one):
        assert colour.red() >= 150 and colour.red() > 1.5 * max(colour.green(), colour.blue())  # orange to red


def test_mask_shows_buildings_only(unet_buildings, tmp_path) -> None:
    background, building, nodata = rendered_colours(unet_buildings, tmp_path, "mask", [0, 1, 255])
    assert background.alpha() == nodata.alpha() == 0
    assert building.alpha() >= 150 and building.red() > building.blue()


def test_error_map_has_four_distinct_colours_and_faint_true_negatives(unet_buildings, tmp_path) -> None:
    tn, fp, fn, tp, nodata = rendered_colours(unet_buildings, tmp_path, "error_map", [0, 1, 2, 3, 255])
    assert nodata.alpha() == 0
    assert 0 < tn.alpha() < min(fp.alpha(), fn.alpha(), tp.alpha())  # evaluated area visible, image still readable
    assert len({colour.rgb() for colour in (tn, fp, fn, tp)}) == 4
    assert fp.red() > fp.blue() and fn.blue() > fn.red() and tp.green() > max(tp.red(), tp.blue())
