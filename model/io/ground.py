"""Ground resolution: how many metres on the ground one pixel covers, whatever the CRS.

A projected unit is not a ground metre: in Web Mercator a "metre" at latitude phi covers
cos(phi) metres on the ground (0.88 at 28 degrees, 0.64 at 50), UTM is off by up to about 0.1 %
within its zone, feet are 0.3048 m, degrees depend on the latitude. A model trained at 0.15 m
in Web Mercator near the equator and applied to a Web Mercator image at 50 degrees would otherwise
see buildings half again as large as in training. So pixel sizes are compared on the ground: the
distance between the centres of neighbouring pixels at the raster's centre, measured on the WGS84
ellipsoid after transforming to longitude / latitude.
"""

from __future__ import annotations

import math

from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as transform_points

WGS84_A_M = 6_378_137.0  # semi-major axis
WGS84_E2 = 6.69437999014e-3  # first eccentricity squared


def local_distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Distance in metres between two nearby points (degrees) on the WGS84 ellipsoid, from its
    meridional and prime-vertical radii of curvature at their mean latitude: exact to far below a
    millimetre per metre over a pixel, where a sphere is off by up to 0.6 %."""
    phi = math.radians((lat1 + lat2) / 2)
    w = 1 - WGS84_E2 * math.sin(phi) ** 2
    meridional = WGS84_A_M * (1 - WGS84_E2) / w**1.5
    prime_vertical = WGS84_A_M / math.sqrt(w)
    north = meridional * math.radians(lat2 - lat1)
    east = prime_vertical * math.cos(phi) * math.radians(lon2 - lon1)
    return math.hypot(north, east)


def ground_pixel_size_m(crs: CRS | None, transform: Affine, width: int, height: int) -> tuple[float, float] | None:
    """(x, y) ground metres covered by one pixel at the centre of a raster; None without a CRS."""
    if crs is None:
        return None
    column, row = width / 2, height / 2
    # the centre pixel and its right and lower neighbours, in map coordinates
    xs, ys = zip(*(transform * (column + dc, row + dr) for dc, dr in ((0, 0), (1, 0), (0, 1))))
    lons, lats = transform_points(crs, CRS.from_epsg(4326), list(xs), list(ys))
    return (local_distance_m(lons[0], lats[0], lons[1], lats[1]), local_distance_m(lons[0], lats[0], lons[2], lats[2]))


def metres_per_map_unit(crs: CRS | None, transform: Affine, width: int, height: int) -> tuple[float, float] | None:
    """Ground metres covered by one map unit at the centre of a raster, along its rows (x) and its
    columns (y); None without a CRS. Web Mercator at 50 degrees: (0.64, 0.64); degrees: about
    (71 700, 111 200) there."""
    ground = ground_pixel_size_m(crs, transform, width, height)
    if ground is None:
        return None
    return ground[0] / math.hypot(transform.a, transform.d), ground[1] / math.hypot(transform.b, transform.e)
