"""Every input is read through a root (SPEC §2): symlinks, absolute ones too, resolve inside it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pciback_doctor.facts.decode import display

_MAX_LINKS = 40  # the kernel's own limit on nested symlinks (MAXSYMLINKS)


class Root:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()
        # paths that exist but could not be read (permissions, I/O errors): an answer built
        # without them may be wrong, so they are reported, never silently skipped
        self.unreadable: dict[str, str] = {}

    def _failed(self, rel: str, exc: OSError) -> None:
        self.unreadable.setdefault(rel, exc.strerror or str(exc))

    @property
    def is_live(self) -> bool:
        return self.path == Path("/")

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

    def read_bytes(self, rel: str) -> bytes | None:
        host = self.resolve(rel)
        if host is None or not host.is_file():
            return None
        try:
            return host.read_bytes()
        except OSError as exc:
            self._failed(rel, exc)
            return None

    def read_text(self, rel: str) -> str | None:
        data = self.read_bytes(rel)
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
