"""Building regions of a boolean raster -> polygons, streamed band by band: the one polygonizer behind
vectorization (``vectorize.py``) and object scores (``object_polygons.py``).

Windows arrive in row-major order; windows that cut a band of rows into columns are joined back into
the full-width band first, so regions are only ever cut by horizontal band borders. Each band is
polygonised with ``rasterio.features.shapes`` (4-connectivity: pixels touching only at a corner are
separate buildings, which also keeps every polygon valid) in *pixel* coordinates of the whole raster,
where polygon corners are whole numbers and pieces of one building cut by a band border share their
edge exactly. A building cut by the border is merged back: pixels of the last row of one band and the
first row of the next that are both building connect their pieces (union-find over the piece labels,
so U shapes joining further down come out as one polygon). A region is handed out as soon as no
later band can continue it, so memory holds one band and the regions still open at its bottom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
import shapely.geometry
from affine import Affine
from rasterio.features import rasterize, shapes
from rasterio.windows import Window


@dataclass
class Region:
    """A building region (or, while open, part of one) in pixel coordinates of the whole raster, with the
    sum and count of the values given for its pixels (for a mean)."""

    geometry: shapely.Polygon
    value_sum: float = 0.0
    value_count: int = 0


class RegionStream:
    """The 4-connected regions of a ``width_px`` x ``height_px`` boolean raster fed window by window
    (row-major order, bands whole rows high); ``add`` returns the regions each window finishes, the
    last window returns all that are left."""

    def __init__(self, width_px: int, height_px: int) -> None:
        self.width_px, self.height_px = width_px, height_px
        self._top = 0  # first row of the band being fed
        self._columns: list[tuple[np.ndarray, np.ma.MaskedArray | None]] = []  # the band's windows so far
        self._open: list[Region] = []  # regions touching the bottom of the previous band
        self._open_last_row = np.full(width_px, -1, np.int64)  # index into _open per column, -1 none

    def add(self, building: np.ndarray, window: Window, values: np.ma.MaskedArray | None = None) -> list[Region]:
        """Feed one window's building pixels; ``values`` (masked pixels not counted) add up per region.
        Give values with every window or with none."""
        column, row = int(window.col_off), int(window.row_off)
        expected_column = sum(part.shape[1] for part, _ in self._columns)
        if (row, column) != (self._top, expected_column):
            raise ValueError(
                f"Window at row {row}, column {column} out of order: expected {self._top}, {expected_column}."
            )
        self._columns.append((building, values))
        if column + building.shape[1] < self.width_px:
            return []
        parts, self._columns = self._columns, []
        band_building = np.hstack([part for part, _ in parts]) if len(parts) > 1 else building
        band_values = None
        if values is not None:
            band_values = np.ma.hstack([part for _, part in parts]) if len(parts) > 1 else values
        return self._add_band(band_building, band_values)

    def _add_band(self, building: np.ndarray, values: np.ma.MaskedArray | None) -> list[Region]:
        top, rows = self._top, building.shape[0]
        self._top += rows
        band = _Band(building, top, values is not None)
        if values is not None and band.pieces:
            band.add_values(values, building)
        merged, finished = _merge(self._open, self._open_last_row, band.pieces, band.first_row())
        self._open, self._open_last_row = [], np.full(self.width_px, -1, np.int64)
        if self._top >= self.height_px or not band.pieces:
            finished.extend(region for region, _ in merged)
            return finished
        # Regions on the band's last row may continue below: keep them open, and remember which open
        # region every column of that row belongs to.
        bottom = band.last_row()
        on_bottom = set(np.unique(bottom[bottom >= 0]).tolist())
        piece_to_open = np.full(len(band.pieces) + 1, -1, np.int64)  # last entry: no piece (-1)
        for region, members in merged:
            if on_bottom.intersection(members):
                piece_to_open[members] = len(self._open)
                self._open.append(region)
            else:
                finished.append(region)
        self._open_last_row = piece_to_open[bottom]
        return finished


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, first: int, second: int) -> None:
        self.parent[self.find(first)] = self.find(second)


class _Band:
    """The pieces of one band of rows, in full-raster pixel coordinates, and which piece each pixel
    of the band's first and last rows belongs to (-1 none)."""

    def __init__(self, building: np.ndarray, top: int, full_labels: bool) -> None:
        self.top, self.shape = top, building.shape
        self.records: list[dict] = []
        if building.any():
            self.records = [
                geometry
                for geometry, _ in shapes(
                    building.view(np.uint8), mask=building, connectivity=4, transform=Affine.translation(0, top)
                )
            ]
        self.pieces = [Region(shapely.geometry.shape(record)) for record in self.records]
        self.bounds = shapely.bounds([piece.geometry for piece in self.pieces]).reshape(-1, 4)
        self.labels = (
            self._burn(range(len(self.records)), 0, building.shape[0]) if full_labels and self.pieces else None
        )

    def _burn(self, indexes, row: int, rows: int) -> np.ndarray:
        """Piece index per pixel of ``rows`` band rows from ``row``. Corners are whole numbers and
        pixel centres never lie on an edge, so burning a piece marks exactly its own pixels."""
        shapes_to_burn = [(self.records[index], index + 1) for index in indexes]
        if not shapes_to_burn:
            return np.full((rows, self.shape[1]), -1, np.int64)
        burnt = rasterize(
            shapes_to_burn,
            out_shape=(rows, self.shape[1]),
            fill=0,
            dtype="int32",
            transform=Affine.translation(0, self.top + row),
        )
        return burnt.astype(np.int64) - 1

    def add_values(self, values: np.ma.MaskedArray, building: np.ndarray) -> None:
        """Value sums and counts per piece, over the building pixels that have a value."""
        assert self.labels is not None  # kept for the whole band when values are given
        selected = building & ~np.ma.getmaskarray(values)
        labels = self.labels[selected]
        counts = np.bincount(labels, minlength=len(self.pieces))
        sums = np.bincount(labels, weights=values.data[selected].astype(np.float64), minlength=len(self.pieces))
        for piece, total, count in zip(self.pieces, sums.tolist(), counts.tolist()):
            piece.value_sum, piece.value_count = total, count

    def first_row(self) -> np.ndarray:
        if self.labels is not None:
            return self.labels[0]
        return self._burn(np.flatnonzero(self.bounds[:, 1] == self.top), 0, 1)[0]

    def last_row(self) -> np.ndarray:
        if self.labels is not None:
            return self.labels[-1]
        bottom = self.top + self.shape[0]
        return self._burn(np.flatnonzero(self.bounds[:, 3] == bottom), self.shape[0] - 1, 1)[0]


