"""Which engine dependencies the Python running QGIS lacks, and the exact command that installs them.

Only looks (``importlib.util.find_spec`` imports nothing; shapely, which is light, is imported to read
its version): the plugin must load, and say what is missing, without torch. Checking never raises:
whatever it cannot work out is logged and reported as a problem with the command that fixes it. The
dock offers to run the install command, and runs it only once the user has seen it and said yes.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import sys
import sysconfig
from pathlib import Path

# module the engine imports -> what pip installs (pins as in requirements.txt)
ENGINE_MODULES: dict[str, str] = {
    "torch": "torch",
    # no version pin: numpy comes with QGIS, and GDAL's bindings need the major version they were built for
    "numpy": "numpy",
    "rasterio": "rasterio",
    "shapely": "shapely>=2,<3",  # narrowed to QGIS's GEOS by matching_shapely()
}
# modules that come with QGIS / the system, never from pip (GDAL's bindings must match the GDAL library)
SYSTEM_MODULES: dict[str, str] = {
    "osgeo": "GDAL's Python bindings (Debian/Ubuntu: sudo apt install python3-gdal; Windows and macOS: they "
    "come with QGIS)",
}
MINIMUM_SHAPELY = (2, 0)


def find_module(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken package (e.g. a half-removed install) cannot be imported either
        return False


def missing_modules() -> list[str]:
    return [module for module in (*ENGINE_MODULES, *SYSTEM_MODULES) if not find_module(module)]


def shapely_version() -> str | None:
    """The importable shapely's version, or None when it cannot be imported."""
    try:
        import shapely

        return str(shapely.__version__)
    except Exception:  # noqa: BLE001 (whatever breaks the import, shapely is not usable)
        return None


def outdated_shapely() -> str | None:
    """The version of an importable shapely older than the engine needs (Debian 12's 1.8), else None."""
    if not find_module("shapely"):
        return None  # missing, reported as such
    version = shapely_version()
    match = re.match(r"(\d+)\.(\d+)", version or "")
    if match is None:
        return version or "unknown (it fails to import)"
    return version if (int(match[1]), int(match[2])) < MINIMUM_SHAPELY else None


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


def geos_mismatch() -> str | None:
    """A shapely wheel carries its own GEOS library. Inside a QGIS executable, QGIS's GEOS is already
    loaded and takes over the functions both define, so a shapely built for another GEOS minor version
    computes wrong geometries without any error (seen: shapely 2.2 (GEOS 3.14) in QGIS 3.22 (GEOS 3.11)
    gives polygons with no coordinates). Returns the requirement that matches QGIS's GEOS, or None."""
    if not inside_qgis_executable() or not find_module("shapely"):
        return None
    import shapely
    from qgis.core import Qgis

    geos_version = getattr(shapely, "geos_version", None)  # shapely 1.x has none: outdated_shapely() says so
    if geos_version is None or tuple(geos_version[:2]) == (Qgis.geosVersionMajor(), Qgis.geosVersionMinor()):
        return None
    return matching_shapely()


def matching_shapely() -> str:
    """The shapely requirement whose wheels bundle the GEOS minor version QGIS uses."""
    from qgis.core import Qgis

    # shapely wheels and the GEOS they bundle: 2.0.x -> 3.11, 2.1.x -> 3.13, 2.2.x -> 3.14
    matching = {(3, 11): "shapely>=2,<2.1", (3, 13): "shapely>=2.1,<2.2", (3, 14): "shapely>=2.2,<2.3"}
    # otherwise build it from source against the system's GEOS (the one QGIS uses)
    return matching.get((Qgis.geosVersionMajor(), Qgis.geosVersionMinor()), "--no-binary=shapely shapely>=2,<3")


def shapely_requirement() -> str:
    """matching_shapely(), or the plain range when QGIS cannot be asked for its GEOS version."""
    try:
        return matching_shapely()
    except Exception:  # noqa: BLE001 (checking must never raise)
        return ENGINE_MODULES["shapely"]


def missing_requirements() -> list[str]:
    """What pip must install for the engine to run in this Python; empty when nothing is missing."""
    missing = missing_modules()
    requirements = [
        shapely_requirement() if module == "shapely" else ENGINE_MODULES[module]
        for module in missing
        if module in ENGINE_MODULES
    ]
    if outdated_shapely() is not None:
        requirements.append(shapely_requirement())
    elif "shapely" not in missing:
        try:
            mismatch = geos_mismatch()
        except Exception as error:  # noqa: BLE001 (checking must never raise: say so in the log, go on)
            _log(f"Could not compare shapely's GEOS with QGIS's: {error}")
            mismatch = None
        if mismatch:
            requirements.append(mismatch)
    # "--no-binary=shapely shapely>=2,<3" is two arguments
    return [part for requirement in requirements for part in requirement.split()]


def _log(message: str) -> None:
    try:
        from .log import log

        log(message)
    except Exception:  # noqa: BLE001 (outside QGIS there is no message log)
        pass


def dependency_problem() -> str | None:
    """None when the engine can run, else the plain message users see (dock and algorithms alike).
    Never raises: the toolbar button and every algorithm call it first."""
    try:
        return _dependency_problem()
    except Exception as error:  # noqa: BLE001
        _log(f"Checking the plugin's Python modules failed: {error!r}")
        return (
            f"The U-Net Building Extractor could not check its Python modules ({error}). Install torch, "
            "rasterio, numpy and shapely 2 for the Python running QGIS, then restart QGIS."
        )


def _dependency_problem() -> str | None:
    missing = missing_modules()
    outdated = outdated_shapely()
    requirements = missing_requirements()
    if not requirements and not missing:
        return None
    reasons = []
    pip_missing = [module for module in missing if module in ENGINE_MODULES]
    if pip_missing:
        reasons.append(
            f"The U-Net Building Extractor needs the Python module(s) {', '.join(pip_missing)}, which "
            f"the Python running QGIS ({sys.version.split()[0]}, {sys.exec_prefix}) cannot import."
        )
    if outdated is not None:
        reasons.append(
            f"The installed shapely {outdated} is too old: the engine needs shapely 2 (its own "
            "functions, such as shapely.geos_version, do not exist in shapely 1)."
        )
    elif "shapely" not in missing and requirements and not pip_missing:
        import shapely
        from qgis.core import Qgis

        reasons.append(
            f"The installed shapely {shapely.__version__} was built for GEOS "
            f"{'.'.join(map(str, shapely.geos_version))} but QGIS uses GEOS {Qgis.geosVersion()}; "
            "inside QGIS that mix gives wrong building outlines."
        )
    for module in missing:
        if module in SYSTEM_MODULES:
            reasons.append(f"The Python module {module} is missing: it is {SYSTEM_MODULES[module]}.")
    text = " ".join(reasons)
    if requirements:
        text += (
            f" Install what is missing with:\n\n    {install_command(install_arguments(requirements))}\n\n"
            "then restart QGIS."
        )
    return text + " The plugin never installs anything without asking you."
