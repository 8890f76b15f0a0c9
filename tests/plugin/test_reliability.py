"""Reliability of the Processing algorithms (issue 9) in a real QGIS: no output over an input for any
algorithm, outputs verified (a full disk included) and removed on failure, inputs that are not what
they should be refused before any output exists, Ctrl-C honoured by qgis_process within a second or two,
every fault one sentence, unexpected ones with the details in the log."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sysconfig
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingFeedback, QgsVectorLayer

from tests.engine.test_reliability import fill, small_disk

from .test_processing import BUILDING_AREA_M2, BUILDING_GROUND_AREA_M2
from .test_qgis_process import SCRIPT

pytestmark = pytest.mark.usefixtures("plugin")


def run(algorithm_id: str, parameters: dict) -> dict:
    import processing

    return processing.run(f"unet_buildings:{algorithm_id}", parameters, feedback=QgsProcessingFeedback())


def digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir() if path.is_file()}


# (algorithm, parameters with {scene file} / {link} / {folder} placeholders): an output over an input
OVERWRITES = [
    ("evaluate", {"PREDICTION": "{mask}", "LABELS": "{labels}", "OUTPUT_REPORT": "{labels}"}),
    (
        "evaluate",
        {
            "PREDICTION": "{mask}",
            "LABELS": "{labels}",
            "OUTPUT_REPORT": "{folder}/r.html",
            "OUTPUT_ERROR_MAP": "{mask_link}",
        },
    ),
    ("train", {"IMAGES": ["{image}"], "LABELS": ["{labels}"], "OUTPUT_MODEL": "{image}"}),
    ("train", {"IMAGES": ["{image}"], "LABELS": ["{labels}"], "INIT_MODEL": "{model}", "OUTPUT_MODEL": "{model}"}),
    (
        "predict",
        {
            "INPUT": "{image}",
            "MODEL": "{model}",
            "OUTPUT_PROBABILITY": "{folder}/p.tif",
            "OUTPUT_MASK": "{folder}/p.tif",
        },
    ),
    ("predict", {"INPUT": "{mask_link}", "MODEL": "{model}", "OUTPUT_MASK": "{mask}"}),
    ("vectorize", {"INPUT": "{mask}", "OUTPUT": "{mask_link}"}),
    (
        "extract",
        {"INPUT": "{image}", "MODEL": "{model}", "OUTPUT": "{folder}/b.gpkg", "OUTPUT_PROBABILITY": "{image_link}"},
    ),
    ("evaluate", {"PREDICTION": "{mask}", "LABELS": "{polygons}", "OUTPUT_FALSE_POSITIVES": "{polygons}"}),
]


@pytest.mark.parametrize("algorithm_id, parameters", OVERWRITES, ids=[f"{a}-{'-'.join(p)}" for a, p in OVERWRITES])
def test_every_algorithm_refuses_an_output_over_an_input_and_leaves_it_intact(
    algorithm_id, parameters, scene, model_file, tmp_path
) -> None:
    algorithm = QgsApplication.processingRegistry().algorithmById(f"unet_buildings:{algorithm_id}")
    if any(algorithm.parameterDefinition(name) is None for name in parameters):
        pytest.skip(f"{algorithm_id} has no {', '.join(parameters)} in this version")
    links = {"mask_link": tmp_path / "mask_link.tif", "image_link": tmp_path / "image_link.tif"}
    links["mask_link"].symlink_to(scene.mask)  # the same file as the mask, under another name
    os.link(scene.image, links["image_link"])  # a hard link: the image's very bytes
    files = {
        "image": scene.image,
        "labels": scene.labels,
        "mask": scene.mask,
        "polygons": scene.polygons,
        "model": model_file,
        "folder": tmp_path,
        **links,
    }

    def filled(value):
        return [filled(item) for item in value] if isinstance(value, list) else value.format(**files)

    before = digests(scene.folder)
    with pytest.raises(QgsProcessingException, match="destroy that input|are both") as raised:
        run(algorithm_id, {name: filled(value) for name, value in parameters.items()})
    assert digests(scene.folder) == before
    assert len(str(raised.value).splitlines()) == 1


def test_vectorize_refuses_an_image_as_a_mask_before_making_its_output(scene, tmp_path) -> None:
    output = tmp_path / "buildings.gpkg"
    with pytest.raises(QgsProcessingException, match="has 3 bands; a building mask is a single-band raster"):
        run("vectorize", {"INPUT": str(scene.image), "OUTPUT": str(output)})
    assert not output.exists()


@pytest.mark.parametrize(
    "algorithm_id, name, value",
    [
        ("predict", "OUTPUT_MASK", "mask.jpg"),
        ("evaluate", "OUTPUT_REPORT", "report.json"),
        ("evaluate", "OUTPUT_REPORT", "."),
        ("train", "OUTPUT_MODEL", "model.tif"),
    ],
)
def test_outputs_in_another_format_than_their_name_or_in_a_folder_are_refused(
    algorithm_id, name, value, scene, model_file, tmp_path
) -> None:
    inputs = {
        "predict": {"INPUT": str(scene.image), "MODEL": str(model_file)},
        "evaluate": {"PREDICTION": str(scene.mask), "LABELS": str(scene.labels)},
        "train": {"IMAGES": [str(scene.image)], "LABELS": [str(scene.labels)]},
    }[algorithm_id]
    with pytest.raises(QgsProcessingException, match="written as|is a folder"):
        run(algorithm_id, {**inputs, name: str(tmp_path / value)})
    assert [path.name for path in tmp_path.iterdir()] == []


def test_a_full_disk_under_a_feature_sink_is_an_error_and_leaves_nothing(tmp_path) -> None:
    import numpy as np

    from .conftest import write_raster

    building = np.zeros((200, 200), np.uint8)
    building[::4, ::4] = 1  # 2,500 one-pixel buildings: far more than fits
    mask = write_raster(tmp_path / "mask.tif", building[None], 255, "mask")
    with small_disk(tmp_path / "disk", 256) as disk:
        fill(disk, 60)
        with pytest.raises(QgsProcessingException, match="full|Could not write|failed"):
            run("vectorize", {"INPUT": str(mask), "OUTPUT": str(disk / "buildings.gpkg")})
        assert sorted(os.listdir(disk)) == ["filler"]


def test_an_unexpected_error_is_a_short_sentence_with_the_traceback_in_the_log(scene, tmp_path, monkeypatch) -> None:
    import unet_buildings.model.vectors.vectorize as engine

    def bug(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(engine, "polygons_from_mask", bug)  # the one deliberate bug
    logged: list[str] = []

    def keep(message: str, tag: str, level) -> None:
        logged.append(message)

    QgsApplication.messageLog().messageReceived.connect(keep)
    try:
        said = "failed unexpectedly (ZeroDivisionError: division by zero); details in the log"
        with pytest.raises(QgsProcessingException, match=re.escape(said)) as raised:
            run("vectorize", {"INPUT": str(scene.mask), "OUTPUT": str(tmp_path / "b.gpkg")})
    finally:
        QgsApplication.messageLog().messageReceived.disconnect(keep)
    assert "Traceback" not in str(raised.value)
    assert any("Traceback" in message and "ZeroDivisionError" in message for message in logged)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    min_area=st.floats(allow_nan=True, allow_infinity=True),
    simplify=st.floats(-1, 1e9),
    fill_holes=st.one_of(st.floats(-1, 1e12), st.just(float("inf"))),
    regularize=st.booleans(),
)
# kept: 64 square map units are 64.05 m² on the ground (the exact edge is tested in the engine)
@example(min_area=float("nan"), simplify=0.0, fill_holes=0.0, regularize=False)  # refused: NaN kept everything
@example(min_area=BUILDING_AREA_M2, simplify=0.0, fill_holes=0.0, regularize=False)
@example(min_area=BUILDING_GROUND_AREA_M2 + 0.01, simplify=1.0, fill_holes=0.0, regularize=True)  # both dropped
def test_vectorize_parameters_end_in_a_layer_or_one_sentence(
    scene, tmp_path, min_area, simplify, fill_holes, regularize
) -> None:
    """Property: no value of the numeric parameters makes an unhandled exception or a half-written output."""
    output = tmp_path / "b.gpkg"
    output.unlink(missing_ok=True)  # examples share tmp_path: a failed one must not leave its file to the next
    try:
        result = run(
            "vectorize",
            {
                "INPUT": str(scene.mask),
                "OUTPUT": str(output),
                "MIN_AREA": min_area,
                "SIMPLIFY": simplify,
                "FILL_HOLES": fill_holes,
                "REGULARIZE": regularize,
            },
        )
    except QgsProcessingException as error:
        assert "unexpectedly" not in str(error) and "Traceback" not in str(error)
        assert not output.exists()
    else:
        # the scene's two squares: simplifying or squaring keeps a square, so only the ground area decides
        expected = 2 if min_area <= BUILDING_GROUND_AREA_M2 else 0
        assert result["BUILDING_COUNT"] == QgsVectorLayer(str(output), "b", "ogr").featureCount() == expected
    output.unlink(missing_ok=True)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("UNET_SLOW_TESTS"),
    reason="starts a real qgis_process training (30 s to "
    "minutes before its first batch on a busy machine): set UNET_SLOW_TESTS=1 to run it",
)
def test_ctrl_c_stops_qgis_process_training_within_seconds_and_leaves_no_model(plugins_dir, scene, tmp_path) -> None:
    """50,000 crops in batches of 2 move the progress by 0.1 % every 25 batches, tens of seconds here: Ctrl-C
    must not wait for that (nor for the minutes it takes with 10^6 crops)."""
    environment = {
        **os.environ,
        "QGIS_CUSTOM_CONFIG_PATH": str(tmp_path / "profile"),
        "QGIS_PLUGINPATH": str(plugins_dir),
        "QT_QPA_PLATFORM": "offscreen",
        "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), sysconfig.get_paths()["purelib"]])),
    }
    model = tmp_path / "model.pt"
    log = tmp_path / "out.txt"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                "bash",
                str(SCRIPT),
                "run",
                "unet_buildings:train",
                "--",
                f"IMAGES={scene.image}",
                f"LABELS={scene.labels}",
                "BUILDING_VALUES=2",
                "EPOCHS=1",
                "PATCHES_PER_EPOCH=50000",
                "BATCH_SIZE=2",
                "BASE_WIDTH=4",
                "TILE_SIZE=32",
                "DEVICE=cpu",
                f"OUTPUT_MODEL={model}",
            ],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while "batch" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # until the training loop runs
        assert process.poll() is None, log.read_text()
        time.sleep(1.0)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        sent = time.monotonic()
        process.wait(timeout=30)
        assert time.monotonic() - sent < 10.0, log.read_text()  # 0.4 s on a quiet machine
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert "Cancelled" in log.read_text()
    assert not model.exists() and not [name for name in os.listdir(tmp_path) if name.startswith(".")]


def qgis_process_environment(profile: Path, plugins_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "QGIS_CUSTOM_CONFIG_PATH": str(profile),
        "QGIS_PLUGINPATH": str(plugins_dir),
        "QT_QPA_PLATFORM": "offscreen",
        "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), sysconfig.get_paths()["purelib"]])),
    }


def dotted_mask(path: Path, size_px: int) -> Path:
    """A mask of one-pixel buildings every 4 px: (size_px / 4)² polygons, seconds of writing."""
    import numpy as np

    from .conftest import write_raster

    building = np.zeros((size_px, size_px), np.uint8)
    building[::4, ::4] = 1
    return write_raster(path, building[None], 255, "mask")


def vectorize_command(mask: Path, output: Path) -> list[str]:
    # every one-pixel building kept as it is: one feature per pixel
    vectorize = ["bash", str(SCRIPT), "run", "unet_buildings:vectorize", "--", "MIN_AREA=0", "SIMPLIFY=0"]
    return [*vectorize, f"INPUT={mask}", f"OUTPUT={output}"]


def test_a_killed_vectorize_leaves_nothing_under_the_final_name_and_the_next_run_cleans_up(
    plugins_dir, tmp_path
) -> None:
    """kill -9 while the GeoPackage is written: no layer-less file (or journal) under the output's name;
    the temporary file left beside it is removed by the next run, which writes the whole layer."""
    mask = dotted_mask(tmp_path / "mask.tif", 1000)
    out = tmp_path / "out"
    out.mkdir()
    output = out / "buildings.gpkg"
    environment = qgis_process_environment(tmp_path / "profile", plugins_dir)
    process = subprocess.Popen(
        vectorize_command(mask, output), env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(".buildings.gpkg.*.part.gpkg")) and time.monotonic() < deadline:
            assert process.poll() is None, "the run ended before its output was being written"
            time.sleep(0.05)
        process.kill()
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    left = sorted(path.name for path in out.iterdir())
    assert left and all(name.startswith(".buildings.gpkg.") for name in left), left
    result = subprocess.run(vectorize_command(mask, output), env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["buildings.gpkg"]
    layer = QgsVectorLayer(str(output), "written", "ogr")
    assert layer.featureCount() == 250**2 and layer.name() == "written"


def test_two_runs_writing_one_geopackage_at_once_both_succeed(plugins_dir, tmp_path) -> None:
    """Each writes under its own temporary name and renames it into place: the file is whole either way."""
    mask = dotted_mask(tmp_path / "mask.tif", 400)
    output = tmp_path / "buildings.gpkg"
    runs = [
        subprocess.Popen(
            vectorize_command(mask, output),
            env=qgis_process_environment(tmp_path / f"profile{index}", plugins_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index in range(2)
    ]
    said = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], said
    assert QgsVectorLayer(str(output), "written", "ogr").featureCount() == 100**2
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []


def test_a_failed_rewrite_keeps_the_earlier_file_whole(scene, tmp_path, monkeypatch) -> None:
    output = tmp_path / "buildings.gpkg"
    run("vectorize", {"INPUT": str(scene.mask), "OUTPUT": str(output)})
    before = digests(tmp_path)

    import unet_buildings.plugin.algorithms.vectorize as algorithm

    written = algorithm.features

    def broken(polygons, fields, areas_m2):
        yield from written(polygons, fields, areas_m2)
        raise OSError(28, "No space left on device")  # the disk fills after the last feature

    monkeypatch.setattr(algorithm, "features", broken)
    with pytest.raises(QgsProcessingException, match="No space left|full"):
        run("vectorize", {"INPUT": str(scene.mask), "OUTPUT": str(output)})
    assert digests(tmp_path) == before


def test_extract_leaves_no_rasters_of_its_own_in_qgis_temporary_folder(scene, model_file, tmp_path) -> None:
    from qgis.core import QgsProcessingUtils

    temporary = Path(QgsProcessingUtils.tempFolder())
    before = set(temporary.rglob("*"))
    run(
        "extract",
        {"INPUT": str(scene.image), "MODEL": str(model_file), "THRESHOLD": 0, "OUTPUT": str(tmp_path / "b.gpkg")},
    )
    assert [path for path in set(temporary.rglob("*")) - before if path.is_file()] == []


def test_a_failed_extract_leaves_neither_the_mask_it_was_asked_for_nor_polygons(
    scene, model_file, tmp_path, monkeypatch
) -> None:
    import unet_buildings.plugin.algorithms.vectorize as algorithm

    def broken(polygons, fields, areas_m2):
        raise OSError(28, "No space left on device")
        yield

    monkeypatch.setattr(algorithm, "features", broken)
    with pytest.raises(QgsProcessingException, match="No space left|full"):
        run(
            "extract",
            {
                "INPUT": str(scene.image),
                "MODEL": str(model_file),
                "OUTPUT": str(tmp_path / "b.gpkg"),
                "OUTPUT_MASK": str(tmp_path / "mask.tif"),
            },
        )
    assert sorted(os.listdir(tmp_path)) == []


def test_temporary_files_of_killed_sessions_in_qgis_temporary_folders_are_removed(
    scene, model_file, tmp_path, monkeypatch
) -> None:
    """What a kill -9 leaves in a QGIS session's processing folder, which QGIS only removes when it exits."""
    import unet_buildings.plugin.algorithms.outputs as outputs
    from qgis.core import QgsProcessingUtils

    gone = subprocess.Popen(["true"])
    gone.wait()  # a process id that no longer runs
    dead_session = Path(QgsProcessingUtils.tempFolder()).parent / "processing_unetkilled" / "0a1b2c"
    dead_session.mkdir(parents=True)
    leftover = dead_session / f".building_mask.tif.{gone.pid}.abcd1234.part.tif"
    leftover.write_bytes(b"")
    someone_elses = dead_session / "building_mask.tif"
    someone_elses.write_bytes(b"")
    monkeypatch.setattr(outputs, "_sessions_cleaned", False)  # the check runs once per process
    try:
        run("extract", {"INPUT": str(scene.image), "MODEL": str(model_file), "OUTPUT": str(tmp_path / "b.gpkg")})
        assert not leftover.exists() and someone_elses.exists()
    finally:
        shutil.rmtree(dead_session.parent)


