"""Writing building polygons without QGIS: GeoPackage or GeoJSON through GDAL's ``osgeo.ogr``
(the same GDAL that rasterio and QGIS load). The file is written under a temporary name and
renamed when complete, so a failed or cancelled run leaves no half-written layer."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import shapely

from ..errors import InputError
from .files import check_output_location, incomplete_output, replaced_when_done

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}
# (attribute key in the features, field name on disk, OGR field type name). The polygon's number is
# named "fid": a GeoPackage (and QGIS's writer to one) makes a field of that name its feature id
# column, instead of a second column of numbers beside it; GeoJSON keeps it as a property.
FIELDS = (
    ("id", "fid", "OFTInteger64"),
    ("area_m2", "area_m2", "OFTReal"),
    ("perimeter_m", "perimeter_m", "OFTReal"),
    ("mean_probability", "mean_probability", "OFTReal"),
    # where each polygon came from, so layers of several runs merged into one table stay apart
    ("source", "source", "OFTString"),
    ("model", "model", "OFTString"),
    ("created", "created", "OFTString"),
)  # the plugin's sinks are made from this table too (plugin/algorithms/vectorize.py)
TRANSACTION_FEATURES = 10_000  # GeoPackage inserts are far faster inside a transaction


def with_provenance(
    polygons: Iterable[tuple[shapely.Geometry, dict]], source: str | Path, model: str | Path | None = None
) -> Iterator[tuple[shapely.Geometry, dict]]:
    """``polygons`` with the provenance attributes of their run added to each: the file names of the image
    (or mask) and of the model, and the time of the run in UTC to the second (ISO 8601, sorts as text)."""
    made_from = {
        "source": Path(source).name,
        "model": Path(model).name if model else None,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    for shape, attributes in polygons:
        yield shape, {**attributes, **made_from}


def write_polygons(
    features: Iterable[tuple[shapely.Geometry, dict]],
    path: str | Path,
    crs_wkt: str,
    layer_name: str = "buildings",
) -> int:
    """Write ``(geometry, attributes)`` pairs to a GeoPackage or GeoJSON file (chosen by the
    suffix); returns the number of features written. Attributes missing or None are left null."""
    from osgeo import ogr, osr

    ogr.UseExceptions()
    path = Path(path)
    driver_name = DRIVERS.get(path.suffix.lower())
    if driver_name is None:
        raise InputError(
            f"Polygons can be written as GeoPackage (.gpkg) or GeoJSON (.geojson); '{path.name}' has another suffix."
        )
    check_output_location(path, "polygon output")
    count = 0

    def problem(written: Path) -> str | None:
        return written_layer_problem(written, layer_name, count)

    with replaced_when_done(path, ".part" + path.suffix, verify=problem) as temporary:
        temporary.unlink()  # OGR drivers refuse to create over an existing file
        source = layer = definition = None
        try:
            with _blamed_on(path):
                source = ogr.GetDriverByName(driver_name).CreateDataSource(str(temporary))
                reference = None
                if crs_wkt:
                    reference = osr.SpatialReference()
                    reference.ImportFromWkt(crs_wkt)
                    # keep x = easting / longitude whatever the CRS's official axis order
                    reference.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
                layer = source.CreateLayer(layer_name, reference, ogr.wkbPolygon)
                for _, field_name, field_type in FIELDS:
                    layer.CreateField(ogr.FieldDefn(field_name, getattr(ogr, field_type)))
                definition = layer.GetLayerDefn()
                layer.StartTransaction()
            for geometry, attributes in features:  # an error of the features' source passes through as it is
                with _blamed_on(path):
                    feature = ogr.Feature(definition)
                    feature.SetGeometry(ogr.CreateGeometryFromWkb(shapely.to_wkb(geometry)))
                    for key, field_name, _ in FIELDS:
                        value = attributes.get(key)
                        if value is not None:
                            feature.SetField(field_name, value)
                    layer.CreateFeature(feature)
                    count += 1
                    if count % TRANSACTION_FEATURES == 0:
                        layer.CommitTransaction()
                        layer.StartTransaction()
            with _blamed_on(path):
                layer.CommitTransaction()
        finally:
            source = layer = definition = None  # closing flushes and finalises the file before the rename
    return count


@contextmanager
def _blamed_on(path: Path) -> Iterator[None]:
    """OGR's errors (RuntimeError with exceptions on; a full disk among them) as one sentence naming the output."""
    try:
        yield
    except RuntimeError as error:
        raise incomplete_output(path, str(error)) from error


def written_layer_problem(path: str | Path, layer_name: str, count: int) -> str | None:
    """What is wrong with a vector file just written, or None: it opens, holds the layer and all
    ``count`` features (GDAL may report a full disk only in its log)."""
    from osgeo import gdal, ogr

    gdal.PushErrorHandler("CPLQuietErrorHandler")  # the failure is reported by the caller, as one sentence
    try:
        source = ogr.Open(str(path))
        layer = source.GetLayerByName(layer_name) if source is not None else None
        if layer is None:
            return f"it cannot be read back with its layer '{layer_name}'"
        written = layer.GetFeatureCount()
        return None if written == count else f"it holds {written} of {count} buildings"
    except RuntimeError as error:
        return f"it cannot be read back: {error}"
    finally:
        source = layer = None
        gdal.PopErrorHandler()
