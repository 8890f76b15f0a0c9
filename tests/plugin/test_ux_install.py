"""Issue 13, install advice that does not break the system: no global numpy pin, test-only packages in
requirements-dev.txt (installed by `make test`), osgeo declared, the shapely pin as the dock computes it,
and a GPL-2.0-or-later LICENSE."""

from __future__ import annotations

import re
import subprocess

from .conftest import REPO

TEST_ONLY = ("pytest", "pytest-qgis", "hypothesis", "onnxruntime")


def requirement_names(path) -> list[str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [
        re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower() for line in lines if line and not line.startswith("-")
    ]


def test_runtime_requirements_hold_no_numpy_pin_and_no_test_packages() -> None:
    runtime = requirement_names(REPO / "requirements.txt")
    assert "numpy" not in runtime  # GDAL's bindings need the system numpy's major version
    assert not set(TEST_ONLY) & set(runtime)
    assert {"torch", "shapely"} <= set(runtime)
    assert set(TEST_ONLY) <= set(requirement_names(REPO / "requirements-dev.txt"))


def test_make_test_installs_the_dev_requirements_and_holds_numpy_to_the_systems_major_version() -> None:
    plan = subprocess.run(["make", "-n", "-B", "test"], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    assert "-r requirements-dev.txt" in plan
    install = next(line for line in plan.splitlines() if "-r requirements.txt" in line)
    assert "numpy<2" not in plan and "-c .venv/constraints.txt" in install


def test_the_readme_install_advice_matches_what_the_dock_computes(unet_buildings) -> None:
    from unet_buildings.plugin.dependencies import ENGINE_MODULES, SYSTEM_MODULES, matching_shapely

    readme = (REPO / "README.md").read_text()
    install = readme.split("## Install the plugin into your QGIS", 1)[1].split("\n## ", 1)[0]
    debian = next(line for line in install.splitlines() if "--break-system-packages" in line)
    assert f"'{matching_shapely()}'" in debian  # QGIS 3.22 / GEOS 3.11 here: shapely>=2,<2.1
    assert "numpy" not in debian and ENGINE_MODULES["numpy"] == "numpy"  # no pin in the advice either
    assert "osgeo" in SYSTEM_MODULES and "python3-gdal" in install and "`osgeo`" in install


def test_license_is_the_gpl_2_or_later() -> None:
    text = (REPO / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 2, June 1991" in text
    assert "GPL-2.0-or-later" in (REPO / "README.md").read_text()
