"""Atomic file helpers: a reader never sees a half-written securedc output.

Every file securedc writes (condensed sets, reports, plots) goes through these helpers:
the bytes are written to a temporary file in the *same directory* as the target, flushed
and ``fsync``-ed, then moved over the target with :func:`os.replace` (atomic on POSIX and
Windows when source and target are on one file system). On any failure the temporary file
is removed and the target keeps its old content (or stays absent).

The final file gets the permissions an ordinary ``open(path, "w")`` would give it: those
of the file it replaces, or ``0o666`` minus the process umask for a new file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from securedc.errors import ConfigError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_path", "ensure_writable_dir"]

logger = logging.getLogger(__name__)


def _final_mode(target: Path) -> int:
    """Permission bits the target should end up with (existing file's, else 0o666 & ~umask)."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    """Best effort: persist the directory entry created by ``os.replace`` (POSIX only)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories; the data file is synced
        pass
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it over ``path`` when the block succeeds.

    The temporary file already exists (empty) when the block starts, so writers may open it
    with mode ``"w"``/``"wb"``. Because its name ends in ``.tmp``, tools that pick a format from
    the suffix must be told the format explicitly.

    Args:
        path: The final file.
        mode: Permission bits of the final file (e.g. ``0o600`` for an owner-only file); ``None``
            keeps those of the file it replaces, or ``0o666`` minus the umask for a new file.
            The temporary file is created ``0o600``, so no other user can read it meanwhile.

    Yields:
        The temporary path to write to.

    Raises:
        OSError: The directory does not exist or is not writable, or the move failed. In every
            failure case (also when the block raises) the temporary file is deleted and
            ``path`` is untouched.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("hello")
        >>> target.read_text()
        'hello'
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:  # persist whatever the block wrote
            os.fsync(handle.fileno())
        os.chmod(tmp, _final_mode(target) if mode is None else mode)
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, replace).

    Args:
        path: The final file.
        data: The complete new content.
        mode: Permission bits of the final file (see :func:`atomic_path`).

    Raises:
        OSError: Writing or moving failed; the temp file is removed and ``path`` is untouched.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "blob.bin"
        >>> atomic_write_bytes(target, b"\\x00\\x01")
        >>> target.read_bytes()
        b'\\x00\\x01'
    """
    with atomic_path(path, mode=mode) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int | None = None) -> None:
    """Write ``text`` (UTF-8, newlines untranslated) to ``path`` atomically.

    Args:
        path: The final file.
        text: The complete new content.
        mode: Permission bits of the final file (see :func:`atomic_path`).

    Raises:
        OSError: Writing or moving failed; the temp file is removed and ``path`` is untouched.
    """
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (with parents) if needed and check that files can be created in it.

    Call this before any long computation so an unwritable output location fails in
    seconds, not after the run. The check is real: besides :func:`os.access` a probe file is
    created and deleted, which also catches read-only mounts and full quotas.

    Args:
        path: The output directory.

    Returns:
        The directory as a :class:`~pathlib.Path` (``~`` expanded).

    Raises:
        ConfigError: ``path`` exists but is not a directory, cannot be created, or is not
            writable.

    Example:
        >>> import tempfile, pathlib
        >>> out = ensure_writable_dir(pathlib.Path(tempfile.mkdtemp()) / "run" / "report")
        >>> out.is_dir()
        True
    """
    directory = Path(path).expanduser()
    fix = "choose another output directory or fix its permissions"
    if directory.exists() and not directory.is_dir():
        raise ConfigError(
            f"output directory {str(directory)!r} is not writable: it exists and is not a "
            f"directory; {fix}"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"output directory {str(directory)!r} is not writable: cannot create it "
            f"({err.strerror or err}); {fix}"
        ) from err
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(
            f"output directory {str(directory)!r} is not writable: permission denied; {fix}"
        )
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".securedc-probe-", suffix=".tmp")
    except OSError as err:
        raise ConfigError(
            f"output directory {str(directory)!r} is not writable: cannot create a file there "
            f"({err.strerror or err}); {fix}"
        ) from err
    os.close(fd)
    _unlink_quietly(Path(probe))
    logger.debug("output directory %s is writable", directory)
    return directory
