"""`pciback-doctor fix`: show a fix as a unified diff, or write it under the root.

Every file the doctor writes goes through `write`, in steps that each finish before the next begins:

1. plan, writing nothing: every path is resolved inside the root through open directories (a
   symlink anywhere — `var`, `var/backups`, the target itself — is followed as it would be after
   chroot, never out of the root); each existing target must be a regular file holding exactly the
   bytes the doctor read; each directory to write in must be writable; shell files must read back
   as the fix intends;
2. back up: the bytes read in step 1 go into a folder made for this run alone (exclusive mkdir,
   a new name when one exists), or into `--backup-dir`, never over an existing file;
3. stage: the new bytes go into temporary files beside the targets, with the old owner and mode;
4. commit: each temporary file is renamed over its target;
5. prove: each target is read back and must hold exactly the intended bytes (and a shell file must
   still set the intended values); otherwise every target is put back as it was.

A failure in steps 1 to 3 leaves every target untouched; a failure in 4 or 5 restores them.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
import re
import secrets
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pciback_doctor.errors import UsageError
from pciback_doctor.facts.bootloader import shell_variables
from pciback_doctor.facts.root import Root
from pciback_doctor.model import FileChange

_MAX_LINKS = 40  # the kernel's limit on symlinks followed in one lookup (MAXSYMLINKS)
BACKUPS = "var/backups/pciback-doctor"
# open a directory only to name things in it; a symlink is never followed by the open itself
_DIR_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# a FIFO or device must never block the open
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def pending(changes: Sequence[FileChange], files: Mapping[str, str]) -> list[FileChange]:
    """The changes that would alter something (a second run finds none)."""
    return [c for c in changes if files.get(c.path) != c.content]


def _lines(text: str) -> list[str]:
    # only "\n" ends a line: str.splitlines() would also split at form feed, VT, U+0085, U+2028
    return re.findall(r"[^\n]*\n|[^\n]+", text)


def unified_diff(changes: Sequence[FileChange], files: Mapping[str, str]) -> str:
    out: list[str] = []
    for change in changes:
        old = files.get(change.path)
        for line in difflib.unified_diff(
            _lines(old or ""),
            _lines(change.content),
            fromfile=f"a/{change.path}" if old is not None else "/dev/null",
            tofile=f"b/{change.path}",
        ):
            out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


# -- where things are ----------------------------------------------------------------------------


@dataclass
class _Place:
    """A path under the root: the deepest existing directory on its way (open), the directories
    still to create below it, and the file's name (None for a directory)."""

    rel: str
    fd: int
    missing: list[str]
    name: str | None
    info: os.stat_result | None  # lstat of the existing file, None when it does not exist


def _kind(mode: int) -> str:
    kinds = {
        stat.S_IFIFO: "a FIFO",
        stat.S_IFCHR: "a character device",
        stat.S_IFBLK: "a block device",
        stat.S_IFSOCK: "a socket",
        stat.S_IFDIR: "a directory",
        stat.S_IFLNK: "a symlink",
        stat.S_IFREG: "a regular file",
    }
    return kinds.get(stat.S_IFMT(mode), "not a regular file")


