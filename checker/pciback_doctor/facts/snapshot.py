"""A snapshot as the root (`--root host7.tar.gz`, SPEC §2): the tar the collector writes, read in place.

The archive is streamed once: small members are kept in memory (bounded), big ones (initramfs and
kernel images) are streamed from the archive again when read. Nothing is unpacked to disk. Names
are placed in a namespace like the initramfs reader's (`initramfs.Namespace`), so every lookup —
symlinks, absolute ones too, `..` — stays inside the snapshot exactly as `Root` keeps lookups
inside a directory. Hostile archives (bombs, a million entries, members claiming 20 GiB, cut or
garbage archives) stop at a limit of facts/limits.py with a one-line `SnapshotError`; members a
real tar of a root never has (names with `..`, members through a symlink, hard links to nothing,
sparse files) are left out and reported as unreadable inputs.

The collector's manifest (`pciback-doctor-snapshot.json`) says what the host did not let it read
(then the doctor reports the same unreadable input as on the live host) and what it left out
(then reading it says so, or names the doctor's own limit when the size is over it).
"""

from __future__ import annotations

import io
import json
import stat
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pciback_doctor.facts.compression import CHUNK, DECODERS, ByteSource, Corrupt, RawStream, compression_of
from pciback_doctor.facts.decode import display
from pciback_doctor.facts.initramfs import Entry, Namespace
from pciback_doctor.facts.limits import (
    IMAGE_RATIO,
    IMAGE_RATIO_FLOOR,
    SNAPSHOT_ENTRIES,
    SNAPSHOT_KEPT,
    SNAPSHOT_MEMBER,
    SNAPSHOT_SIZE,
    TEXT_FILE,
    Limit,
)
from pciback_doctor.facts.root import NotReadable, Root, kind, open_regular

MANIFEST = "pciback-doctor-snapshot.json"
FORMATS = ("gzip", "zstd", "xz", "bzip2")  # what the collector's --compress writes
_BLOCK = 512
_HELD = TEXT_FILE.value  # members up to this size are kept in memory; bigger ones are streamed
_NOT_PLACED = (
    "left out: a tar extraction would not put it inside the root ('..', through a symlink or a file)"
)
_HIGH = bytes(range(128, 256))  # old tars summed the header as signed chars
_EXTENDED = 1 << 16  # a pax header or GNU long name: names and link targets are at most 4 KiB


class SnapshotError(Exception):
    """The archive cannot be used as a root (one line: which limit, or what is wrong where)."""


def snapshot_kind(path: str | Path) -> str | None:
    """ "tar" or the compression of a tar, by magic; None for anything else. NotReadable for what
    is not a regular file (a FIFO named as the root would block the reader forever)."""
    with open_regular(path) as stream:
        head = stream.read(_BLOCK)
    name = compression_of(head)
    if name in FORMATS:
        return name
    return "tar" if head[257:262] == b"ustar" else None


class _Tar(ByteSource):
    """The tar stream of the snapshot file: decompressed (streams of one codec one after another,
    as `cat a.gz b.gz`), every byte counted against SNAPSHOT_SIZE and the ratio of a bomb."""

    def __init__(self, stream: BinaryIO, codec: str) -> None:
        super().__init__()
        self._raw = RawStream(stream)
        self._codec = codec
        self._chunks: Generator[bytes, None, None] | None = None
        self._out = 0

    def _fill(self) -> bytes:
        if self._codec == "tar":
            data = self._raw.read1(CHUNK)
        else:
            data = b""
            while not data:
                if self._chunks is None:
                    if compression_of(self._raw.peek(6)) != self._codec:
                        return b""
                    self._chunks = DECODERS[self._codec](self._raw)
                try:
                    data = next(self._chunks)
                except StopIteration:
                    self._chunks = None
        self._out += len(data)
        if self._out > SNAPSHOT_SIZE.value:
            raise Corrupt(f"stopped at the {SNAPSHOT_SIZE.describe()} limit")
        taken = max(1, self._raw.pos)
        if self._out > IMAGE_RATIO_FLOOR.value and self._out > IMAGE_RATIO.value * taken:
            raise Corrupt(
                f"stopped at the {IMAGE_RATIO.describe()} limit ({self._out} bytes out of {taken}:"
                " a decompression bomb?)"
            )
        return data

    def close(self) -> None:
        if self._chunks is not None:
            self._chunks.close()


