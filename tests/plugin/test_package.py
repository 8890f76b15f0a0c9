"""The plugin zip that `make package` builds: what QGIS needs, and none of the development set-up."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import zipfile

from .conftest import REPO


def test_package_holds_the_plugin_and_nothing_else(tmp_path) -> None:
    subprocess.run(
        ["bash", str(REPO / "scripts" / "package.sh"), "unet_buildings"],
        check=True,
        env={**os.environ, "DIST_DIR": str(tmp_path)},
        capture_output=True,
        timeout=120,
    )
    names = zipfile.ZipFile(tmp_path / "unet_buildings.zip").namelist()
    assert {name.split("/")[0] for name in names} == {"unet_buildings"}
    for required in (
        "metadata.txt",
        "__init__.py",
        "plugin/plugin.py",
        "plugin/provider.py",
        "model/net/network.py",
        "resources/icon.svg",
        *(f"resources/styles/{kind}.qml" for kind in ("buildings", "probability", "mask", "error_map")),
    ):
        assert f"unet_buildings/{required}" in names, required
    samples = sorted(path.relative_to(REPO).as_posix() for path in (REPO / "resources" / "sample").glob("*.tif"))
    assert all(f"unet_buildings/{sample}" in names for sample in samples)
    top_levels = {name.split("/")[1] for name in names if name.count("/") >= 1 and name.split("/")[1]}
    assert top_levels <= {"metadata.txt", "__init__.py", "plugin", "model", "resources", "LICENSE", "README.md"}
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]

    metadata = configparser.ConfigParser()
    metadata.read_string(zipfile.ZipFile(tmp_path / "unet_buildings.zip").read("unet_buildings/metadata.txt").decode())
    general = metadata["general"]
    assert general["name"] == "U-Net Building Extractor" and general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    assert f"unet_buildings/{general['icon']}" in names
    version = (REPO / "model" / "__init__.py").read_text().split('__version__ = "')[1].split('"')[0]
    assert general["version"] == version


def test_qt_is_used_in_a_way_that_also_runs_on_qt6() -> None:
    """QGIS 4 (Qt6): Qt only through qgis.PyQt, fully scoped enums (Qt.CheckState.Checked, not Qt.Checked),
    exec() rather than exec_()."""
    offences = []
    for path in [*(REPO / "plugin").rglob("*.py"), REPO / "scripts" / "gui_check.py"]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if (
                re.search(r"^\s*(from|import) PyQt[56]", code)
                or "exec_(" in code
                or re.search(r"\bQt\.[A-Za-z]+\b(?!\.)", code)
            ):
                offences.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offences == []
