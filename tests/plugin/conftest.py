"""Fixtures for the plugin tests: the plugin loaded in a real (offscreen) QGIS, tiny generated scenes.

The plugin is imported as the package ``unet_buildings``, as QGIS imports it, from a folder that holds
a link of that name to the repository (``.qgis-plugins`` made by ``make setup``, else a temporary one).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from qgis.core import QgsProcessingFeedback
from qgis.PyQt.QtWidgets import QApplication, QDialog
from rasterio.transform import from_origin

from tests.engine.scenes import write_geotiff

REPO = Path(__file__).resolve().parents[2]
CRS = "EPSG:32736"  # metric (UTM 36S)
PIXEL_M = 0.5
# the scenes lie on UTM's central meridian (x 500 000), where the projection scales the ground by 0.9996
GROUND_M_PER_MAP_M = 1 / 0.9996
SIZE_PX = 64
# two square buildings (row, column, side in pixels); 16 px = 8 map metres, so 64 square map metres each
BUILDINGS_PX = ((8, 8, 16), (36, 32, 16))


class KeptMessages(QgsProcessingFeedback):
    """Processing feedback that keeps what an algorithm said, for the tests to read."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.warnings: list[str] = []

    def pushInfo(self, info: str) -> None:  # noqa: N802  (QGIS's name)
        self.lines.append(info)

    def pushWarning(self, warning: str) -> None:  # noqa: N802
        self.warnings.append(warning)


def plugins_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = REPO / ".qgis-plugins"
    if (folder / "unet_buildings" / "metadata.txt").exists():
        return folder
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "unet_buildings").symlink_to(REPO, target_is_directory=True)
    return folder


@pytest.fixture(scope="session")
def plugins_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the plugin as ``unet_buildings`` (what QGIS_PLUGINPATH names)."""
    return plugins_folder(tmp_path_factory)


@pytest.fixture(scope="session")
def unet_buildings(plugins_dir: Path):
    sys.path.insert(0, str(plugins_dir))
    return importlib.import_module("unet_buildings")


@pytest.fixture(scope="session")
def plugin(unet_buildings, qgis_iface, qgis_processing):
    """The plugin as QGIS loads it: classFactory, then initGui (which registers the provider)."""
    instance = unet_buildings.classFactory(qgis_iface)
    instance.initGui()
    yield instance
    instance.unload()


@dataclass
class Scene:
    image: Path  # 3-band uint8, bright roofs on darker ground
    labels: Path  # class raster: 2 building, 1 other, 255 nodata (none here)
    polygons: Path  # the same buildings as a GeoPackage
    mask: Path  # a building mask as the engine writes it (1 building, 0 background, 255 nodata)
    folder: Path


def write_raster(path: Path, bands: np.ndarray, nodata: float | None = None, kind: str | None = None) -> Path:
    return write_geotiff(
        path, bands, crs=CRS, transform=from_origin(500000, 9000000, PIXEL_M, PIXEL_M), nodata=nodata, kind=kind
    )


def write_polygons(path: Path) -> Path:
    from osgeo import ogr, osr

    ogr.UseExceptions()
    reference = osr.SpatialReference()
    reference.ImportFromEPSG(32736)
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer("buildings", reference, ogr.wkbPolygon)
    for row, column, side in BUILDINGS_PX:
        left, top = 500000 + column * PIXEL_M, 9000000 - row * PIXEL_M
        right, bottom = left + side * PIXEL_M, top - side * PIXEL_M
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(
            ogr.CreateGeometryFromWkt(
                f"POLYGON(({left} {top},{right} {top},{right} {bottom},{left} {bottom},{left} {top}))"
            )
        )
        layer.CreateFeature(feature)
    source = None
    return path


def make_scene(folder: Path) -> Scene:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    building = np.zeros((SIZE_PX, SIZE_PX), bool)
    for row, column, side in BUILDINGS_PX:
        building[row : row + side, column : column + side] = True
    image = rng.integers(40, 90, (3, SIZE_PX, SIZE_PX)).astype(np.uint8)
    image[:, building] = rng.integers(180, 240, (3, int(building.sum()))).astype(np.uint8)
    return Scene(
        image=write_raster(folder / "image.tif", image),
        labels=write_raster(folder / "labels.tif", np.where(building, 2, 1).astype(np.uint8)[None], 255),
        polygons=write_polygons(folder / "buildings.gpkg"),
        mask=write_raster(folder / "mask.tif", building.astype(np.uint8)[None], 255, "mask"),
        folder=folder,
    )


@pytest.fixture(scope="session")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    return make_scene(tmp_path_factory.mktemp("scene"))


@pytest.fixture(scope="session")
def model_file(unet_buildings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained, tiny model file (its predictions are noise: tests use THRESHOLD 0 or 1 where they
    need a known mask). Made with the engine's own model-file writer, so it loads as a trained one does."""
    import torch
    from unet_buildings.model.net.modelfile import ModelInfo, save_model
    from unet_buildings.model.net.network import UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig(in_bands=3, base_width=4, depth=2))
    info = ModelInfo(
        tile_size_px=32, threshold=0.5, building_values=[2], pixel_size=[PIXEL_M, PIXEL_M], crs_units="metre"
    )
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(path, net, info)
    return path


def shown_dialogs() -> list[QDialog]:
    """The dialog windows open now (the plugin's report and help windows among them)."""
    return [window for window in QApplication.topLevelWidgets() if window.isVisible() and isinstance(window, QDialog)]