class _Paths:
    """Opens paths under the root the way the system will see them once booted from it: symlinks
    (absolute ones too) resolve inside the root and `..` stops at it. Every step is an `openat` on a
    directory already open, so a directory swapped for a symlink meanwhile fails instead of leading
    out."""

    def __init__(self, root: Root, stack: contextlib.ExitStack) -> None:
        self.root = root
        self.stack = stack
        try:
            self.root_fd = self.open_dir(str(root.path), follow=True)
        except OSError as exc:
            raise UsageError(f"cannot open the root {root.path}: {exc.strerror or exc}") from None

    def open_dir(self, name: str, dir_fd: int | None = None, follow: bool = False) -> int:
        fd = os.open(name, _DIR_FLAGS & ~os.O_NOFOLLOW if follow else _DIR_FLAGS, dir_fd=dir_fd)
        self.stack.callback(os.close, fd)
        return fd

    def place(self, rel: str, *, directory: bool) -> _Place:
        """Resolve `rel`; a missing tail is allowed (to be created) unless a symlink points into it."""
        fds = [self.root_fd]  # `..` climbs back, never above the root
        names: list[str] = []  # the path of fds[-1] inside the root, for messages
        pending = [(c, "") for c in reversed(rel.split("/")) if c not in ("", ".")]
        links = 0
        while pending:
            comp, via = pending.pop()
            if comp == "..":
                if len(fds) > 1:
                    fds.pop()
                    names.pop()
                continue
            try:
                info = os.stat(comp, dir_fd=fds[-1], follow_symlinks=False)
            except FileNotFoundError:
                if via:
                    raise UsageError(
                        f"refusing to write {rel}: the symlink {via} points to a path missing inside the root"
                    ) from None
                rest = [comp, *(c for c, _ in reversed(pending))]
                if ".." in rest or any(v for _, v in pending):
                    raise UsageError(f"refusing to write {rel}: not a plain path inside the root") from None
                if directory:
                    return _Place(rel, fds[-1], rest, None, None)
                return _Place(rel, fds[-1], rest[:-1], rest[-1], None)
            except OSError as exc:
                raise UsageError(f"cannot write {rel}: {exc.strerror or exc}") from None
            if stat.S_ISLNK(info.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise UsageError(f"refusing to write {rel}: too many levels of symlinks")
                target = os.readlink(comp, dir_fd=fds[-1])
                link = f"{'/'.join([*names, comp])} -> {target!r}"  # quoted: a name from the root
                if target.startswith("/"):
                    del fds[1:], names[:]  # absolute: from the root, as after chroot
                pending.extend((c, link) for c in reversed(target.split("/")) if c not in ("", "."))
                continue
            if not pending and not directory:
                return _Place(rel, fds[-1], [], comp, info)
            if not stat.S_ISDIR(info.st_mode):
                where = "/".join([*names, comp])
                raise UsageError(f"refusing to write {rel}: {where} on its way is {_kind(info.st_mode)}")
            try:
                fds.append(self.open_dir(comp, fds[-1]))
                names.append(comp)
            except OSError as exc:
                raise UsageError(f"cannot write {rel}: {comp}: {exc.strerror or exc}") from None
        return _Place(rel, fds[-1], [], None, None)

    def make_dirs(self, place: _Place, created: list[tuple[int, str]]) -> int:
        """Create the missing directories of `place`; returns the directory the file goes in."""
        fd = place.fd
        for comp in place.missing:
            try:
                os.mkdir(comp, 0o755, dir_fd=fd)
                created.append((fd, comp))
            except FileExistsError:
                pass  # made for an earlier file of this run, or meanwhile: the open below decides
            fd = self.open_dir(comp, fd)
        place.fd, place.missing = fd, []
        return fd


def _host(fd: int) -> str:
    """The host path of an open directory, for messages."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "its directory"


def _writable(fd: int) -> bool:
    # faccessat answers for the mount too (EROFS) — for root as well, whom permissions never stop
    return os.access(".", os.W_OK, dir_fd=fd)


# -- reading and writing one file ------------------------------------------------------------------


def _read(
    fd: int, name: str, rel: str, size: int | None = None
) -> tuple[bytes | None, os.stat_result, dict[str, bytes]]:
    """A regular file's bytes (None when it is not `size` long), status and extended attributes,
    opened without following a symlink and without blocking."""
    try:
        handle = os.open(name, _READ_FLAGS, dir_fd=fd)
    except OSError as exc:
        raise UsageError(f"cannot read {rel}: {exc.strerror or exc}") from None
    with os.fdopen(handle, "rb") as f:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"refusing to write {rel}: it is {_kind(info.st_mode)}, not a regular file")
        if size is not None and info.st_size != size:
            return None, info, {}  # another size is another content: no need to read it
        return f.read(), info, _xattrs(handle)


def _xattrs(fd: int) -> dict[str, bytes]:
    """Extended attributes (ACLs, SELinux label) to carry over to the new file, where there are any."""
    try:
        return {a: os.getxattr(fd, a) for a in os.listxattr(fd)}
    except OSError:
        return {}


def _stage(
    fd: int, name: str, data: bytes, mode: int, owner: tuple[int, int], attrs: dict[str, bytes]
) -> str:
    """Write `data` to a new temporary file beside `name`; returns its name."""
    temp = f".{name}.pciback-doctor-{secrets.token_hex(4)}.tmp"
    handle = os.open(temp, _CREATE_FLAGS, 0o600, dir_fd=fd)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            if (os.fstat(handle).st_uid, os.fstat(handle).st_gid) != owner:
                os.fchown(handle, *owner)  # before chmod: chown clears set-id bits
            for attr, value in attrs.items():
                with contextlib.suppress(OSError):  # best effort: labels the kernel refuses stay default
                    os.setxattr(handle, attr, value)
            os.fchmod(handle, mode)
            os.fsync(handle)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=fd)
        raise
    return temp


def _sync_dir(fd: int) -> None:
    with contextlib.suppress(OSError):  # durability of the rename; not every file system allows it
        handle = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


# -- the plan ---------------------------------------------------------------------------------------


@dataclass
class _Step:
    change: FileChange
    place: _Place
    new: bytes
    old: bytes | None  # None: a new file
    mode: int
    owner: tuple[int, int]
    attrs: dict[str, bytes]
    times: tuple[int, int] | None = None  # the replaced file's atime and mtime, for its backup
    temp: str | None = None
    done: bool = False


def _encode(text: str, rel: str) -> bytes:
    # the collector decoded with surrogateescape (facts/system.py read_editable): this is its inverse
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise UsageError(f"refusing to write {rel}: its new content cannot be encoded") from None


def _check_sets(rel: str, data: bytes, sets: Sequence[tuple[str, str]]) -> None:
    """A shell file must set each variable to the intended words, as the doctor's reader reads it."""
    if not sets:
        return
    found = shell_variables(data.decode("utf-8", "surrogateescape"), rel)
    for name, value in sets:
        got = found.get(name)
        if got is None or got.split() != value.split():
            raise UsageError(
                f"refusing to write {rel}: after the edit {name} would read as {got!r}, not {value!r}; "
                "edit it by hand"
            )


def _plan(paths: _Paths, change: FileChange, files: Mapping[str, str]) -> _Step:
    rel = change.path
    if ".." in rel.split("/") or not rel.strip("/") or rel.endswith("/"):
        raise UsageError(f"refusing to write {rel}: not a plain path inside the root")
    place = paths.place(rel, directory=False)
    assert place.name is not None
    new = _encode(change.content, rel)
    _check_sets(rel, new, change.sets)
    read = files.get(rel)
    expected = None if read is None else _encode(read, rel)
    old: bytes | None = None
    mode = 0o755 if change.executable else 0o644
    owner = (os.geteuid(), os.getegid())
    attrs: dict[str, bytes] = {}
    times = None
    if place.info is not None:
        if not stat.S_ISREG(place.info.st_mode):  # never open a FIFO or device: it may block
            raise UsageError(
                f"refusing to write {rel}: it is {_kind(place.info.st_mode)}, not a regular file"
            )
        if expected is None:  # there now, but not when the doctor read the root
            raise UsageError(f"{rel} changed since it was read; run the doctor again")
        old, info, attrs = _read(place.fd, place.name, rel, len(expected))
        times = (info.st_atime_ns, info.st_mtime_ns)
        mode = stat.S_IMODE(info.st_mode) | (0o111 if change.executable else 0)
        owner = (info.st_uid, info.st_gid)
        if owner != (os.geteuid(), os.getegid()) and os.geteuid() != 0:
            raise UsageError(f"cannot write {rel}: it belongs to uid {owner[0]}, and only root can keep that")
    if old != expected:
        raise UsageError(f"{rel} changed since it was read; run the doctor again")
    if not _writable(place.fd):
        raise UsageError(f"cannot write {rel}: {_host(place.fd)} is not writable (read-only root?)")
    return _Step(change, place, new, old, mode, owner, attrs, times)


# -- backups --------------------------------------------------------------------------------------


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S")


class _Backup:
    """Where the replaced files are kept: a folder made for this run under the root, or the
    user's `--backup-dir`; in either, an existing file is never overwritten."""

    def __init__(self, paths: _Paths, backup_dir: Path | None) -> None:
        self.paths = paths
        self.user = backup_dir
        self.fd: int | None = None
        self.where = ""
        self.created: list[tuple[int, str]] = []  # directories made, to take away on failure
        self.files: list[tuple[int, str]] = []
        if backup_dir is None:
            self.parent = paths.place(BACKUPS, directory=True)
            if not _writable(self.parent.fd):
                raise UsageError(
                    f"cannot keep backups in {BACKUPS}: {_host(self.parent.fd)} is not writable "
                    "(read-only root?); use --backup-dir"
                )

    def check(self, rels: Sequence[str]) -> None:
        """Before anything is written: the user's folder must not hold these backups already and
        must be writable where it will be written."""
        if self.user is None:
            return
        for rel in rels:
            if os.path.lexists(self.user / rel):
                raise UsageError(
                    f"refusing to overwrite the backup {self.user / rel}; choose another --backup-dir"
                )
        existing = self.user
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise UsageError(f"cannot keep backups in {self.user}: {existing} is not a writable directory")

    def _folder(self) -> int:
        if self.fd is not None:
            return self.fd
        if self.user is not None:
            self.user.mkdir(parents=True, exist_ok=True)
            self.fd = self.paths.open_dir(str(self.user), follow=True)  # the user's own host path
            self.where = str(self.user)
            return self.fd
        parent = self.paths.make_dirs(self.parent, self.created)
        stamp = _stamp()
        for n in range(1, 1000):
            name = stamp if n == 1 else f"{stamp}.{n}"
            try:
                os.mkdir(name, 0o700, dir_fd=parent)  # exclusive: an existing name (or symlink) is skipped
            except FileExistsError:
                continue
            self.created.append((parent, name))
            self.fd = self.paths.open_dir(name, parent)
            self.where = f"{BACKUPS}/{name}"
            return self.fd
        raise UsageError(f"cannot make a new backup folder in {BACKUPS}: too many for {stamp}")

    def keep(self, step: _Step) -> None:
        assert step.old is not None
        fd = self._folder()
        *dirs, name = step.change.path.split("/")
        for comp in dirs:
            try:
                os.mkdir(comp, 0o700, dir_fd=fd)
                self.created.append((fd, comp))
            except FileExistsError:
                pass
            fd = self.paths.open_dir(comp, fd)
        handle = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=fd)  # never over an existing file
        self.files.append((fd, name))
        with os.fdopen(handle, "wb") as f:
            f.write(step.old)
            f.flush()
            with contextlib.suppress(OSError):
                os.fchown(handle, *step.owner)
            os.fchmod(handle, step.mode & 0o777)
            if step.times is not None:  # the backup says when the admin last changed the file
                os.utime(handle, ns=step.times)
            os.fsync(handle)

    def discard(self) -> None:
        """Take away what this run made, after a failure before any target was touched."""
        for fd, name in reversed(self.files):
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=fd)
        for fd, name in reversed(self.created):
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=fd)


