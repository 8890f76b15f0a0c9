"""Writing outputs so that nobody ever sees half a file, and no input is ever overwritten.

Every output is written under a temporary name in its own folder (so the final rename is atomic),
checked, given the permissions of any newly created file, and renamed when complete; a failed or
cancelled write removes the temporary file and leaves any earlier output untouched. Temporary names
carry the writer's process id, so the leftovers of a killed run are recognised and removed by the
next run that writes in the same folder.

``check_output_paths`` refuses, before any work, an output that is one of the inputs (also through
a symbolic or hard link) or that two outputs share a file. Torch-free: the plugin and the command
line call it before importing the heavy parts.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Union

from ..errors import InputError, OutputError

PathLike = Union[str, "os.PathLike[str]"]
# ".<final name>.<pid>.<8 random characters>.part[.<extension>]", as temporary_beside makes them
# a GeoPackage written under such a name has SQLite's companions beside it while it is open
_LEFTOVER = re.compile(r"^\..+\.(?P<pid>\d+)\.[A-Za-z0-9_]{8}\.part(\.[A-Za-z0-9]+)?(-journal|-wal|-shm)?$")
# training's scratch folders (``scratch_folder``): "<prefix><pid>.<random>"; those of versions before
# the writer id in their name go by age only, far beyond any pause in a running training's use of them
SCRATCH_PREFIX = ".unet_buildings_scratch_"
_SCRATCH = re.compile(rf"^{re.escape(SCRATCH_PREFIX)}((?P<pid>\d+)\.)?")
LEFTOVER_AGE_S = 24 * 3600.0
# what temporary_beside adds to a file's name: ".", ".<pid>.<8 random characters>" and ".part.tif"
TEMPORARY_NAME_EXTRA_BYTES = 32
GEOTIFF_SUFFIXES = (".tif", ".tiff")  # every raster the engine writes is a GeoTIFF
_cleaned_folders: set[str] = set()


# -- where outputs may go ----------------------------------------------------------------------


def same_file(first: PathLike, second: PathLike) -> bool:
    """True when both paths name one file: the same path, a symbolic link to it or a hard link."""
    try:
        return os.path.samefile(first, second)  # same device and inode: every kind of link
    except OSError:  # one of them does not exist (yet): compare the paths with links resolved
        return os.path.normcase(os.path.realpath(first)) == os.path.normcase(os.path.realpath(second))


def _paths(value: PathLike | Iterable[PathLike] | None) -> list[Path]:
    if value is None or value == "":
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(item) for item in value if item]


def check_output_paths(
    inputs: Mapping[str, PathLike | Sequence[PathLike] | None], outputs: Mapping[str, PathLike | None]
) -> None:
    """Refuse an output that is an input or another output, before anything is written.

    ``inputs`` and ``outputs`` map the names the user knows (parameter or option names) to paths;
    an input may be a list of paths, a missing value is skipped. Raises InputError naming both."""
    named_inputs = [(name, path) for name, value in inputs.items() for path in _paths(value)]
    named_outputs = [(name, path) for name, value in outputs.items() for path in _paths(value)]
    for output_name, output in named_outputs:
        for input_name, source in named_inputs:
            if same_file(output, source):
                raise InputError(
                    f"The output {output_name} '{output}' is the input {input_name} '{source}': "
                    f"writing it would destroy that input, so choose another file for {output_name}."
                )
    for (first_name, first), (second_name, second) in itertools.combinations(named_outputs, 2):
        if same_file(first, second):
            raise InputError(
                f"The outputs {first_name} and {second_name} are both '{first}': give each output its own file name."
            )


def check_output_location(path: PathLike, name: str = "output") -> None:
    """A clear sentence, before any work, when ``path`` cannot be a file: a folder is in its place,
    a file stands where a folder of its path should be, or its folder is read-only. A folder that
    does not exist yet is fine (it is made when the output is written)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(
            f"The {name} '{path}' is a folder: give a file name inside it, e.g. "
            f"'{path / ('result' + (path.suffix or '.tif'))}'."
        )
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(
            f"The {name} '{path}' cannot be written: '{existing}' is a file where a folder is "
            "expected. Choose a location inside an existing folder."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(
            f"The {name} '{path}' cannot be written: the folder '{existing}' is read-only or not "
            "yours to write in. Choose another folder."
        )
    _check_name_lengths(path, existing, name)


def _check_name_lengths(path: Path, existing: Path, name: str) -> None:
    """Every name still to be made fits the file system, the file's with room for its temporary name:
    a name that is legal but too long for that would fail only when the output is written."""
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255  # what the common file systems allow
    *folders, file_name = path.relative_to(existing).parts
    allowed = [(part, limit) for part in folders] + [(file_name, limit - TEMPORARY_NAME_EXTRA_BYTES)]
    for part, most in allowed:
        size = len(os.fsencode(part))
        if size > most:
            raise OutputError(
                f"The {name} '{path}' cannot be written: the name '{part[:40]}…' is {size} bytes long and "
                f"this folder allows {most} there. Choose a shorter file name."
            )


def check_output_suffix(path: PathLike, suffixes: Sequence[str], format_name: str, name: str = "output") -> None:
    """Outputs are written in the format their extension names, or refused: a '.jpg' never holds a GeoTIFF."""
    suffix = Path(path).suffix.lower()
    if suffix not in suffixes:
        raise InputError(
            f"The {name} '{path}' is written as {format_name}: give it a name ending in "
            f"{' or '.join(suffixes)} (not '{suffix or 'no extension'}')."
        )


# one sentence per operating-system error, naming the file ({where}) and what to do
_DISK_FULL = "The disk holding {where} is full: free some space or choose another location, then run again."
_NO_PERMISSION = "No permission to use {where}: choose a location you may write to, or change its permissions."
OS_ERROR_ADVICE = {
    errno.ENOSPC: _DISK_FULL,
    getattr(errno, "EDQUOT", errno.ENOSPC): _DISK_FULL,
    errno.EFBIG: _DISK_FULL,
    errno.EACCES: _NO_PERMISSION,
    errno.EPERM: _NO_PERMISSION,
    errno.EROFS: "{where} is on a read-only disk: choose another location.",
    errno.ENOENT: "{where} or its folder does not exist: check the path.",
    errno.EISDIR: "{where} is a folder where a file is expected: give a file name.",
    errno.ENOTDIR: "Part of the path {where} is a file where a folder is expected: check the path.",
    errno.ENAMETOOLONG: "The path {where} is too long: choose a shorter file name or folder.",
    errno.EIO: "Reading or writing {where} failed with an input/output error (a failing disk or a lost network "
    "drive?): check the disk and run again.",
}


def describe_os_error(error: OSError, path: PathLike | None = None) -> str:
    """One sentence for an operating-system error: which file, what happened, what to do."""
    name = path if path is not None else (error.filename or "")
    where = f"'{name}'" if name else "a file"
    code = error.errno
    advice = OS_ERROR_ADVICE.get(code)
    if advice:
        return advice.format(where=where)
    if code is None and name == "" and str(error):  # GDAL's read and write errors (rasterio) name the file inside
        return (
            f"Reading or writing a raster failed ({str(error)[:300]}): the file may be damaged or truncated, or "
            "its disk full or gone; check it and run again."
        )
    detail = error.strerror or str(error)
    return (
        f"Could not read or write {where} ({detail}): check the path, the free disk space and the "
        "permissions, then run again."
    )


# -- writing ------------------------------------------------------------------------------------


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (os.umask sets it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish(temporary: Path, path: Path) -> None:
    """Rename a complete temporary file over ``path``, with the permissions a newly created file gets
    (mkstemp makes temporary files private to their owner; an output is not meant to be)."""
    os.chmod(temporary, 0o666 & ~current_umask())
    os.replace(temporary, path)


def scratch_folder(parent: Path | None) -> tempfile.TemporaryDirectory:
    """A training run's scratch folder in ``parent`` (None: the system's temporary folder), named with
    the run's process id so that the next run there removes it once that process is gone."""
    return tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}.", dir=parent)


def clean_leftovers(folder: Path, now: float | None = None) -> list[Path]:
    """Remove what killed runs left in ``folder``: temporary files of processes that no longer run (or,
    where that cannot be told, older than LEFTOVER_AGE_S) and training scratch folders older than that.
    Only names this module's pattern makes are touched. Returns what was removed."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith("."):
            continue
        try:
            is_file = entry.is_file(follow_symlinks=False)
            match = _LEFTOVER.match(entry.name) if is_file else None
            if not is_file and entry.is_dir(follow_symlinks=False):
                match = _SCRATCH.match(entry.name)
            if not match:
                continue
            pid = int(match["pid"]) if match["pid"] else None
            age_s = now - entry.stat(follow_symlinks=False).st_mtime
            if pid == os.getpid() or ((pid is None or _running(pid)) and age_s < LEFTOVER_AGE_S):
                continue
            if is_file:
                os.unlink(entry.path)
            else:
                shutil.rmtree(entry.path)
        except OSError:  # gone meanwhile, or not ours to remove: leave it
            continue
        removed.append(Path(entry.path))
    return removed


def _running(pid: int) -> bool:
    """Whether a process ``pid`` runs; True where that cannot be told (the age rule applies then)."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it runs, under another user
        return True
    return True


def temporary_beside(path: PathLike, suffix: str = ".part") -> Path:
    """A fresh, empty temporary file in ``path``'s folder (made with the folder if need be), named so
    that ``clean_leftovers`` recognises it. ``suffix`` must start with ".part"."""
    path = Path(path)
    check_output_location(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = str(path.parent.resolve())
        if folder not in _cleaned_folders:  # once per folder and process: listing a folder costs
            _cleaned_folders.add(folder)
            clean_leftovers(path.parent)
        descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix, dir=path.parent)
        os.close(descriptor)
    except OSError as error:
        raise OutputError(describe_os_error(error, path)) from error
    return Path(name)


# Errors that can only come from writing, whichever call raised them: blamed on the output.
_WRITE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG, errno.EROFS}


