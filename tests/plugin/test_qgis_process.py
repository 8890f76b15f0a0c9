"""qgis_process, as users' scripts and the demo call it, through scripts/qgis_process.sh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from .conftest import REPO, SIZE_PX

SCRIPT = REPO / "scripts" / "qgis_process.sh"


def qgis_process(
    arguments: list[str], profile: Path, plugins_dir: Path, python_path: str
) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "QGIS_CUSTOM_CONFIG_PATH": str(profile),
        "QGIS_PLUGINPATH": str(plugins_dir),
        "PYTHONPATH": python_path,
        "QT_QPA_PLATFORM": "offscreen",
    }
    return subprocess.run(
        ["bash", str(SCRIPT), *arguments], env=environment, capture_output=True, text=True, timeout=300
    )


def run_with_torch(arguments: list[str], profile: Path, plugins_dir: Path) -> dict:
    """qgis_process with what this test run imports from (its torch): PYTHONPATH, then the venv."""
    python_path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), sysconfig.get_paths()["purelib"]]))
    result = qgis_process(["run", *arguments[:1], "--json", "--", *arguments[1:]], profile, plugins_dir, python_path)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)["results"]


def test_extract_from_qgis_process_writes_a_geopackage(plugins_dir, scene, model_file, tmp_path) -> None:
    from osgeo import ogr

    output = tmp_path / "buildings.gpkg"
    results = run_with_torch(
        [
            "unet_buildings:extract",
            f"INPUT={scene.image}",
            f"MODEL={model_file}",
            "THRESHOLD=0",
            "DEVICE=cpu",
            f"OUTPUT={output}",
        ],
        tmp_path / "profile",
        plugins_dir,
    )
    assert results["BUILDING_COUNT"] == 1
    source = ogr.Open(str(output))
    assert source.GetLayer(0).GetFeatureCount() == 1
    # the script enabled the plugin in the profile it was given
    assert "unet_buildings=true" in (tmp_path / "profile/profiles/default/QGIS/QGIS3.ini").read_text()


def test_without_torch_every_algorithm_names_the_install_command(
    plugins_dir, scene, model_file, tmp_path, monkeypatch
) -> None:
    # The system python QGIS runs has no torch; only the venv has it, and it is left off the paths here
    # (QGIS's embedded python also finds a venv through a `python3` first on PATH).
    venv_bin = str(Path(sys.prefix) / "bin")
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin))
    result = qgis_process(
        [
            "run",
            "unet_buildings:predict",
            "--",
            f"INPUT={scene.image}",
            f"MODEL={model_file}",
            f"OUTPUT_MASK={tmp_path / 'mask.tif'}",
        ],
        tmp_path / "profile",
        plugins_dir,
        str(tmp_path),
    )
    if "torch" not in result.stdout + result.stderr and result.returncode == 0:
        pytest.skip("the system python has torch too")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "needs the Python module(s) torch" in output and "-m pip install" in output
    assert not (tmp_path / "mask.tif").exists()


def test_example_model_chains_extract_and_evaluate(plugins_dir, scene, model_file, tmp_path, unet_buildings) -> None:
    """resources/models/extract_and_evaluate.model3, the example users open in the Model Designer: its
    evaluation scores the mask its extraction predicted against the labels' building values."""
    import rasterio
    from unet_buildings.model.prediction.predict import predict_raster

    results = run_with_torch(
        [
            str(REPO / "resources" / "models" / "extract_and_evaluate.model3"),
            f"image={scene.image}",
            f"model={model_file}",
            f"labels={scene.labels}",
            "building_values=2",
            f"extract:buildings={tmp_path / 'buildings.gpkg'}",
            f"evaluate:report={tmp_path / 'report.html'}",
            f"evaluate:error_map={tmp_path / 'errors.tif'}",
        ],
        tmp_path / "profile",
        plugins_dir,
    )
    assert results["extract:buildings"] == str(tmp_path / "buildings.gpkg")
    report = json.loads((tmp_path / "report.json").read_text())
    # the reference: the engine's own mask for this image and model, counted against class 2 here
    predict_raster(scene.image, model_file, mask_path=tmp_path / "reference_mask.tif")
    with rasterio.open(tmp_path / "reference_mask.tif") as mask, rasterio.open(scene.labels) as labels:
        predicted, building = mask.read(1) == 1, labels.read(1) == 2
    assert report["confusion_matrix"]["pixels"] == {
        "tp": int((predicted & building).sum()),
        "fp": int((predicted & ~building).sum()),
        "fn": int((~predicted & building).sum()),
        "tn": int((~predicted & ~building).sum()),
    }
    # the untrained model marks most pixels building: scoring class 1, or the labels against themselves, differs
    assert building.sum() < SIZE_PX * SIZE_PX / 2 < predicted.sum()
    assert (tmp_path / "errors.tif").exists() and (tmp_path / "buildings.gpkg").exists()