# -- the one write path -------------------------------------------------------------------------


def _failed(what: str, exc: OSError) -> str:
    detail = exc.strerror or str(exc)
    if exc.errno == errno.EROFS:
        detail += " (read-only root?)"
    return f"{what}: {detail}"


def write(
    root: Root, changes: Sequence[FileChange], files: Mapping[str, str], backup_dir: Path | None
) -> list[str]:
    """Apply the changes; returns the paths written. Every check runs before the first write."""
    todo = pending(changes, files)
    if not todo:
        return []
    with contextlib.ExitStack() as stack:
        paths = _Paths(root, stack)
        steps = [_plan(paths, change, files) for change in todo]
        rels = [s.change.path for s in steps]
        if len(set(rels)) != len(rels):
            raise UsageError("refusing to write: one file is changed twice by this fix")
        replaced = [s for s in steps if s.old is not None]
        backup = _Backup(paths, backup_dir) if replaced else None
        if backup is not None:
            backup.check([s.change.path for s in replaced])
        created: list[tuple[int, str]] = []
        try:
            for step in replaced:
                assert backup is not None
                backup.keep(step)
            for step in steps:
                assert step.place.name is not None
                fd = paths.make_dirs(step.place, created)
                step.temp = _stage(fd, step.place.name, step.new, step.mode, step.owner, step.attrs)
        except OSError as exc:
            _unstage(steps, created, backup)
            raise UsageError(_failed("nothing was changed; preparing the files failed", exc)) from None
        except UsageError:
            _unstage(steps, created, backup)
            raise
        try:
            for step in steps:
                assert step.temp is not None and step.place.name is not None
                _unchanged(step)  # once more just before: an edit made meanwhile is never lost
                os.replace(step.temp, step.place.name, src_dir_fd=step.place.fd, dst_dir_fd=step.place.fd)
                step.temp, step.done = None, True
                _sync_dir(step.place.fd)
            for step in steps:
                _prove(step)
        except (OSError, UsageError) as exc:
            _restore(steps)
            _unstage(steps, created, None)
            reason = _failed("writing failed", exc) if isinstance(exc, OSError) else str(exc)
            kept = f"; the old files are also in {backup.where}" if backup is not None else ""
            raise UsageError(f"{reason}; every file was put back as it was{kept}") from None
        return rels