@contextmanager
def replaced_when_done(
    path: PathLike, suffix: str = ".part", verify: Callable[[Path], str | None] | None = None
) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; when the block succeeds, ``verify(temporary)`` (which
    returns what is wrong with the written file, or None) runs and the file is renamed over ``path``;
    when anything
    raises (a cancel included) the temporary file is removed. ``suffix`` lets format drivers that go
    by the file name (GDAL, OGR) recognise it, e.g. ".part.tif"."""
    path = Path(path)
    temporary = temporary_beside(path, suffix)
    try:
        try:
            yield temporary
            problem = verify(temporary) if verify is not None else None
            if problem:
                raise incomplete_output(path, problem)
            publish(temporary, path)
        except OSError as error:
            if error.errno in _WRITE_ERRNOS or error.filename in (str(temporary), str(path)):
                raise OutputError(describe_os_error(error, path)) from error
            raise
    finally:
        temporary.unlink(missing_ok=True)


def incomplete_output(path: PathLike, detail: str) -> OutputError:
    """The error for an output found incomplete after writing, with the likely cause when the disk is full."""
    path = Path(path)
    try:
        full = shutil.disk_usage(path.parent).free < 1024 * 1024
    except OSError:
        full = False
    if full:
        return OutputError(
            f"The disk holding '{path}' is full, so the output could not be written completely "
            "(nothing was left under that name): free some space or choose another location."
        )
    return OutputError(
        f"Writing '{path}' failed ({detail}), so nothing was left under that name: check the free "
        "disk space and the folder, then run again."
    )
