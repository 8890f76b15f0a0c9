"""Writing outputs so that nobody ever sees half a file: every output is written under a temporary
name in the same folder (so the final rename is atomic) and renamed when complete; a failed or
cancelled write removes the temporary file and leaves any earlier output untouched."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temporary_beside(path: Path, suffix: str = ".part") -> Path:
    """A fresh, empty temporary file in ``path``'s folder (created with the folder if need be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(descriptor)
    return Path(name)


@contextmanager
def replaced_when_done(path: str | Path, suffix: str = ".part") -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it over ``path`` when the block succeeds and
    removes it when the block raises (a cancel included). ``suffix`` lets format drivers that go by
    the file name (GDAL, OGR) recognise it."""
    path = Path(path)
    temporary = temporary_beside(path, suffix)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
