"""Files written whole or not at all: content goes to a hidden temporary file beside the target, which is renamed
over the target only once it is complete, so a reader never sees half a file and a failed run leaves the old one.
Also the path checks that commands make before they start: writable, existing, a camera index or a path."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path


class MissingFileError(FileNotFoundError, ValueError):
    """A file the caller named is not there: a FileNotFoundError, and a ValueError like every other wrong input to
    ferlib's API (``except ValueError`` catches it)."""


def temporary_beside(path: Path | str) -> Path:
    """A new, empty, hidden file in ``path``'s folder (created if missing). It keeps ``path``'s suffix because
    OpenCV picks the image or video format by it; being on the same filesystem makes the final rename atomic.
    OSError naming ``path`` (not the hidden file) when it cannot be made."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; expected a file name")
    _make_folder(path.parent, path)
    return _new_hidden_file(path.parent, f".{path.stem}.", f".partial{path.suffix}", path)


def _new_hidden_file(folder: Path, prefix: str, suffix: str, target: Path) -> Path:
    """An empty file made in ``folder``, with errors that name ``target`` (what the user asked to write)."""
    try:
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    except OSError as error:
        raise OSError(f"{target}: cannot be written there ({error.strerror})") from None
    os.close(handle)
    return Path(name)


def _make_folder(folder: Path, target: Path) -> None:
    """Create ``folder`` (and its parents) for writing ``target``, with errors that name ``target``."""
    for ancestor in (folder, *folder.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise NotADirectoryError(f"{target}: {ancestor} is a file, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"{target}: cannot be written there ({error.strerror})") from None


def check_writable(path: Path | str) -> None:
    """Fail now, with the path the user gave, if ``path`` could not be written later (a read-only place, a folder,
    a path under a file), so that no long job runs first. Leaves nothing behind but the folders it would need."""
    temporary_beside(path).unlink()


def check_writable_folder(folder: Path | str) -> None:
    """The same for a folder that files will be written into."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder}: is a file; expected a folder")
    _make_folder(folder, folder)
    _new_hidden_file(folder, ".ferlib-write-check.", "", folder).unlink()


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


def path_exists(path: Path) -> bool:
    """Path.exists, False rather than an OSError for a name the file system refuses (too long, say)."""
    try:
        return path.exists()
    except OSError:
        return False


def names_camera(source: str | int | Path) -> bool:
    """Whether a frame source (``ferlib.video.open_source``'s, the app's ``--source``) is a camera index: an int, or
    a string of digits that names no file or folder ("2024" may be a folder of a year's photos). Here, not in
    ferlib.video, so that the app checks its arguments without loading PyTorch."""
    if isinstance(source, bool):
        return False
    if isinstance(source, int):
        return True
    return isinstance(source, str) and re.fullmatch(r"-?[0-9]+", source) is not None and not path_exists(Path(source))