@dataclass(frozen=True)
class _Member:
    name: str
    mode: int
    size: int
    link: str | None  # symlink target, or the hard link's member name
    hard: bool
    offset: int  # of the data in the tar stream


def _number(field: bytes, what: str) -> int:
    if field[:1] == b"\x80":  # GNU base-256 for big numbers
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if text and not text.strip(b"01234567"):
        return int(text, 8)
    if not text:
        return 0
    raise Corrupt(f"{what} field is not a number ({text[:20]!r})")


_TYPES = {
    b"0": stat.S_IFREG,
    b"\0": stat.S_IFREG,
    b"7": stat.S_IFREG,
    b"1": stat.S_IFREG,  # hard link: the data of an earlier member
    b"2": stat.S_IFLNK,
    b"3": stat.S_IFCHR,
    b"4": stat.S_IFBLK,
    b"5": stat.S_IFDIR,
    b"6": stat.S_IFIFO,
}


def _members(src: ByteSource) -> Iterator[tuple[_Member, bytes | None]]:
    """The members of the tar stream, each with its data when it is small enough to hold (the
    caller gets None and the stream skips the data of bigger ones). Corrupt on a broken archive."""
    long_name: str | None = None
    long_link: str | None = None
    pax: dict[str, str] = {}
    count = 0
    while True:
        at = src.pos
        header = src.read(_BLOCK)
        if not header.strip(b"\0"):
            if len(header) < _BLOCK and at == 0:
                raise Corrupt("empty file, not a tar archive")
            return  # end of archive (a zero block), or the end of the stream after the last member
        if len(header) < _BLOCK:
            raise Corrupt(f"byte {at}: archive cut short in a header")
        blanked = header[:148] + b" " * 8 + header[156:]
        try:
            stored = _number(header[148:156], "checksum")
        except Corrupt:
            stored = -1
        unsigned = sum(blanked)
        if stored != unsigned and stored != unsigned - 256 * (512 - len(blanked.translate(None, _HIGH))):
            raise Corrupt(f"byte {at}: {'not a tar archive' if at == 0 else 'corrupt tar header'}")
        count += 1
        if count > SNAPSHOT_ENTRIES.value:
            raise Corrupt(f"byte {at}: stopped at the {SNAPSHOT_ENTRIES.describe()} limit")
        size = _number(header[124:136], f"byte {at}: size")
        typeflag = header[156:157]
        name_raw = header[:100].split(b"\0", 1)[0]
        if header[257:263] == b"ustar\0" and header[345:346] != b"\0":
            name_raw = header[345:500].split(b"\0", 1)[0] + b"/" + name_raw
        name = name_raw.decode("utf-8", "surrogateescape")
        link = header[157:257].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if typeflag in (b"L", b"K", b"x", b"g"):
            if size > _EXTENDED:
                raise Corrupt(f"byte {at}: extended header of {size} bytes (names are at most 4 KiB)")
            data = _data(src, size, at, keep=True)
            assert data is not None
            if typeflag == b"L":
                long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif typeflag == b"K":
                long_link = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif typeflag == b"x":
                pax = _pax(data, at)
            continue
        if "size" in pax:
            size = int(pax["size"]) if pax["size"].isdigit() else size
        name = pax.get("path", long_name if long_name is not None else name)
        link = pax.get("linkpath", long_link if long_link is not None else link)
        long_name = long_link = None
        pax = {}
        mode = _TYPES.get(typeflag)
        if typeflag in (b"1", b"2", b"3", b"4", b"5", b"6"):
            size = 0  # no data follows a link, a device or a directory (as Python's tarfile reads it)
        if size > SNAPSHOT_MEMBER.value:
            raise Corrupt(
                f"byte {at}: member {name!r} claims {size} bytes, over the {SNAPSHOT_MEMBER.describe()} limit"
            )
        member = _Member(
            name,
            stat.S_IFREG if mode is None else mode,
            size,
            link if typeflag in (b"1", b"2") else None,
            typeflag == b"1",
            src.pos,
        )
        if mode is None:  # sparse files, GNU volume headers...: nothing a root snapshot has
            _data(src, size, at, keep=False)
            yield _Member(name, 0, size, None, False, -1), None
            continue
        keep = stat.S_ISREG(member.mode) and size <= _HELD
        yield member, _data(src, size, at, keep=keep)


