"""Sharded prediction: shards predicted apart and assembled give the unsharded rasters.

Every pixel is blended from the same tiles with the same weights; the network's float32 output
for a tile can still differ in the last bit with the other tiles of its batch (the CPU's
convolution kernels block batches differently), so probabilities are compared to FLOAT_ULPS and
masks exactly wherever the probability is further than that from the threshold."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio

from model.__main__ import main
from model.errors import InputError, OutputError
from model.net.modelfile import load_model
from model.prediction.predict import predict_raster
from model.prediction.shards import assemble, parse_shard, plan_row_shards, predict_shard, shard_path
from model.prediction.tiling import ground_phase_px, plan_tiles
from tests.engine.test_inference import make_model, noise, write_image
from tests.engine.test_reliability import fill, small_disk

FLOAT_ULPS = 1e-6  # a few float32 units in the last place of a probability
# 64 px tiles (the test model's training tile) for many tile rows on a small raster
OPTIONS = dict(
    probability_dtype="float32", batch_size=3, device="cpu", precision="float32", panel_width_px=96, tile_size_px=64
)


def image_with_nodata(folder: Path, shape=(3, 410, 230)) -> Path:
    data = noise(shape, seed=11)
    data[:, 150:230, :60] = 0  # nodata across a shard border
    return write_image(folder / "image.tif", data, nodata=0)


def read_all(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as dataset:
        return dataset.read(1), dict(
            crs=dataset.crs,
            transform=dataset.transform,
            nodata=dataset.nodata,
            dtype=dataset.dtypes[0],
            tags=dataset.tags(),
            shape=dataset.shape,
        )


@pytest.mark.parametrize("count", [1, 3, 7])
def test_shards_assembled_equal_the_unsharded_prediction(tmp_path, count):
    image = image_with_nodata(tmp_path)
    model = load_model(make_model(tmp_path / "m.pt"))  # per-image normalisation: the whole image's statistics
    whole = predict_raster(image, model, probability_path=tmp_path / "p.tif", mask_path=tmp_path / "k.tif", **OPTIONS)
    shard_tiles = 0
    for index in range(1, count + 1):
        result = predict_shard(
            image, model, index, count, probability_path=tmp_path / "sp.tif", mask_path=tmp_path / "sk.tif", **OPTIONS
        )
        shard_tiles += result.tile_count
        assert result.probability_path == shard_path(tmp_path / "sp.tif", index, count)
    # one tile row of each border runs twice, nothing more (the input is 230 px = 5 tile columns wide)
    with rasterio.open(image) as dataset:
        layout = plan_tiles(230, 410, 64, 16, 16, ground_phase_px(dataset.transform))
    assert shard_tiles - whole.tile_count <= (count - 1) * len(layout.columns) * 2  # panels repeat a column
    probability = read_all(tmp_path / "p.tif")[0]
    decided = np.abs(probability - whole.threshold) > FLOAT_ULPS  # nodata (-1) included
    for kind, whole_path in (("sp", tmp_path / "p.tif"), ("sk", tmp_path / "k.tif")):
        expected, expected_meta = read_all(whole_path)
        for suffix in (".vrt", ".tif"):
            assembled = assemble(tmp_path / f"{kind}{suffix}", count)
            values, meta = read_all(assembled)
            assert meta == expected_meta
            if kind == "sp":
                np.testing.assert_allclose(values, expected, rtol=0, atol=FLOAT_ULPS)
                np.testing.assert_array_equal(values == -1, expected == -1)  # nodata exactly
            else:
                np.testing.assert_array_equal(values[decided], expected[decided])


def test_assembled_geotiff_can_replace_the_shards_and_vrt_refers_to_them(tmp_path):
    image = image_with_nodata(tmp_path)
    model = make_model(tmp_path / "m.pt")
    for index in (1, 2):
        predict_shard(image, model, index, 2, mask_path=tmp_path / "mask.tif", **OPTIONS)
    vrt = assemble(tmp_path / "mask.vrt", 2)
    assert "mask.shard-1-of-2.tif" in vrt.read_text() and str(tmp_path) not in vrt.read_text()  # relative
    with pytest.raises(InputError, match="keep them"):
        assemble(tmp_path / "mask2.vrt", 2, remove_shards=True)
    assemble(tmp_path / "mask.tif", 2, remove_shards=True)
    assert sorted(path.name for path in tmp_path.glob("mask*")) == ["mask.tif", "mask.vrt"]


def test_assembling_onto_a_full_disk_fails_clearly_and_keeps_the_shards(tmp_path):
    """GDAL reports a block it could not write only in its log: assemble re-reads what it wrote."""
    image = image_with_nodata(tmp_path)
    model = make_model(tmp_path / "m.pt")
    with small_disk(tmp_path / "disk", 1024) as disk:
        for index in (1, 2):
            predict_shard(image, model, index, 2, probability_path=disk / "p.tif", **OPTIONS)
        shards = sorted(os.listdir(disk))
        fill(disk, 40)
        with pytest.raises(OutputError, match="disk holding .* is full"):
            assemble(disk / "p.tif", 2, remove_shards=True)
        assert sorted(os.listdir(disk)) == sorted([*shards, "filler"])


def test_borders_lie_an_overlap_below_a_tile_row_top():
    layout = plan_tiles(100, 1000, 64, 16, 16)  # tile rows every 48 px, the last one pulled back to 936
    ranges = plan_row_shards(layout.rows, layout.overlap_px, 1000, 4)
    assert ranges[0][0] == 0 and ranges[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all((start - 16) in layout.rows for start, _ in ranges[1:])
    with pytest.raises(InputError, match="at most 21 shard"):
        plan_row_shards(layout.rows, 16, 1000, 22)


@pytest.mark.parametrize("spec", ["0/2", "3/2", "a/b", "2"])
def test_bad_shard_specs_say_how_to_write_one(spec):
    with pytest.raises(InputError, match="K/N"):
        parse_shard(spec)


def test_missing_or_foreign_shards_are_refused(tmp_path):
    image = image_with_nodata(tmp_path)
    model = make_model(tmp_path / "m.pt")
    predict_shard(image, model, 1, 3, mask_path=tmp_path / "mask.tif", **OPTIONS)
    with pytest.raises(InputError, match=r"mask.shard-2-of-3.tif, .*mask.shard-3-of-3.tif"):
        assemble(tmp_path / "mask.tif", 3)
    other = write_image(tmp_path / "other.tif", noise((3, 410, 231), seed=1), nodata=0)
    predict_shard(other, model, 2, 3, mask_path=tmp_path / "mask.tif", **OPTIONS)
    predict_shard(image, model, 3, 3, mask_path=tmp_path / "mask.tif", **OPTIONS)
    with pytest.raises(InputError, match="does not continue .*width"):
        assemble(tmp_path / "mask.tif", 3)


def test_command_line_shards_and_assembly(tmp_path, capsys):
    image = image_with_nodata(tmp_path)
    model = make_model(tmp_path / "m.pt")
    common = [str(image), "--model", str(model), "--device", "cpu"]
    assert main(["predict", *common, "--mask", str(tmp_path / "whole.tif")]) == 0
    for spec in ("2/2", "1/2"):  # any order, any machine
        assert main(["predict", *common, "--mask", str(tmp_path / "mask.tif"), "--shard", spec]) == 0
    assert main(["assemble", str(tmp_path / "mask.tif"), "--shards", "2"]) == 0
    assert '"assembled"' in capsys.readouterr().out
    assembled, whole = read_all(tmp_path / "mask.tif")[0], read_all(tmp_path / "whole.tif")[0]
    assert (assembled != whole).mean() < 1e-3  # equal but for probabilities a float32 bit from the threshold
