"""initramfs images: cpio "newc" archives, plain or compressed, one after another, maybe in a UKI.

Read the way the kernel unpacks them (init/initramfs.c `unpack_to_rootfs`): NULs between archives
are skipped, a cpio archive starts only at a 4-byte aligned offset, anything else must be a
compressed stream whose magic the kernel knows (lib/decompress.c), and a compressed stream must end
on an archive boundary. The image is streamed: the data of files nobody asked for is decompressed
and dropped in bounded chunks, so memory stays flat however large the image is. Bad bytes never raise:
the result carries a one-line `error` and everything read before it.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from os import PathLike
from types import MappingProxyType
from typing import BinaryIO

from pciback_doctor.facts.compression import (
    CHUNK,
    DECODERS,
    ByteSource,
    Corrupt,
    RawStream,
    compression_of,
)
from pciback_doctor.facts.limits import (
    IMAGE_ENTRIES,
    IMAGE_KEPT,
    IMAGE_NAME_WALK,
    IMAGE_OUTPUT,
    IMAGE_RATIO,
    IMAGE_RATIO_FLOOR,
    IMAGE_WANTED_FILE,
)
from pciback_doctor.facts.root import open_regular

_PATH_MAX = 4096  # the kernel refuses longer cpio names and symlink bodies
_MAXSYMLINKS = 40  # fs/namei.c: one path walk follows at most 40 links (ELOOP)
_HEX = re.compile(rb"[0-9A-Fa-f]{104}")


@dataclass(frozen=True, slots=True)  # slots: up to IMAGE_ENTRIES of them are kept
class Entry:
    name: str  # where the kernel put it (see `_Reader._place`); the root directory is "."
    mode: int
    size: int  # for hard links: the size of the data the whole link group shares
    nlink: int
    link_target: str | None  # symlinks only
    archive: int  # index into Initramfs.archives
    compression: str

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


@dataclass(frozen=True)
class Archive:
    offset: int  # image offset of the cpio header, or of the compressed stream holding it
    compression: str  # "none", "gzip", "zstd", "xz", "lzma", "bzip2", "lz4", "lzo"


_MODULE_DIRS = ("lib/modules", "usr/lib/modules")
_MODULE = re.compile(r"(?:usr/)?lib/modules/[^/]+/.+/([^/]+)\.ko(?:\.xz|\.gz|\.zst)?")


class Namespace:
    """The tree the kernel unpacks the image into: a node per name, one dict lookup a component.

    Built while the archive is read (`_Reader._place`), then only looked up. A node holds the
    entry now there, or None for the root and for directories an archive left out (walked
    through as if present: hand-made archives often omit parents, every generator writes them).
    """

    def __init__(self) -> None:
        self.child: dict[tuple[int, str], int] = {}
        self.kids: list[list[str]] = [[]]  # names in each node, in the order they came
        self.path: list[str] = ["."]
        self.by_path: dict[str, int] = {".": 0}  # no symlink on the way: a lookup is one hash
        self.entry: list[int | None] = [None]
        self.steps = 0  # components walked one by one (the slow way), for the reader's budget

    def add(self, parent: int, name: str) -> int:
        node = self.child.get((parent, name))
        if node is None:
            node = self.child[parent, name] = len(self.path)
            self.kids.append([])
            self.kids[parent].append(name)
            path = name if parent == 0 else f"{self.path[parent]}/{name}"
            self.path.append(path)
            self.by_path[path] = node
            self.entry.append(None)
        return node

    def walk(self, name: str, entries: Sequence[Entry], *, follow: bool, create: bool = False) -> int | None:
        """The node `name` leads to from the root, as the kernel's path walk (fs/namei.c) finds it.

        Empty and `.` components are dropped, `..` goes up from where the walk really is (after a
        symlink: the target's parent), symlinks are followed in every component but the last (the
        last too with `follow`), absolute targets restart at the root, at most 40 links. None for a
        loop, a non-directory with more to walk (ELOOP, ENOTDIR) or, unless `create`, a missing name.
        """
        # a node's path never has a symlink, `.` or `..` in it (nothing is added below a link, and
        # a directory with something in it is never replaced), so a name equal to one is that node
        node = self.by_path.get(_normalise(name))
        if node is not None:
            index = self.entry[node]
            if index is None or not (follow and stat.S_ISLNK(entries[index].mode)):
                return node
        todo = name.split("/")[::-1]
        self.steps += len(todo)
        here = [0]
        links = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if len(here) > 1:
                    here.pop()
                continue
            node = self.add(here[-1], part) if create else self.child.get((here[-1], part))
            if node is None:
                return None
            index = self.entry[node]
            if index is not None:
                entry = entries[index]
                if stat.S_ISLNK(entry.mode) and (todo or follow):
                    links += 1
                    if links > _MAXSYMLINKS or entry.link_target is None:
                        return None
                    if entry.link_target.startswith("/"):
                        here = [0]
                    target = entry.link_target.split("/")
                    self.steps += len(target)
                    todo.extend(target[::-1])
                    continue
                if todo and not entry.is_dir:
                    return None
            here.append(node)
        return here[-1]


@dataclass(frozen=True)
class Initramfs:
    """The image as the kernel leaves it unpacked in the rootfs.

    Every name is placed where the kernel puts it (symlinks in its directories followed,
    `.`/`..`/`//` resolved), later entries replacing earlier ones the way init/initramfs.c
    `clean_path` does. Lookups (`resolve`, `read`, `listdir`) walk that tree as a process in the
    initramfs would, following symlinks.
    """

    entries: tuple[Entry, ...]
    files: Mapping[str, bytes]  # data of the wanted regular files (and their hard links), by path
    archives: tuple[Archive, ...]
    error: str | None = None
    namespace: Namespace = field(default_factory=Namespace)

    @cached_property
    def paths(self) -> Mapping[str, int]:
        """Every path that exists after unpacking -> the index of the entry there."""
        ns = self.namespace
        return MappingProxyType({ns.path[n]: i for n, i in enumerate(ns.entry) if i is not None})

    def live(self) -> list[Entry]:
        """The entries still there after unpacking, in archive order."""
        return [e for i, e in enumerate(self.entries) if self.paths.get(e.name) == i]

    @cached_property
    def _walked(self) -> dict[tuple[str, bool], int | None]:
        return {}  # the tree no longer changes: each path is walked once however often it is asked

    def _node(self, path: str, follow: bool = True) -> int | None:
        key = (path, follow)
        if key not in self._walked:
            self._walked[key] = self.namespace.walk(path, self.entries, follow=follow)
        return self._walked[key]

    def resolve(self, path: str, *, follow: bool = True) -> str | None:
        """Where `path` leads (None: nothing there, a symlink loop, a file used as a directory)."""
        node = self._node(path, follow)
        return None if node is None else self.namespace.path[node]

    def entry(self, path: str) -> Entry | None:
        node = self._node(path)
        index = None if node is None else self.namespace.entry[node]
        return None if index is None else self.entries[index]

    def read(self, path: str) -> bytes | None:
        """The data of the regular file `path` leads to, if it was kept (`wanted`/`needed`)."""
        where = self.resolve(path)
        return None if where is None else self.files.get(where)

    def listdir(self, path: str) -> tuple[str, ...]:
        """The names in the directory `path` leads to, sorted (a shell glob's order)."""
        node = self._node(path)
        return () if node is None else tuple(sorted(self.namespace.kids[node]))

    def tree(self, top: str) -> Iterator[tuple[str, Entry]]:
        """Everything below `top` as a process in the initramfs sees it: symlinks followed (to
        directories too), each directory visited once, dangling links left out."""
        ns = self.namespace
        start = ns.walk(top, self.entries, follow=True)
        todo = [] if start is None else [(top, start)]
        seen = set()
        while todo:
            shown, node = todo.pop()
            if node in seen:
                continue
            seen.add(node)
            for name in sorted(ns.kids[node]):
                path = f"{shown}/{name}"
                index = ns.entry[ns.child[node, name]]
                if index is not None and stat.S_ISLNK(self.entries[index].mode):
                    target = ns.walk(path, self.entries, follow=True)
                    index = None if target is None else ns.entry[target]
                    if target is None or (index is None and not ns.kids[target]):
                        continue  # dangling
                else:
                    target = ns.child[node, name]
                if index is None or self.entries[index].is_dir:
                    todo.append((path, target))
                else:
                    yield path, self.entries[index]

    def kernel_releases(self) -> tuple[str, ...]:
        """The release directories where kmod looks (`uname -r`): /lib/modules, or /usr/lib/modules
        for a kmod built with that module directory (kmod 33+)."""
        return tuple(
            sorted(
                {n for top in _MODULE_DIRS for n in self.listdir(top) if _is_dir(self.entry(f"{top}/{n}"))}
            )
        )

    def modules(self) -> frozenset[str]:
        """Module names (`-` → `_`, as kmod compares them) of the `.ko*` files kmod can reach in
        its module directories, through `lib -> usr/lib` or any other link."""
        return frozenset(
            m[1].replace("-", "_")
            for top in _MODULE_DIRS
            for path, _ in self.tree(top)
            if (m := _MODULE.fullmatch(path))
        )

    def generator(self) -> str:
        """Which tool built the image, from the files only that tool puts there."""
        names = set(self.paths)
        # dracut installs its hook tree and modules.txt under (usr/)lib/dracut (dracut.sh).
        if any(n.startswith(("usr/lib/dracut/", "lib/dracut/")) for n in names):
            return "dracut"
        # mkinitramfs copies conf/initramfs.conf and the scripts/ tree (hook-functions).
        if "conf/initramfs.conf" in names or (
            "scripts/functions" in names and any(n.startswith("scripts/init-top") for n in names)
        ):
            return "initramfs-tools"
        # mkinitcpio writes /VERSION, /config, /buildconfig and ships /init_functions.
        if "init_functions" in names or ("config" in names and names & {"buildconfig", "VERSION"}):
            return "mkinitcpio"
        return "unknown"


Needed = Callable[[Initramfs], Iterable[str]]


def _is_dir(entry: Entry | None) -> bool:
    return entry is None or entry.is_dir  # None: a directory the archive left out


def open_initramfs(
    path: str | PathLike[str], wanted: Callable[[str], bool], needed: Needed | None = None
) -> Initramfs:
    """The image at the host path `path`: NotReadable if it is not a regular file."""
    with open_regular(path) as stream:
        return read_initramfs(stream, wanted, needed)


def read_initramfs(
    stream: BinaryIO, wanted: Callable[[str], bool], needed: Needed | None = None
) -> Initramfs:
    """Every entry of the image; the data of the files `wanted(path)` accepts where they land.

    `needed(image)` names the paths the caller will `read`. A symlink can make one of them lead to
    a file the stream had already passed (`etc/modprobe.d/x.conf -> ../x.conf`): then, if the
    stream can seek, the image is read a second time keeping those files too. Memory stays flat
    either way; the second pass costs time only for images that need it.
    Only an OSError of `stream` itself propagates; bad bytes end up in `error`.
    """
    try:  # a file larger than the budget would only be read up to it, slowly (20 GiB of holes)
        size = os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # not a file: an in-memory stream
        size = 0
    if size > IMAGE_OUTPUT.value:
        return Initramfs(
            (), {}, (), f"offset 0: a {size}-byte file, over the {IMAGE_OUTPUT.describe()} limit"
        )
    start = stream.tell() if stream.seekable() else None
    image = _read_once(stream, wanted, frozenset())
    if needed is None or start is None:
        return image
    late = frozenset(
        index
        for path in needed(image)
        if (where := image.resolve(path)) is not None
        and (index := image.paths.get(where)) is not None
        and stat.S_ISREG(image.entries[index].mode)
        and where not in image.files
    )
    if not late:
        return image
    stream.seek(start)
    return _read_once(stream, wanted, late)


def _read_once(stream: BinaryIO, wanted: Callable[[str], bool], keep: frozenset[int]) -> Initramfs:
    reader = _Reader(wanted, keep)
    raw = _Counted(stream, reader.budget)
    try:
        if raw.peek(2) == b"MZ":
            _enter_uki(raw)
        reader.read_image(raw)
        if not reader.archives:
            raise Corrupt("offset 0: no cpio archive at all (an empty or all-NUL file)")
    except Corrupt as exc:
        reader.error = str(exc)
    return Initramfs(
        tuple(reader.entries),
        MappingProxyType(reader.files),
        tuple(reader.archives),
        reader.error,
        reader.namespace,
    )


class _Budget:
    """What reading one image may cost: bytes read and decompressed together (IMAGE_OUTPUT)."""

    def __init__(self) -> None:
        self.spent = 0

    def spend(self, n: int, where: str) -> None:
        self.spent += n
        if self.spent > IMAGE_OUTPUT.value:
            raise Corrupt(f"{where}: stopped at the {IMAGE_OUTPUT.describe()} limit")


class _Counted(RawStream):
    """The image file, every byte read from it counted against the budget."""

    def __init__(self, stream: BinaryIO, budget: _Budget) -> None:
        super().__init__(stream)
        self._budget = budget

    def _fill(self) -> bytes:
        data = super()._fill()
        self._budget.spend(len(data), self.where(self.pos))
        return data


class _Decoded(ByteSource):
    """The output of one compressed stream of the image, counted against the budget and the ratio."""

    def __init__(
        self, chunks: Generator[bytes, None, None], name: str, raw: RawStream, budget: _Budget
    ) -> None:
        super().__init__()
        self._chunks = chunks
        self.name = name
        self.offset = raw.pos
        self._raw = raw
        self._budget = budget
        self._out = 0

    def _fill(self) -> bytes:
        try:
            chunk = next((c for c in self._chunks if c), b"")
        except Corrupt as exc:
            raise Corrupt(f"{self.name} stream at offset {self.offset}: {exc}") from None
        self._out += len(chunk)
        self._budget.spend(len(chunk), self.where(self.pos))
        # A bomb (20 GiB of zeros in 20 MB of gzip) stops here in a fraction of a second
        # instead of minutes: no real image comes near this ratio (limits.IMAGE_RATIO).
        taken = max(1, self._raw.pos - self.offset)
        if self._out > IMAGE_RATIO_FLOOR.value and self._out > IMAGE_RATIO.value * taken:
            raise Corrupt(
                f"{self.name} stream at offset {self.offset}: stopped at the {IMAGE_RATIO.describe()}"
                f" limit ({self._out} bytes out of {taken}: a decompression bomb?)"
            )
        return chunk

    def where(self, pos: int) -> str:
        return f"byte {pos} of the {self.name} stream at offset {self.offset}"


def _skip_nuls(source: ByteSource) -> None:
    while chunk := source.read1(CHUNK):
        rest = chunk.lstrip(b"\0")
        if rest:
            source.unread(rest)
            return


def _enter_uki(raw: RawStream) -> None:
    """Narrow `raw` to the `.initrd` section of a PE image (systemd-stub's UKI)."""
    dos = raw.read(64)
    (pe,) = struct.unpack_from("<I", dos, 0x3C) if len(dos) == 64 else (0,)
    if not 64 <= pe < 1 << 20 or raw.skip(pe - 64) != pe - 64:
        raise Corrupt("offset 0: MZ file without a PE header (not a UKI)")
    coff = raw.read(24)
    if len(coff) < 24 or coff[:4] != b"PE\0\0":
        raise Corrupt(f"offset {pe}: no PE signature (MZ file, but not a UKI)")
    nsections, optional = struct.unpack_from("<2xH12xH", coff, 4)
    if raw.skip(optional) != optional:
        raise Corrupt(f"offset {raw.pos}: PE optional header cut short")
    table = raw.read(40 * nsections)
    if len(table) < 40 * nsections:
        raise Corrupt(f"offset {raw.pos}: PE section table cut short")
    for i in range(nsections):
        name, vsize, _vaddr, rawsize, rawptr = struct.unpack_from("<8sIIII", table, 40 * i)
        if name.rstrip(b"\0") != b".initrd":
            continue
        # SizeOfRawData is padded to FileAlignment; VirtualSize is the initrd's own length.
        size = min(vsize, rawsize) if vsize else rawsize
        gap = rawptr - raw.pos
        if gap < 0 or raw.skip(gap) != gap:
            raise Corrupt(f"offset {rawptr}: PE .initrd section out of reach of the file")
        raw.window(rawptr + size)
        return
    raise Corrupt("offset 0: PE file without an .initrd section (a kernel image, not a UKI?)")


@dataclass
class _LinkGroup:
    """Names of one hard-linked file in one archive (the kernel links them: maybe_link)."""

    names: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    keep: bool = False
    size: int = 0
    data: bytes | None = None


class _Reader:
    def __init__(self, wanted: Callable[[str], bool], keep: frozenset[int]) -> None:
        self.wanted = wanted
        self.keep = keep  # entry indices to keep whatever their path (a second pass)
        self.entries: list[Entry] = []
        self.files: dict[str, bytes] = {}
        self.archives: list[Archive] = []
        self.error: str | None = None
        self.budget = _Budget()
        self.kept = 0  # bytes of names, link targets and file data held (IMAGE_KEPT)
        self.namespace = Namespace()

    def hold(self, n: int, where: str) -> None:
        self.kept += n
        if self.kept > IMAGE_KEPT.value:
            raise Corrupt(f"{where}: stopped at the {IMAGE_KEPT.describe()} limit")

    def _wants(self, path: str | None) -> bool:
        return len(self.entries) in self.keep or (path is not None and self.wanted(path))

    def _place(self, name: str, mode: int) -> int | None:
        """The node where init/initramfs.c `do_name`/`do_symlink` put `name`, or None when it fails.

        The name is used as given, relative to the root: directories on the way are looked up
        following symlinks (`lib/x` lands in `usr/lib/x` after `lib -> usr/lib`). `clean_path`
        removes what is there when the type differs (a directory only when empty); a regular file
        over a regular file truncates it; `mkdir` over a directory does nothing.
        """
        head, _, base = name.rstrip("/").rpartition("/")
        if base in ("", ".", ".."):
            return None  # the root or a parent: `mkdir` fails with EEXIST, anything else fails
        ns = self.namespace
        parent = ns.walk(head, self.entries, follow=True, create=True)
        if parent is None:
            return None
        at = ns.entry[parent]
        if at is not None and not self.entries[at].is_dir:
            return None  # ENOTDIR
        node = ns.child.get((parent, base))
        if node is not None and ns.kids[node]:  # a directory (maybe one the archive left out)
            old = ns.entry[node]
            was = stat.S_IFDIR if old is None else self.entries[old].mode
            if stat.S_ISLNK(mode) or stat.S_IFMT(was) != stat.S_IFMT(mode):  # do_symlink: type 0
                return None  # rmdir fails on a non-empty directory, so does the new entry
        return ns.add(parent, base)

    def read_image(self, raw: RawStream) -> None:
        while True:
            _skip_nuls(raw)
            head = raw.peek(6)
            if not head:
                return
            at = raw.pos
            if head.startswith(b"0707"):
                self._archive(raw, at, "none")
                continue
            name = compression_of(head)
            if name is None:
                raise Corrupt(
                    f"offset {at}: neither a cpio archive nor a known compression (starts {head.hex(' ')})"
                )
            chunks = DECODERS[name](raw)
            try:
                decoded = _Decoded(chunks, name, raw, self.budget)
                while True:
                    _skip_nuls(decoded)
                    if not (first := decoded.peek(4)):
                        break
                    if not first.startswith(b"0707"):
                        where = decoded.where(decoded.pos)
                        raise Corrupt(f"{where}: junk inside the stream ({first.hex(' ')})")
                    self._archive(decoded, at, name)
            finally:
                chunks.close()

    def _archive(self, source: ByteSource, offset: int, compression: str) -> None:
        index = len(self.archives)
        self.archives.append(Archive(offset, compression))
        links: dict[tuple[int, int, int, int], _LinkGroup] = {}
        while True:
            at = source.pos
            where = source.where(at)
            if len(self.entries) >= IMAGE_ENTRIES.value:
                raise Corrupt(f"{where}: stopped at the {IMAGE_ENTRIES.describe()} limit")
            if (at - source.base) % 4:
                raise Corrupt(f"{where}: cpio header not 4-byte aligned (the kernel rejects it)")
            header = source.read(110)
            if len(header) < 110:
                raise Corrupt(f"{where}: cpio archive cut short (no TRAILER!!!)")
            if header[:6] not in (b"070701", b"070702"):
                raise Corrupt(f"{where}: not a cpio newc header ({header[:6]!r})")
            if not _HEX.fullmatch(header, 6):
                raise Corrupt(f"{where}: cpio header field is not hex")
            ino, mode, _, _, nlink, _, size, major, minor, _, _, namesize, _ = (
                int(header[i : i + 8], 16) for i in range(6, 110, 8)
            )
            if not 0 < namesize <= _PATH_MAX:
                raise Corrupt(f"{where}: cpio name size {namesize} out of range")
            raw_name = source.read(namesize)
            if len(raw_name) < namesize:
                raise Corrupt(f"{where}: cpio archive cut short in a name")
            source.skip(-(source.pos - source.base) % 4)
            # dracut pads names with NULs; the kernel reads up to the first one.
            name = raw_name.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
            if name == "TRAILER!!!":
                self._data(source, size, keep=False, what=name)
                for group in links.values():
                    for i in group.indices:
                        self.entries[i] = replace(self.entries[i], size=group.size)
                return
            node = self._place(name, mode)
            if self.namespace.steps > IMAGE_NAME_WALK.value:
                raise Corrupt(f"{where}: names too hard to resolve: {IMAGE_NAME_WALK.describe()} exceeded")
            path = None if node is None else self.namespace.path[node]
            self.hold(len(name), where)
            target: str | None = None
            if stat.S_ISREG(mode) and nlink >= 2:
                group = links.setdefault((ino, major, minor, mode), _LinkGroup())
                group.keep = group.keep or self._wants(path)
                if path is not None:
                    group.names.append(path)
                group.indices.append(len(self.entries))
                if size:  # newc carries the data once, on the last name (gen_init_cpio, cpio)
                    group.size = size
                    group.data = self._data(source, size, keep=group.keep, what=name)
                    if group.data is not None:
                        self.files.update(dict.fromkeys(group.names, group.data))
                elif (
                    group.data is not None and path is not None
                ):  # only the new name: all each time was quadratic
                    self.files[path] = group.data
            elif stat.S_ISREG(mode):
                data = self._data(source, size, keep=self._wants(path), what=name)
                if path is not None:
                    if data is None:
                        self.files.pop(path, None)
                    else:
                        self.files[path] = data
            else:
                if path is not None:
                    self.files.pop(path, None)
                is_link = stat.S_ISLNK(mode)
                body = self._data(source, size, keep=is_link and size <= _PATH_MAX, what=name)
                if is_link and body is not None:
                    target = body.decode("utf-8", "backslashreplace")
            if node is not None:
                self.namespace.entry[node] = len(self.entries)
            shown = path if path is not None else _normalise(name)
            self.entries.append(Entry(shown, mode, size, nlink, target, index, compression))

    def _data(self, source: ByteSource, size: int, *, keep: bool, what: str) -> bytes | None:
        at = source.pos
        if keep and size > IMAGE_WANTED_FILE.value:  # read whole, it could exhaust memory
            raise Corrupt(
                f"{source.where(at)}: {what} is {size} bytes, over the {IMAGE_WANTED_FILE.describe()} limit"
            )
        if keep:
            self.hold(size, source.where(at))
            data = source.read(size)
            got = len(data)
        else:
            data, got = None, source.skip(size)
        if got < size:
            raise Corrupt(f"{source.where(at)}: data of {what} cut short ({got} of {size} bytes)")
        source.skip(-(source.pos - source.base) % 4)
        return data


def _normalise(name: str) -> str:
    """A name the kernel could not place, shown as the archive has it (no leading `./` or `/`)."""
    if name.startswith("./"):
        name = name[2:]
    return name.lstrip("/") or "."
