"""Which engine dependencies the Python running QGIS lacks, and the exact command that installs them.

Only looks (``importlib.util.find_spec`` imports nothing): the plugin must load, and say what is
missing, without torch. The dock offers to run the install command, and runs it only once the user
has seen the exact command and said yes.
"""
from __future__ import annotations

import importlib.util
import os
import shlex
import sys
import sysconfig
from pathlib import Path
from typing import Optional

# module the engine imports -> what pip installs (pins as in requirements.txt)
ENGINE_MODULES: dict[str, str] = {
    "torch": "torch",
    "numpy": "numpy<2",
    "rasterio": "rasterio",
    "shapely": "shapely>=2,<3",  # narrowed to QGIS's GEOS by matching_shapely()
}


def missing_modules() -> list[str]:
    return [module for module in ENGINE_MODULES if importlib.util.find_spec(module) is None]


def python_executable() -> tuple[str, bool]:
    """(interpreter, is a virtual environment) for installing into what QGIS's Python imports from.

    Inside QGIS ``sys.executable`` is unreliable (QGIS itself, or whatever ``python3`` comes first on
    PATH). A virtual environment QGIS reads through PYTHONPATH (as the README sets up) is preferred,
    else the interpreter of QGIS's own Python installation."""
    if sys.prefix != sys.base_prefix:
        return sys.executable, True
    scripts = ("Scripts", "python.exe") if sys.platform == "win32" else ("bin", "python")
    for entry in sys.path:
        site_packages = Path(entry)
        if site_packages.name == "site-packages" and len(site_packages.parents) > 2:
            environment = site_packages.parents[2] if sys.platform != "win32" else site_packages.parents[1]
            if (environment / "pyvenv.cfg").exists():
                return str(environment.joinpath(*scripts)), True
    if sys.platform == "win32":
        candidate = Path(sys.exec_prefix) / "python.exe"  # OSGeo4W and the standalone installer
    else:
        candidate = Path(sys.exec_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return (str(candidate) if candidate.exists() else sys.executable), False


def install_arguments(requirements: list[str]) -> list[str]:
    """The pip command, as program and arguments, that installs ``requirements`` for the Python QGIS runs."""
    python, in_virtual_environment = python_executable()
    arguments = [python, "-m", "pip", "install"]
    if not in_virtual_environment:
        arguments.append("--user")  # never write into the system's or QGIS's own folders
        # Debian/Ubuntu mark their python as externally managed (PEP 668); pip refuses --user without this
        if (Path(sysconfig.get_paths()["stdlib"]) / "EXTERNALLY-MANAGED").exists():
            arguments.append("--break-system-packages")
    return arguments + requirements


def install_command(arguments: list[str]) -> str:
    """``install_arguments`` as the one line users paste into a terminal."""
    if sys.platform == "win32":
        return " ".join(f'"{part}"' if " " in part or "<" in part or ">" in part else part for part in arguments)
    return shlex.join(arguments)


def inside_qgis_executable() -> bool:
    """True in the QGIS desktop and qgis_process, False in a python process that imported qgis."""
    executable = Path("/proc/self/exe")
    host = Path(os.readlink(executable)).name if executable.exists() else Path(sys.executable).name
    return not host.lower().startswith("python")


def geos_mismatch() -> Optional[str]:
    """A shapely wheel carries its own GEOS library. Inside a QGIS executable, QGIS's GEOS is already
    loaded and takes over the functions both define, so a shapely built for another GEOS minor version
    computes wrong geometries without any error (seen: shapely 2.2 (GEOS 3.14) in QGIS 3.22 (GEOS 3.11)
    gives polygons with no coordinates). Returns the requirement that matches QGIS's GEOS, or None."""
    if not inside_qgis_executable() or importlib.util.find_spec("shapely") is None:
        return None
    import shapely
    from qgis.core import Qgis

    if tuple(shapely.geos_version[:2]) == (Qgis.geosVersionMajor(), Qgis.geosVersionMinor()):
        return None
    return matching_shapely()


def matching_shapely() -> str:
    """The shapely requirement whose wheels bundle the GEOS minor version QGIS uses."""
    from qgis.core import Qgis

    # shapely wheels and the GEOS they bundle: 2.0.x -> 3.11, 2.1.x -> 3.13, 2.2.x -> 3.14
    matching = {(3, 11): "shapely>=2,<2.1", (3, 13): "shapely>=2.1,<2.2", (3, 14): "shapely>=2.2,<2.3"}
    # otherwise build it from source against the system's GEOS (the one QGIS uses)
    return matching.get((Qgis.geosVersionMajor(), Qgis.geosVersionMinor()), "--no-binary=shapely shapely>=2,<3")


def missing_requirements() -> list[str]:
    """What pip must install for the engine to run in this Python; empty when nothing is missing."""
    missing = missing_modules()
    if missing:
        return [matching_shapely() if module == "shapely" else ENGINE_MODULES[module] for module in missing]
    shapely_requirement = geos_mismatch()
    return shapely_requirement.split() if shapely_requirement else []


def dependency_problem() -> Optional[str]:
    """None when the engine can run, else the plain message users see (dock and algorithms alike)."""
    requirements = missing_requirements()
    if not requirements:
        return None
    command = install_command(install_arguments(requirements))
    missing = missing_modules()
    if missing:
        return (f"The U-Net Building Extractor needs the Python module(s) {', '.join(missing)}, which the Python "
                f"running QGIS ({sys.version.split()[0]}, {sys.exec_prefix}) cannot import. Install them with:\n\n"
                f"    {command}\n\n"
                "then restart QGIS. The plugin never installs anything without asking you.")
    import shapely
    from qgis.core import Qgis

    return (f"The installed shapely {shapely.__version__} was built for GEOS "
            f"{'.'.join(map(str, shapely.geos_version))} but QGIS uses GEOS {Qgis.geosVersion()}; inside QGIS "
            "that mix gives wrong building outlines. Install a matching shapely with:\n\n"
            f"    {command}\n\n"
            "then restart QGIS. The plugin never installs anything without asking you.")
