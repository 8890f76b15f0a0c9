"""Numbers that are not numbers (NaN), impossible ranges, and the files a training run derives from its
model name: each refused in one sentence before any work, never "failed unexpectedly"."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from model.__main__ import RUNNERS, main
from model.errors import EngineError
from model.io.files import SCRATCH_PREFIX, TEMPORARY_NAME_EXTRA_BYTES, check_output_location
from model.net.modelfile import ModelInfo, load_model, save_model
from model.net.network import UNet, UNetConfig
from model.training.trainer import TrainConfig, train
from tests.engine.scenes import write_geotiff
from tests.engine.test_training import tiny_config as training_config

CRS = "EPSG:32633"
REPOSITORY = Path(__file__).resolve().parents[2]


def write_tif(path: Path, data: np.ndarray, nodata: float | None = None) -> Path:
    return write_geotiff(path, data, crs=CRS, nodata=nodata)


@pytest.fixture()
def scene(tmp_path: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    building = np.zeros((64, 64), np.uint8)
    building[10:30, 10:30] = 1
    torch.manual_seed(0)
    save_model(tmp_path / "model.pt", UNet(UNetConfig(in_bands=3, base_width=4, depth=2)), ModelInfo(tile_size_px=32))
    return {
        "image": str(write_tif(tmp_path / "image.tif", rng.integers(0, 255, (3, 64, 64)).astype(np.uint8))),
        "labels": str(write_tif(tmp_path / "labels.tif", np.where(building == 1, 2, 1).astype(np.uint8))),
        "model": str(tmp_path / "model.pt"),
        "folder": str(tmp_path),
    }


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (
            [
                "train",
                "--images",
                "{image}",
                "--labels",
                "{labels}",
                "--output",
                "{folder}/m.pt",
                "--time-budget-min",
                "nan",
            ],
            "The time budget must be a positive number of minutes, not nan",
        ),
        (
            [
                "train",
                "--images",
                "{image}",
                "--labels",
                "{labels}",
                "--output",
                "{folder}/m.pt",
                "--learning-rate",
                "nan",
            ],
            "The learning rate must be a positive number, not nan",
        ),
        (
            [
                "predict",
                "{image}",
                "--model",
                "{model}",
                "--mask",
                "{folder}/p.tif",
                "--extent",
                "nan",
                "0",
                "10",
                "100",
            ],
            r"The area of interest \(nan, 0 : 10, 100\) is not an extent",
        ),
        (
            [
                "predict",
                "{image}",
                "--model",
                "{model}",
                "--mask",
                "{folder}/p.tif",
                "--extent",
                "510000",
                "0",
                "500000",
                "100",
            ],
            "left < right and bottom < top",
        ),
        (
            ["export-onnx", "{model}", "--output", "{folder}/m.onnx", "--opset", "3"],
            "The ONNX opset must be 11 to 20, not 3",
        ),
    ],
    ids=["budget-nan", "learning-rate-nan", "extent-nan", "extent-left-of-right", "opset-3"],
)
def test_a_number_that_cannot_be_is_refused_by_name(scene, command, message, capsys) -> None:
    code = main([part.format(**scene) for part in command])
    error = capsys.readouterr().err
    assert code == 2, error
    assert "unexpectedly" not in error and re.search(message, error), error
    assert not any(Path(scene["folder"], name).exists() for name in ("m.pt", "p.tif", "m.onnx"))


def test_a_nan_processing_pixel_size_is_refused_by_name(scene) -> None:
    from model.prediction.predict import predict_raster

    with pytest.raises(EngineError, match="processing pixel size must be a positive number of map units, not nan"):
        predict_raster(
            scene["image"],
            scene["model"],
            mask_path=Path(scene["folder"], "p.tif"),
            processing_pixel_size_map_units=float("nan"),
        )


def tiny_config(scene: dict[str, str], output: Path, **overrides) -> TrainConfig:
    """The engine tests' small run on this file's scene: one epoch of a few crops, a new network."""
    values = dict(epochs=1, patches_per_epoch=4, batch_size=2, seed=0, from_scratch=True)
    return training_config(([scene["image"]], [scene["labels"]]), output, **(values | overrides))


def test_a_start_model_inside_the_checkpoint_folder_the_run_writes_is_refused(scene, tmp_path) -> None:
    folder = tmp_path / "model_checkpoints"
    folder.mkdir()
    start = folder / "epoch_001.pt"
    Path(scene["model"]).rename(start)
    before = start.read_bytes()
    config = tiny_config(
        scene, tmp_path / "model.pt", from_scratch=None, init_model=str(start), keep_epoch_checkpoints=True
    )
    with pytest.raises(
        EngineError,
        match=r"model to start from '.*epoch_001.pt' is inside '.*model_checkpoints', the checkpoint folder",
    ):
        train(config)
    assert start.read_bytes() == before and not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize(
    ("in_the_way", "message"),
    [
        ("model_checkpoints", "is a file where a folder is expected"),
        ("model_history.csv/", "training history written beside the model file .* is a folder"),
    ],
)
def test_a_derived_output_in_the_way_is_found_before_the_first_step(scene, tmp_path, in_the_way, message) -> None:
    tmp_path = tmp_path / "out"  # beside none of the scene's files
    tmp_path.mkdir()
    if in_the_way.endswith("/"):
        (tmp_path / in_the_way).mkdir()
    else:
        (tmp_path / in_the_way).write_text("someone's file")
    epochs = []
    with pytest.raises(EngineError, match=message):
        train(tiny_config(scene, tmp_path / "model.pt"), on_epoch=epochs.append)
    assert epochs == [] and not (tmp_path / "model.pt").exists()


def test_a_model_name_whose_derived_names_are_too_long_is_refused_before_training(scene, tmp_path) -> None:
    # legal for the model file itself (with room for its temporary name), too long once "_checkpoints" is added
    tmp_path = tmp_path / "out"  # beside none of the scene's files
    tmp_path.mkdir()
    stem = "m" * (255 - TEMPORARY_NAME_EXTRA_BYTES - len(".pt"))
    check_output_location(tmp_path / f"{stem}.pt", "model file")
    with pytest.raises(EngineError, match="is .* bytes long and this folder allows .* Choose a shorter file name"):
        train(tiny_config(scene, tmp_path / f"{stem}.pt"))
    assert list(tmp_path.glob("m*")) == []


def test_labels_that_all_fall_on_the_images_nodata_say_so(tmp_path) -> None:
    image = np.full((3, 64, 64), 120, np.uint8)
    image[:, :, :32] = 0  # nodata over the left half, where every building is
    labels = np.zeros((64, 64), np.uint8)
    labels[10:30, 5:25] = 1
    write_tif(tmp_path / "image.tif", image, nodata=0)
    write_tif(tmp_path / "labels.tif", labels)
    scene = {"image": str(tmp_path / "image.tif"), "labels": str(tmp_path / "labels.tif")}
    with pytest.raises(EngineError, match="marks buildings only where the image '.*' has no data"):
        train(tiny_config(scene, tmp_path / "out" / "model.pt", building_values=[1]))


def test_a_model_file_with_compressed_parts_is_refused_before_anything_is_unpacked(scene, tmp_path) -> None:
    """A zip bomb: a few kilobytes on disk that declare gigabytes. torch.save never compresses, so any
    compressed part is refused without reading it; here a real model file re-packed with deflate and a
    part of 64 MB of zeros that takes 64 kB."""
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(scene["model"]) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as packed:
        for entry in source.infolist():
            packed.writestr(entry.filename, source.read(entry))
        packed.writestr("archive/data/zeros", bytes(64 << 20))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(EngineError, match="not a model file this plugin can load safely: .* compressed"):
        load_model(bomb)
    code = main(["info", str(bomb)])
    assert code == 2


def test_a_stop_python_wraps_in_another_error_ends_as_an_interrupt_not_a_bug(scene, monkeypatch, capsys) -> None:
    """A Ctrl-C or SIGTERM landing in a class being made (as during ``import torch``, seen as "failed
    unexpectedly ... Please report it") reaches main wrapped: Python 3.11 turns it into a RuntimeError
    "Error calling __set_name__"."""

    class StoppedHere:
        def __set_name__(self, owner: type, name: str) -> None:
            raise KeyboardInterrupt

    def runner(args, progress) -> None:
        type("Source", (), {"guard_source": StoppedHere()})  # what a class statement does

    monkeypatch.setitem(RUNNERS, "info", runner)
    assert main(["info", str(scene["model"])]) == 130
    error = capsys.readouterr().err
    assert error.endswith("interrupted\n") and "unexpectedly" not in error, error


def test_sigterm_ends_a_training_command_as_ctrl_c_does_and_leaves_nothing(scene, tmp_path) -> None:
    output = tmp_path / "out" / "model.pt"
    command = [sys.executable, "-m", "model", "train", "--images", scene["image"], "--labels", scene["labels"]]
    command += ["--building-values", "2", "--output", str(output), "--from-scratch", "--epochs", "1"]
    command += ["--patches-per-epoch", "100000"]
    command += ["--batch-size", "2", "--base-width", "4", "--tile-size-px", "32", "--device", "cpu"]
    process = subprocess.Popen(
        command,
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while not list(output.parent.glob(f"{SCRATCH_PREFIX}*")) and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.1)
        time.sleep(1.0)  # into the training loop
        process.terminate()
        _, error = process.communicate(timeout=60)
    finally:
        process.kill()
    # 130, or dead of SIGINT after our handler ran: CPython (3.11 at least) ends a process with SIGINT once a
    # KeyboardInterrupt has escaped an exec() of source text, as the one dataclasses runs on import, even
    # when main() caught it and returned 130 (a lazy import is often under way when the signal comes). A
    # shell shows both as 130, and Ctrl-C ends the same way.
    assert process.returncode in (130, -signal.SIGINT) and error.endswith(b"interrupted\n"), error
    assert sorted(path.name for path in output.parent.iterdir()) == []  # no scratch, model or checkpoint
