"""Every input is read through a root (SPEC §2): symlinks, absolute ones too, resolve inside it."""

from __future__ import annotations

import os
import platform
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pciback_doctor.facts.decode import display
from pciback_doctor.facts.limits import CONFIG_FILE, LINE, TEXT_FILE, Limit

_MAX_LINKS = 40  # the kernel's own limit on nested symlinks (MAXSYMLINKS)

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotReadable(Exception):
    """An input the doctor will not read: not a regular file, or over a limit (one-line reason)."""


def kind(mode: int) -> str:
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def open_regular(host: str | os.PathLike[str]) -> BinaryIO:
    """`host` opened for reading if it is a regular file; NotReadable if not.

    Only regular files are inputs: reading a FIFO blocks forever and /dev/zero never ends. The
    type is checked before opening (opening a device can have effects: a watchdog starts) and
    again on the open descriptor; O_NONBLOCK keeps a FIFO swapped in between from blocking.
    """
    mode = os.stat(host).st_mode
    if not stat.S_ISREG(mode):
        raise NotReadable(f"{kind(mode)}, not a regular file")
    fd = os.open(host, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotReadable(f"{kind(mode)}, not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(host: str | os.PathLike[str], limit: Limit = TEXT_FILE) -> bytes:
    """The bytes of a regular file of at most `limit`; NotReadable otherwise (OSError propagates).
    Reads at most one byte more than the limit, whatever the file claims its size is."""
    with open_regular(host) as stream:
        data = stream.read(limit.value + 1)
    if len(data) > limit.value:
        raise NotReadable(f"larger than the {limit.describe()} limit")
    return data


def check_lines(data: bytes) -> None:
    """NotReadable if a line is longer than LINE: no real configuration has one, and the line
    parsers are not built for them."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        if end - start > LINE.value:
            raise NotReadable(f"a line longer than the {LINE.describe()} limit")
        start = end + 1


class Root:
    """A directory tree as the root (a snapshot is a `facts.snapshot.SnapshotRoot`, with the same API).

    Readers use the root-relative API only (`read_bytes`, `listdir`, `locate`, `open_file`, ...),
    never host paths, so that the same code reads a directory and a snapshot archive."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()
        # paths that exist but could not be read (permissions, I/O errors): an answer built
        # without them may be wrong, so they are reported, never silently skipped
        self.unreadable: dict[str, str] = {}

    def _failed(self, rel: str, exc: OSError | NotReadable) -> None:
        why = exc.strerror if isinstance(exc, OSError) else None
        self.unreadable.setdefault(rel, why or str(exc))

    @property
    def is_live(self) -> bool:
        return self.path == Path("/")

    @property
    def running_release(self) -> str | None:
        """`uname -r` of the running kernel when the root is the running system."""
        return platform.release() if self.is_live else None

    def locate(self, rel: str) -> str | None:
        """Where `rel` leads inside the root (every symlink resolved), root-relative, or None."""
        host = self.resolve(rel)
        return None if host is None else "/".join(host.relative_to(self.path).parts)

    def open_file(self, rel: str) -> tuple[BinaryIO, int]:
        """The regular file `rel` leads to, opened, and its size (FileNotFoundError if nothing is
        there; NotReadable, OSError as `open_regular`)."""
        host = self.resolve(rel)
        if host is None:
            raise FileNotFoundError(2, "No such file or directory", rel)
        stream = open_regular(host)
        return stream, os.fstat(stream.fileno()).st_size

    def read_file(self, rel: str, limit: Limit) -> bytes:
        """The bytes of the regular file `rel` leads to, quietly (errors raised, not recorded)."""
        host = self.resolve(rel)
        if host is None:
            raise FileNotFoundError(2, "No such file or directory", rel)
        if host.is_dir():
            raise IsADirectoryError(21, "Is a directory", rel)
        return read_regular(host, limit)

    def probe(self, rel: str) -> tuple[int, bytes] | None:
        """(size, first four bytes) of the regular file `rel` leads to; None if there is none or it
        cannot be read. Quiet: nothing is recorded."""
        host = self.resolve(rel)
        try:
            if host is None or not host.is_file():
                return None
            with open_regular(host) as stream:
                return os.fstat(stream.fileno()).st_size, stream.read(4)
        except (OSError, NotReadable):
            return None

    def files_under(self, rel: str) -> Iterator[str]:
        """Every non-directory below the directory `rel` leads to, relative to it, in sorted
        order. As os.walk: a link to a directory is not followed, but whether a link leads to a
        directory is decided inside the root, like every lookup (os.walk would ask the host)."""
        start = self.locate(rel)
        if start is None or not self.is_dir(start):
            return
        todo = [("", start)]
        while todo:
            prefix, here = todo.pop()
            subdirs = []
            for name in self.listdir(here):
                path = f"{here}/{name}" if here else name
                if not self.is_dir(path):
                    yield f"{prefix}{name}"
                elif self.readlink(path) is None:
                    subdirs.append((f"{prefix}{name}/", path))
            todo.extend(reversed(subdirs))

    def resolve(self, rel: str) -> Path | None:
        """The host path for `rel` with every symlink resolved inside the root, or None."""
        pending = [c for c in rel.split("/") if c not in ("", ".")]
        pending.reverse()
        parts: list[str] = []
        links = 0
        while pending:
            comp = pending.pop()
            if comp == "..":
                if parts:
                    parts.pop()
                continue
            host = self.path.joinpath(*parts, comp)
            try:
                info = os.lstat(host)
            except (FileNotFoundError, NotADirectoryError):
                return None
            except OSError as exc:  # e.g. a directory on the way we may not search
                self._failed(rel, exc)
                return None
            if stat.S_ISLNK(info.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    return None
                try:
                    target = os.readlink(host)
                except OSError:
                    return None
                if target.startswith("/"):
                    parts = []
                pending.extend(reversed([c for c in target.split("/") if c not in ("", ".")]))
                continue
            parts.append(comp)
        return self.path.joinpath(*parts)

    def display(self, host: Path) -> str:
        """A host path under the root written relative to it, for evidence."""
        try:
            return str(host.relative_to(self.path))
        except ValueError:
            return str(host)

    def read_bytes(self, rel: str, limit: Limit = TEXT_FILE, *, text: bool = False) -> bytes | None:
        """The file at `rel`, or None: missing, a directory, or not readable (then it is recorded in
        `unreadable`: a FIFO, a device, over `limit`, with `text` a line over LINE, an I/O error).
        Through `read_file`, so every kind of root (a directory, a snapshot) records alike."""
        try:
            data = self.read_file(rel, limit)
            if text:
                check_lines(data)
            return data
        except (FileNotFoundError, IsADirectoryError):
            return None
        except (OSError, NotReadable) as exc:
            self._failed(rel, exc)
            return None

    def read_text(self, rel: str, limit: Limit = CONFIG_FILE) -> str | None:
        data = self.read_bytes(rel, limit, text=True)
        return None if data is None else display(data)

    def is_dir(self, rel: str) -> bool:
        host = self.resolve(rel)
        return host is not None and host.is_dir()

    def exists(self, rel: str) -> bool:
        return self.resolve(rel) is not None

    def listdir(self, rel: str) -> list[str]:
        host = self.resolve(rel)
        if host is None or not host.is_dir():
            return []
        try:
            return sorted(os.listdir(host))
        except OSError as exc:
            self._failed(rel, exc)
            return []

    def readlink(self, rel: str) -> str | None:
        """The raw target of a symlink at `rel` (its parent resolved inside the root)."""
        head, _, name = rel.rstrip("/").rpartition("/")
        parent = self.resolve(head) if head else self.path
        if parent is None:
            return None
        try:
            return os.readlink(parent / name)
        except OSError:
            return None