def _data(src: ByteSource, size: int, at: int, *, keep: bool) -> bytes | None:
    padded = size + (-size % _BLOCK)
    if keep:
        data = src.read(size)
        got = len(data) + src.skip(padded - size)
    else:
        data, got = None, src.skip(padded)
    if got < padded:
        raise Corrupt(f"byte {at}: archive cut short in the data of a member")
    return data


def _pax(data: bytes, at: int) -> dict[str, str]:
    """POSIX.1-2001 extended header records: `LENGTH KEY=VALUE\\n`."""
    found: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0 or not data[pos:space].isdigit():
            raise Corrupt(f"byte {at}: corrupt pax header")
        end = pos + int(data[pos:space])
        if end <= space or end > len(data):
            raise Corrupt(f"byte {at}: corrupt pax header")
        key, _, value = data[space + 1 : end - 1].partition(b"=")
        found[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return found


class _MemberStream(io.RawIOBase):
    """A big member read from the archive: each (re)start decompresses the archive up to it."""

    def __init__(self, archive: Path, codec: str, offset: int, size: int) -> None:
        self._archive, self._codec, self._offset, self._size = archive, codec, offset, size
        self._file: BinaryIO | None = None
        self._src: _Tar | None = None
        self._pos = 0

    def _start(self) -> _Tar:
        self._stop()
        self._file = open_regular(self._archive)
        self._src = _Tar(self._file, self._codec)
        try:
            skipped = self._src.skip(self._offset)
        except Corrupt as exc:
            skipped, why = -1, str(exc)
        if skipped < self._offset:  # the archive was read whole before: it has changed since
            raise OSError(
                f"{self._archive}: the archive changed while it was read ({why if skipped < 0 else 'shorter'})"
            )
        self._pos = 0
        return self._src

    def _stop(self) -> None:
        if self._src is not None:
            self._src.close()
        if self._file is not None:
            self._file.close()
        self._file = self._src = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        target = {io.SEEK_SET: pos, io.SEEK_CUR: self._pos + pos, io.SEEK_END: self._size + pos}[whence]
        src = self._src if self._src is not None and target >= self._pos else self._start()
        self._pos += src.skip(max(0, min(target, self._size) - self._pos))
        return self._pos

    def readinto(self, buffer: Any) -> int:
        src = self._src if self._src is not None else self._start()
        want = min(len(buffer), self._size - self._pos)
        try:
            data = src.read(want) if want > 0 else b""
        except Corrupt as exc:
            raise OSError(f"{self._archive}: {exc}") from None
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        self._stop()
        super().close()


def _parts(name: str) -> list[str] | None:
    """The components of a member name inside the root (`/x` and `./x` are `x`, as GNU tar
    extracts them); None for a name with `..` (tar refuses those too)."""
    parts = [c for c in name.split("/") if c not in ("", ".")]
    return None if ".." in parts else parts


class SnapshotRoot(Root):
    """A snapshot archive as the root: the API of `Root`, answered from the archive's namespace."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        try:
            codec = snapshot_kind(self.path)
        except NotReadable as exc:
            raise SnapshotError(f"not a directory, and not a snapshot: {exc}") from None
        except OSError as exc:
            raise SnapshotError(exc.strerror or str(exc)) from None
        if codec is None:
            raise SnapshotError("not a directory, and not a tar archive (plain, gzip, zstd, xz or bzip2)")
        self.codec = codec
        self.manifest: dict[str, Any] = {}
        self._ns = Namespace()
        self._entries: list[Entry] = []
        self._members: dict[int, _Member] = {}  # entry index -> where its data is in the archive
        self._held: dict[int, bytes] = {}  # entry index -> data
        self._left_out: dict[int, str] = {}  # entry index -> why there is no data
        self._dir_problems: dict[str, str] = {}  # canonical path -> why it cannot be listed
        try:
            with open_regular(self.path) as stream:
                src = _Tar(stream, codec)
                try:
                    self._read(src)
                finally:
                    src.close()
        except Corrupt as exc:
            raise SnapshotError(str(exc)) from None
        except (OSError, NotReadable) as exc:
            raise SnapshotError(getattr(exc, "strerror", None) or str(exc)) from None
        self._apply_manifest()

    # --- building the namespace --------------------------------------------------------------------

    def _place(self, name: str, entry: Entry) -> int | None:
        """Put `entry` at `name` (a directory over a directory changes nothing); None when a tar
        extraction would not put it there either (a name with `..`, through a symlink or a file)."""
        parts = _parts(name)
        if not parts:
            return None
        ns = self._ns
        node = 0
        for part in parts[:-1]:
            node = ns.add(node, part)
            index = ns.entry[node]
            if index is not None and not self._entries[index].is_dir:
                return None
        node = ns.add(node, parts[-1])
        old = ns.entry[node]
        if ns.kids[node] and not entry.is_dir:
            return None  # a file over a directory with something in it
        if old is not None and entry.is_dir and self._entries[old].is_dir:
            return node
        ns.entry[node] = len(self._entries)
        self._entries.append(entry)
        return node

    def _read(self, src: _Tar) -> None:
        kept = 0
        for member, data in _members(src):
            if member.name.endswith(MANIFEST) and _parts(member.name) == [MANIFEST] and data is not None:
                self.manifest = self._parse_manifest(data)
                continue
            if member.mode == 0:
                self._refuse(member.name, "a member of a kind the collector never writes (sparse?)")
                continue
            if member.hard:
                self._hard_link(member)
                continue
            if stat.S_ISDIR(member.mode) and not member.name.strip("./"):
                continue  # `./`, the root itself (`tar -C ROOT .`)
            entry = Entry(member.name, member.mode, member.size, 1, member.link, 0, self.codec)
            added = len(self._entries)
            if self._place(member.name, entry) is None:
                self._refuse(member.name, _NOT_PLACED)
                continue
            if len(self._entries) == added or not stat.S_ISREG(member.mode):
                continue
            self._members[added] = member
            if data is not None:
                kept += len(data)
                if kept > SNAPSHOT_KEPT.value:
                    raise Corrupt(f"stopped at the {SNAPSHOT_KEPT.describe()} limit")
                self._held[len(self._entries) - 1] = data

    def _refuse(self, name: str, why: str) -> None:
        self.unreadable.setdefault(display(name.encode("utf-8", "surrogateescape")), why)

    def _hard_link(self, member: _Member) -> None:
        """A hard link shares the data of the member it names, which must come before it."""
        node = self._ns.by_path.get("/".join(_parts(member.link or "") or ["?"]))
        index = None if node is None else self._ns.entry[node]
        if index is None or not stat.S_ISREG(self._entries[index].mode):
            self._refuse(member.name, "a hard link to nothing in the snapshot (left out)")
            return
        target = self._entries[index]
        entry = Entry(member.name, target.mode, target.size, 2, None, 0, self.codec)
        added = len(self._entries)
        if self._place(member.name, entry) is None:
            self._refuse(member.name, _NOT_PLACED)
            return
        if index in self._members:
            self._members[added] = self._members[index]
        if index in self._held:
            self._held[added] = self._held[index]
        if index in self._left_out:
            self._left_out[added] = self._left_out[index]

    @staticmethod
    def _parse_manifest(data: bytes) -> dict[str, Any]:
        try:
            found = json.loads(data.decode("utf-8", "surrogateescape"))
        except ValueError as exc:
            raise Corrupt(f"{MANIFEST} is not JSON ({exc})") from None
        if not isinstance(found, dict) or not isinstance(found.get("files", {}), dict):
            raise Corrupt(f"{MANIFEST} is not a collector's manifest")
        return found

    def _apply_manifest(self) -> None:
        """What the collector could not read or left out is there, but cannot be read."""
        files = self.manifest.get("files", {})
        for name, info in files.items():
            if not isinstance(info, dict) or not isinstance(name, str):
                continue
            status, why = info.get("status"), str(info.get("why") or "")
            size = info["size"] if isinstance(info.get("size"), int) else -1
            if status == "unreadable":
                node = self._ns.by_path.get("/".join(_parts(name) or ["?"]))
                index = None if node is None else self._ns.entry[node]
                if index is not None and self._entries[index].is_dir:
                    self._dir_problems["/".join(_parts(name) or [])] = why
                    continue
                mode = next((m for m in _PSEUDO if why.startswith(kind(m))), stat.S_IFREG)
                self._pseudo(name, mode, 0, why)
            elif status == "skipped":
                self._pseudo(name, stat.S_IFREG, size, f"not in the snapshot: {why}" if why else "")

    def _pseudo(self, name: str, mode: int, size: int, why: str) -> None:
        node = self._ns.by_path.get("/".join(_parts(name) or ["?"]))
        if node is not None and self._ns.entry[node] is not None:
            return  # the archive has it after all
        added = len(self._entries)
        if self._place(name, Entry(name, mode, max(size, 0), 1, None, 0, self.codec)) is not None:
            self._left_out[added] = why or "not in the snapshot"

    # --- the Root API ------------------------------------------------------------------------------

    @property
    def is_live(self) -> bool:
        """Taken from a running system (`--root /`): its proc and sys describe the current boot."""
        return self.manifest.get("root") == "/"

    @property
    def running_release(self) -> str | None:
        running = self.manifest.get("running")
        return running if self.is_live and isinstance(running, str) else None

    def _node(self, rel: str) -> int | None:
        return self._ns.walk(rel, self._entries, follow=True)

    def _entry(self, node: int) -> tuple[int | None, Entry | None]:
        index = self._ns.entry[node]
        return index, (None if index is None else self._entries[index])

    def _is_dir(self, node: int) -> bool:
        entry = self._entry(node)[1]
        return entry is None or entry.is_dir  # None: a directory the archive left out

    def resolve(self, rel: str) -> Path | None:
        located = self.locate(rel)
        return None if located is None else self.path / located  # for display only: not on disk

    def locate(self, rel: str) -> str | None:
        node = self._node(rel)
        if node is None:
            return None
        return "" if node == 0 else self._ns.path[node]

    def is_dir(self, rel: str) -> bool:
        node = self._node(rel)
        return node is not None and self._is_dir(node)

    def exists(self, rel: str) -> bool:
        return self._node(rel) is not None

    def listdir(self, rel: str) -> list[str]:
        node = self._node(rel)
        if node is None or not self.is_dir(rel):
            return []
        why = self._dir_problems.get(self._ns.path[node] if node else "")
        if why is not None:
            self.unreadable.setdefault(rel, why)
            return []
        return sorted(self._ns.kids[node])

    def readlink(self, rel: str) -> str | None:
        head, _, name = rel.rstrip("/").rpartition("/")
        parent = self._node(head) if head else 0
        if parent is None:
            return None
        node = self._ns.child.get((parent, name))
        entry = None if node is None else self._entry(node)[1]
        return entry.link_target if entry is not None and stat.S_ISLNK(entry.mode) else None

    def _regular(self, rel: str) -> tuple[int, Entry]:
        node = self._node(rel)
        if node is None:
            raise FileNotFoundError(2, "No such file or directory", rel)
        index, entry = self._entry(node)
        if index is None or entry is None or entry.is_dir:
            raise IsADirectoryError(21, "Is a directory", rel)
        if not stat.S_ISREG(entry.mode):
            raise NotReadable(f"{kind(entry.mode)}, not a regular file")
        return index, entry

    def open_file(self, rel: str) -> tuple[BinaryIO, int]:
        index, entry = self._regular(rel)
        if index in self._left_out:
            raise self._missing(index, entry, None)
        if index in self._held:
            return io.BytesIO(self._held[index]), entry.size
        member = self._members[index]
        return io.BufferedReader(_MemberStream(self.path, self.codec, member.offset, member.size)), entry.size

    def _missing(self, index: int, entry: Entry, limit: Limit | None) -> OSError | NotReadable:
        """Why a file the collector did not take cannot be read: the doctor's own limit when the
        size the collector saw is over it (as on the host), else the collector's reason."""
        if limit is not None and entry.size > limit.value:
            return NotReadable(f"larger than the {limit.describe()} limit")
        why = self._left_out[index]
        return PermissionError(13, why) if why == "Permission denied" else NotReadable(why)

    def read_file(self, rel: str, limit: Limit) -> bytes:
        index, entry = self._regular(rel)
        if index in self._left_out:
            raise self._missing(index, entry, limit)
        if entry.size > limit.value:
            raise NotReadable(f"larger than the {limit.describe()} limit")
        stream, _ = self.open_file(rel)
        with stream:
            return stream.read(limit.value + 1)

    def probe(self, rel: str) -> tuple[int, bytes] | None:
        try:
            index, _ = self._regular(rel)
            if index in self._left_out:
                return None
            stream, size = self.open_file(rel)
            with stream:
                return size, stream.read(4)
        except (OSError, NotReadable):
            return None


_PSEUDO = (stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK)


def open_root(path: str) -> Root:
    """`--root`: a directory, or a snapshot archive (by its magic, not its name)."""
    from pciback_doctor.errors import UsageError

    where = Path(path)
    if where.is_dir():
        return Root(where)
    if not where.exists():
        raise UsageError(f"--root {path}: no such file or directory")
    try:
        return SnapshotRoot(where)
    except SnapshotError as exc:
        raise UsageError(f"--root {path}: {exc}") from None