def _merge(
    open_regions: list[Region], open_last_row: np.ndarray, pieces: list[Region], first_row: np.ndarray
) -> tuple[list[tuple[Region, list[int]]], list[Region]]:
    """Join open regions with the new band's pieces they touch along the border. Returns the new
    band's (possibly merged) regions, each with the indexes of the band's pieces it contains, and
    the open regions that nothing continues (finished)."""
    count_open = len(open_regions)
    groups = _UnionFind(count_open + len(pieces))
    if count_open and pieces:
        touching = (open_last_row >= 0) & (first_row >= 0)
        for old, new in set(zip(open_last_row[touching].tolist(), first_row[touching].tolist())):
            groups.union(old, count_open + new)
    members: dict[int, list[int]] = {}
    for index in range(count_open + len(pieces)):
        members.setdefault(groups.find(index), []).append(index)
    merged: list[tuple[Region, list[int]]] = []
    finished: list[Region] = []
    for group in members.values():
        parts = [open_regions[index] if index < count_open else pieces[index - count_open] for index in group]
        new_members = [index - count_open for index in group if index >= count_open]
        if not new_members:
            finished.append(parts[0])
            continue
        if len(parts) == 1:
            region = parts[0]
        else:
            # Pieces joined along border segments: their union is one polygon.
            region = Region(
                shapely.union_all([part.geometry for part in parts]),
                sum(part.value_sum for part in parts),
                sum(part.value_count for part in parts),
            )
        merged.append((region, new_members))
    return merged, finished


def apply_affine(geometries, transform: Affine):
    """Geometries (one or an array) with every coordinate mapped through ``transform``, vectorised."""
    matrix = np.array([[transform.a, transform.d], [transform.b, transform.e]])
    offset = np.array([transform.c, transform.f])
    return shapely.transform(geometries, lambda xy: xy @ matrix + offset)
