"""Files written whole or not at all: content goes to a hidden temporary file beside the target, which is renamed
over the target only once it is complete, so a reader never sees half a file and a failed run leaves the old one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def temporary_beside(path: Path | str) -> Path:
    """A new, empty, hidden file in ``path``'s folder (created if missing). It keeps ``path``'s suffix because
    OpenCV picks the image or video format by it; being on the same filesystem makes the final rename atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(handle)
    return Path(name)


def publish(temporary: Path, path: Path | str) -> None:
    """Rename a finished temporary file over ``path``."""
    os.chmod(temporary, 0o644)  # mkstemp makes it private; results are for everyone to read
    os.replace(temporary, path)


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to: published on success, removed on any error."""
    temporary = temporary_beside(path)
    try:
        yield temporary
        publish(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def write_json(path: Path | str, payload: dict) -> None:
    write_text(path, json.dumps(payload, indent=2) + "\n")
