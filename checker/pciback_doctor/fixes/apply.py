"""`pciback-doctor fix`: show a fix as a unified diff, or write it under the root — atomically (temp
file + rename), with a backup of every file it replaces, idempotently, never outside the root, and
refusing when a file changed since the doctor read it."""

from __future__ import annotations

import difflib
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pciback_doctor.errors import UsageError
from pciback_doctor.facts.root import Root
from pciback_doctor.model import FileChange


def pending(changes: Sequence[FileChange], files: Mapping[str, str]) -> list[FileChange]:
    """The changes that would alter something (a second run finds none)."""
    return [c for c in changes if files.get(c.path) != c.content]


def unified_diff(changes: Sequence[FileChange], files: Mapping[str, str]) -> str:
    out: list[str] = []
    for change in changes:
        old = files.get(change.path)
        out.extend(
            difflib.unified_diff(
                (old or "").splitlines(keepends=True),
                change.content.splitlines(keepends=True),
                fromfile=f"a/{change.path}" if old is not None else "/dev/null",
                tofile=f"b/{change.path}",
            )
        )
    return "".join(out)


def _target(root: Root, rel: str) -> Path:
    """Where `rel` lands on the host: its parent resolved inside the root (symlinks included), the
    file itself never a symlink, and nothing that escapes the root."""
    head, _, name = rel.rpartition("/")
    if not name or name in (".", "..") or ".." in rel.split("/"):
        raise UsageError(f"refusing to write {rel}: not a plain path inside the root")
    parent = root.resolve(head) if head else root.path
    if parent is None:
        # missing directories are created, below the deepest existing one that resolves in the root
        parent = root.path.joinpath(*head.split("/"))
    real_root = os.path.realpath(root.path)
    if os.path.commonpath([os.path.realpath(parent), real_root]) != real_root:
        raise UsageError(f"refusing to write {rel}: it resolves outside the root")
    target = parent / name
    if target.is_symlink():
        raise UsageError(f"refusing to write {rel}: it is a symlink")
    return target


def write(
    root: Root, changes: Sequence[FileChange], files: Mapping[str, str], backup_dir: Path | None
) -> list[str]:
    """Apply the changes; returns the paths written. Checks everything before touching anything."""
    todo = pending(changes, files)
    targets = {c.path: _target(root, c.path) for c in todo}
    for change in todo:
        target = targets[change.path]
        now = target.read_text("utf-8", "surrogateescape") if target.exists() else None
        if now != files.get(change.path):
            raise UsageError(f"{change.path} changed since it was read; run the doctor again")
        directory = _existing_parent(target)
        if not os.access(directory, os.W_OK):
            raise UsageError(f"cannot write {change.path}: {directory} is not writable (read-only root?)")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    backups = backup_dir or root.path / "var/backups/pciback-doctor" / stamp
    written: list[str] = []
    for change in todo:
        target = targets[change.path]
        try:
            if target.exists():
                saved = backups / change.path
                saved.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(target, saved)
            target.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(target, change)
        except OSError as exc:
            raise UsageError(
                f"writing {change.path} failed: {exc.strerror or exc} (written so far: {', '.join(written) or 'nothing'})"
            ) from None
        written.append(change.path)
    return written


def _existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path if path.is_dir() else path.parent


def _atomic_write(target: Path, change: FileChange) -> None:
    mode = target.stat().st_mode & 0o7777 if target.exists() else (0o755 if change.executable else 0o644)
    if change.executable:
        mode |= 0o111
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(change.content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