class ErrorsKept(QgsProcessingFeedback):
    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802, N803
        self.errors.append(error)


def test_the_toolbox_loads_the_renamed_file_and_nothing_else(scene, tmp_path) -> None:
    """Written under a temporary name, the output is still the layer the toolbox adds to the project, and
    the temporary name is not reported as a layer "not correctly generated"."""
    import processing
    from qgis.core import QgsProject

    output = tmp_path / "buildings.gpkg"
    feedback = ErrorsKept()
    results = processing.runAndLoadResults(
        "unet_buildings:vectorize", {"INPUT": str(scene.mask), "OUTPUT": str(output)}, feedback=feedback
    )
    try:
        loaded = [
            layer for layer in QgsProject.instance().mapLayers().values() if layer.source().startswith(str(output))
        ]
        assert results["OUTPUT"] == str(output) and len(loaded) == 1 and loaded[0].featureCount() == 2
        assert feedback.errors == []
    finally:
        QgsProject.instance().removeAllMapLayers()


@pytest.mark.parametrize(
    "algorithm_id, name, value, said",
    [
        ("train", "TIME_BUDGET_MIN", "nan", "time budget must be a positive number of minutes, not nan"),
        ("predict", "EXTENT", "nan,nan,nan,nan", "The area of interest (nan, nan : nan, nan) is not an extent"),
        ("predict", "PIXEL_SIZE", "nan", "The processing pixel size must be a positive number"),
    ],
)
def test_nan_given_as_a_number_is_refused_with_a_sentence_naming_it(
    algorithm_id, name, value, said, scene, model_file, tmp_path
) -> None:
    parameters = {
        "train": {"IMAGES": [str(scene.image)], "LABELS": [str(scene.labels)], "OUTPUT_MODEL": str(tmp_path / "m.pt")},
        "predict": {"INPUT": str(scene.image), "MODEL": str(model_file), "OUTPUT_MASK": str(tmp_path / "mask.tif")},
    }[algorithm_id]
    with pytest.raises(QgsProcessingException) as raised:
        run(algorithm_id, {**parameters, name: value})
    message = str(raised.value)
    assert said in message and "unexpectedly" not in message, message
    assert len(message.splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == []
