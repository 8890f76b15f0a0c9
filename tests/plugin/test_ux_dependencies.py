"""Issue 13, item 1: a shapely below 2 (Debian 12's python3-shapely 1.8) is a missing requirement with the
command that fixes it, and checking never raises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEM_SITE = Path("/usr/lib/python3/dist-packages")

CHECK = """
import json, sys
sys.path.insert(0, sys.argv[1])
import shapely
from unet_buildings.plugin import dependencies
dependencies.inside_qgis_executable = lambda: True  # the path QGIS's toolbar button takes
print(json.dumps({"shapely": shapely.__version__, "requirements": dependencies.missing_requirements(),
                  "problem": dependencies.dependency_problem()}))
"""


@pytest.mark.skipif(not (SYSTEM_SITE / "shapely").is_dir(), reason="needs Debian's python3-shapely")
def test_debian_shapely_1_8_is_a_missing_requirement_with_its_install_command(plugins_dir: Path) -> None:
    """The real shapely 1.8 of the system packages, found first as it is in Debian's QGIS."""
    import os

    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SYSTEM_SITE), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", CHECK, str(plugins_dir)], env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"the check raised:\n{done.stderr[-2000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["shapely"].startswith("1."):
        pytest.skip(f"the system's shapely is {result['shapely']}, not 1.x")
    assert result["requirements"] == ["shapely>=2,<2.1"]  # QGIS 3.22 on Debian 12 uses GEOS 3.11
    problem = result["problem"]
    assert f"shapely {result['shapely']} is too old" in problem
    assert "-m pip install" in problem and "'shapely>=2,<2.1'" in problem


def test_a_check_that_fails_is_reported_not_raised(unet_buildings, monkeypatch) -> None:
    from unet_buildings.plugin import dependencies

    def broken() -> list[str]:
        raise AttributeError("module 'shapely' has no attribute 'geos_version'")

    monkeypatch.setattr(dependencies, "missing_modules", broken)
    problem = dependencies.dependency_problem()
    assert problem is not None and "could not check" in problem and "shapely 2" in problem


def test_a_healthy_environment_has_no_problem(unet_buildings) -> None:
    from unet_buildings.plugin import dependencies

    assert dependencies.missing_requirements() == []
    assert dependencies.dependency_problem() is None