def _unchanged(step: _Step) -> None:
    assert step.place.name is not None
    try:
        os.stat(step.place.name, dir_fd=step.place.fd, follow_symlinks=False)
    except FileNotFoundError:
        same = step.old is None
    else:
        same = (
            step.old is not None
            and _read(step.place.fd, step.place.name, step.change.path, len(step.old))[0] == step.old
        )
    if not same:
        raise UsageError(f"{step.change.path} changed while the fix was being written")


def _prove(step: _Step) -> None:
    """Read the target back: it must hold exactly the intended bytes, owner and mode."""
    assert step.place.name is not None
    rel = step.change.path
    data, info, _ = _read(step.place.fd, step.place.name, rel, len(step.new))
    if data != step.new:
        raise UsageError(f"{rel} does not hold what was written")
    if (info.st_uid, info.st_gid) != step.owner or stat.S_IMODE(info.st_mode) != step.mode:
        raise UsageError(f"{rel} did not keep its owner and mode")
    _check_sets(rel, step.new, step.change.sets)


def _unstage(steps: Sequence[_Step], created: list[tuple[int, str]], backup: _Backup | None) -> None:
    for step in steps:
        if step.temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(step.temp, dir_fd=step.place.fd)
            step.temp = None
    for fd, name in reversed(created):
        with contextlib.suppress(OSError):
            os.rmdir(name, dir_fd=fd)
    if backup is not None:
        backup.discard()


def _restore(steps: Sequence[_Step]) -> None:
    """Put back every target already replaced: the old bytes (held since step 1), or no file."""
    for step in steps:
        if not step.done:
            continue
        assert step.place.name is not None
        with contextlib.suppress(OSError):
            if step.old is None:
                os.unlink(step.place.name, dir_fd=step.place.fd)
            else:
                temp = _stage(step.place.fd, step.place.name, step.old, step.mode, step.owner, step.attrs)
                os.replace(temp, step.place.name, src_dir_fd=step.place.fd, dst_dir_fd=step.place.fd)
