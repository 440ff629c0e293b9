"""Writing files so that a reader, or a power cut, never sees half of one; keeping files private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def make_private(path: Path) -> None:
    """Take every permission away from group and others (a directory: 0700; a file keeps its owner's
    bits). Symbolic links are left alone (not followed); a missing path or one owned by another user
    is skipped."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
        return
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        os.chmod(path, mode & ~0o077)


def make_private_tree(root: Path) -> None:
    """make_private for `root` and everything below it (without following links)."""
    make_private(root)
    if root.is_dir() and not root.is_symlink():
        for base, dirs, files in os.walk(root):
            for name in dirs + files:
                make_private(Path(base) / name)


def private_sqlite(db: Path) -> None:
    """An SQLite file and its WAL and shared-memory files readable by their owner only (SQLite gives a
    new -wal/-shm the main file's mode, so this holds for later ones too)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = db.with_name(db.name + suffix)
        try:
            os.chmod(path, PRIVATE_FILE)
        except (FileNotFoundError, PermissionError):
            pass


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in `directory` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str, mode: int = 0o644, *, durable: bool = False) -> None:
    """Replace `path` with `text` in one step (a temporary file renamed over it), with `mode`.
    `durable`: the file and the rename are on disk before this returns (for /data; not needed in /run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.chmod(tmp, mode)  # O_CREAT's mode is masked by the umask
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)
