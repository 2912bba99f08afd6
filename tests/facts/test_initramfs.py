"""initramfs reader: images built here by test code, in every compression the kernel unpacks."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import stat
import struct
import subprocess
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import lz4.block
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from cpio_writer import CpioEntry, directory, file, header, newc, symlink
from pciback_doctor.facts.initramfs import Initramfs, open_initramfs, read_initramfs

K = "6.1.0-56-amd64"
MODPROBE = b"options xen-pciback hide=(0000:05:00.0)\n"


def lz4_legacy(data: bytes, block: int = 8 << 20) -> bytes:
    """`lz4 -l`, the frame the kernel's unlz4 reads: magic, then <le32 size><block> pairs."""
    out = bytearray(struct.pack("<I", 0x184C2102))
    for start in range(0, len(data), block):
        packed = lz4.block.compress(data[start : start + block], store_size=False)
        out += struct.pack("<I", len(packed)) + packed
    return bytes(out)


def lzop(data: bytes) -> bytes:
    if shutil.which("lzop") is None:
        pytest.skip("lzop is not installed (Debian package lzop): cannot build an lzo image")
    return subprocess.run(["lzop", "-c"], input=data, capture_output=True, check=True).stdout


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "zstd": zstandard.ZstdCompressor().compress,
    "xz": lambda data: lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
    "lzma": lambda data: lzma.compress(data, format=lzma.FORMAT_ALONE),
    "bzip2": bz2.compress,
    "lz4": lz4_legacy,
    "lzo": lzop,
}

MICROCODE = newc(
    [
        directory("kernel"),
        directory("kernel/x86/microcode"),
        file("kernel/x86/microcode/GenuineIntel.bin", b"\x01" * 100),
    ]
)


def dracut_main() -> bytes:
    return newc(
        [
            directory("."),
            directory("usr/lib/dracut/hooks/cmdline"),
            file("usr/lib/dracut/modules.txt", b"base\nkernel-modules\n"),
            file("etc/modprobe.d/pciback.conf", MODPROBE),
            file("etc/cmdline.d/50-pciback.conf", b"rd.driver.pre=xen-pciback\n"),
            symlink("bin", "usr/bin"),
            directory(f"usr/lib/modules/{K}"),
            file(f"usr/lib/modules/{K}/kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko.xz"),
            file(f"usr/lib/modules/{K}/kernel/drivers/xen/xen-pciback/xen-pciback.ko.zst"),
            file(f"usr/lib/modules/{K}/modules.dep", b"x\n"),
        ]
    )


def wanted(name: str) -> bool:
    return name.startswith(("etc/modprobe.d/", "etc/cmdline.d/"))


def read(image: bytes, want: Callable[[str], bool] = wanted) -> Initramfs:
    return read_initramfs(io.BytesIO(image), want)


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_early_plain_then_compressed_main_archive(compression: str) -> None:
    image = MICROCODE + COMPRESSORS[compression](dracut_main())
    result = read(image)
    assert result.error is None
    assert [(a.offset, a.compression) for a in result.archives] == [
        (0, "none"),
        (len(MICROCODE), compression),
    ]
    assert result.files == {
        "etc/modprobe.d/pciback.conf": MODPROBE,
        "etc/cmdline.d/50-pciback.conf": b"rd.driver.pre=xen-pciback\n",
    }
    assert result.generator() == "dracut"
    assert result.kernel_releases() == (K,)
    assert result.modules() == {"e1000e", "xen_pciback"}
    by_name = {e.name: e for e in result.entries}
    assert by_name["kernel/x86/microcode/GenuineIntel.bin"].compression == "none"
    assert by_name["bin"].link_target == "usr/bin"
    assert by_name["etc/modprobe.d/pciback.conf"].size == len(MODPROBE)
    assert by_name["etc/modprobe.d/pciback.conf"].archive == 1
    assert "." in by_name


def test_entries_in_archive_order_with_modes() -> None:
    result = read(dracut_main(), lambda _: False)
    assert result.error is None
    assert result.files == {}
    assert [e.name for e in result.entries][:3] == [
        ".",
        "usr/lib/dracut/hooks/cmdline",
        "usr/lib/dracut/modules.txt",
    ]
    assert stat.S_ISDIR(result.entries[0].mode)
    assert result.entries[0].is_dir


def test_nul_padding_between_archives_and_inside_a_stream() -> None:
    inner = newc([file("a", b"1")]) + b"\0" * 12 + newc([file("b", b"22")])
    image = (
        MICROCODE
        + b"\0" * 512
        + gzip.compress(inner)
        + b"\0" * 3
        + zstandard.ZstdCompressor().compress(newc([file("c", b"333")]))
        + b"\0" * 7
    )
    result = read(image, lambda _: True)
    assert result.error is None
    assert [a.compression for a in result.archives] == ["none", "gzip", "gzip", "zstd"]
    assert result.files["a"] == b"1"
    assert result.files["b"] == b"22"
    assert result.files["c"] == b"333"


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_stream_ends_exactly_where_the_next_one_starts(compression: str) -> None:
    first = COMPRESSORS[compression](newc([file("etc/modprobe.d/1.conf", b"1")]))
    second = gzip.compress(newc([file("etc/modprobe.d/2.conf", b"2")]))
    result = read(first + second + COMPRESSORS[compression](newc([file("etc/modprobe.d/3.conf")])))
    assert result.error is None
    assert sorted(result.files) == ["etc/modprobe.d/1.conf", "etc/modprobe.d/2.conf", "etc/modprobe.d/3.conf"]
    assert [a.offset for a in result.archives] == [0, len(first), len(first) + len(second)]


def test_names_cut_at_the_first_nul_and_prefixes_stripped() -> None:
    image = newc(
        [
            CpioEntry("./etc/modprobe.d/a.conf", b"x", name_padding=9),
            CpioEntry("/etc/modprobe.d/b.conf", b"y", name_padding=2),
        ]
    )
    result = read(image)
    assert result.error is None
    assert result.files == {"etc/modprobe.d/a.conf": b"x", "etc/modprobe.d/b.conf": b"y"}


def test_checksummed_newc_070702() -> None:
    result = read(gzip.compress(newc([file("etc/modprobe.d/a.conf", b"x")], magic=b"070702")))
    assert result.error is None
    assert result.files == {"etc/modprobe.d/a.conf": b"x"}


def test_hard_links_share_the_data_carried_by_the_last_name() -> None:
    # newc (gen_init_cpio, GNU cpio) writes the data once, on the last name of the group.
    regular = stat.S_IFREG | 0o644
    image = newc(
        [
            CpioEntry("etc/modprobe.d/a.conf", b"", regular, nlink=3, ino=7),
            CpioEntry("usr/lib/other", b"", regular, nlink=3, ino=7),
            CpioEntry("usr/lib/last", MODPROBE, regular, nlink=3, ino=7),
            CpioEntry("etc/modprobe.d/solo.conf", b"s"),
        ]
    )
    result = read(image)
    assert result.error is None
    assert result.files == {
        "etc/modprobe.d/a.conf": MODPROBE,
        "usr/lib/other": MODPROBE,
        "usr/lib/last": MODPROBE,
        "etc/modprobe.d/solo.conf": b"s",
    }
    assert [e.size for e in result.entries] == [len(MODPROBE)] * 3 + [1]
    assert [e.nlink for e in result.entries][:3] == [3, 3, 3]


def test_unwanted_hard_link_group_keeps_no_data() -> None:
    regular = stat.S_IFREG | 0o644
    image = newc(
        [
            CpioEntry("usr/bin/a", b"", regular, nlink=2, ino=7),
            CpioEntry("usr/bin/b", b"data", regular, nlink=2, ino=7),
        ]
    )
    result = read(image)
    assert result.error is None
    assert result.files == {}
    assert [e.size for e in result.entries] == [4, 4]


def test_a_later_archive_replaces_a_file() -> None:
    image = newc([file("etc/modprobe.d/a.conf", b"old")]) + gzip.compress(
        newc([file("etc/modprobe.d/a.conf", b"new")])
    )
    assert read(image).files == {"etc/modprobe.d/a.conf": b"new"}
    image = newc([file("etc/modprobe.d/a.conf", b"old")]) + newc(
        [symlink("etc/modprobe.d/a.conf", "/dev/null")]
    )
    assert read(image).files == {}


def pe_image(sections: list[tuple[bytes, bytes]], pad_virtual: bool = True) -> bytes:
    """A minimal PE file like systemd's ukify writes: DOS stub, COFF header, section table."""
    lfanew, optional, align = 0x80, 0xF0, 0x200
    table_end = lfanew + 24 + optional + 40 * len(sections)
    pointer = -table_end % align + table_end
    table, body = bytearray(), bytearray()
    for name, data in sections:
        raw_size = len(data) + -len(data) % align
        vsize = len(data) if pad_virtual else 0
        table += struct.pack("<8sIIII16x", name, vsize, 0x1000, raw_size, pointer + len(body))
        body += data + b"\0" * (raw_size - len(data))
    dos = bytearray(lfanew)
    dos[:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, lfanew)
    coff = b"PE\0\0" + struct.pack("<HHIIIHH", 0x8664, len(sections), 0, 0, 0, optional, 0x22)
    head = bytes(dos) + coff + bytes(optional) + bytes(table)
    return head + bytes(pointer - len(head)) + bytes(body)


@pytest.mark.parametrize("pad_virtual", [True, False])
def test_uki_initrd_section(pad_virtual: bool) -> None:
    initrd = MICROCODE + zstandard.ZstdCompressor().compress(dracut_main())
    uki = pe_image(
        [
            (b".osrel", b"ID=debian\n"),
            (b".linux", b"\x4d\x5a" + bytes(3000)),
            (b".initrd", initrd),
            (b".cmdline", b"junk after the initrd must not be read"),
        ],
        pad_virtual,
    )
    result = read(uki)
    assert result.error is None
    assert result.files["etc/modprobe.d/pciback.conf"] == MODPROBE
    assert result.archives[0].offset == uki.index(initrd)
    assert [a.compression for a in result.archives] == ["none", "zstd"]


def test_pe_without_initrd_is_an_error() -> None:
    result = read(pe_image([(b".linux", b"kernel")]))
    assert result.error is not None
    assert ".initrd" in result.error
    assert read(b"MZ" + bytes(10)).error is not None


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_truncated_stream_keeps_what_was_read(compression: str) -> None:
    early = newc([file("etc/modprobe.d/early.conf", b"e")])
    packed = COMPRESSORS[compression](dracut_main())
    result = read(early + packed[: len(packed) * 2 // 3])
    assert result.error is not None
    assert "\n" not in result.error
    assert f"{compression} stream at offset {len(early)}" in result.error
    assert result.files["etc/modprobe.d/early.conf"] == b"e"


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_corrupt_stream_is_an_error(compression: str) -> None:
    packed = bytearray(COMPRESSORS[compression](dracut_main()))
    for i in range(len(packed) // 3, len(packed) // 3 + 24):
        packed[i] ^= 0x5A
    result = read(bytes(packed))
    if compression == "lz4":
        # The legacy lz4 frame has no checksum: damaged literals unpack (in the kernel too) as
        # damaged files. Only the structure is checked.
        assert result.error is not None or result.files != read(dracut_main()).files
        return
    assert result.error is not None
    assert "\n" not in result.error


def test_truncated_plain_archive() -> None:
    image = dracut_main()
    result = read(image[:-30])
    assert result.error is not None
    assert "cut short" in result.error
    assert result.files  # the files before the cut


def test_compressed_stream_ending_inside_an_archive() -> None:
    # init/initramfs.c: "junk at the end of compressed archive" unless the stream ends in Reset.
    image = gzip.compress(newc([file("a", b"1")], trailer=False))
    result = read(image)
    assert result.error is not None
    assert "gzip stream at offset 0" in result.error
    assert "TRAILER" in result.error


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (b"hello, world", "offset 0: neither a cpio archive nor a known compression"),
        (newc([file("a")]) + b"PK\x03\x04zip", f"offset {len(newc([file('a')]))}: neither a cpio"),
        (b"\0\0" + newc([file("a")]), "offset 2: cpio header not 4-byte aligned"),
        (header(0xFFFFFFFF, ino=1, mode=0o100644, nlink=1, size=0), "name size 4294967295"),
        (b"070701" + b"Z" * 104, "offset 0: cpio header field is not hex"),
        (b"070707" + b"0" * 104, "offset 0: not a cpio newc header"),
        (gzip.compress(newc([file("a")]) + b"junk"), "junk inside the stream"),
    ],
)
def test_bad_bytes_give_a_one_line_error(image: bytes, message: str) -> None:
    result = read(image)
    assert result.error is not None
    assert message in result.error


def test_empty_image_is_an_error() -> None:
    # the kernel unpacks nothing from it and the boot finds no init: worth saying
    for data in (b"", b"\0" * 4096):
        result = read(data)
        assert (result.entries, result.archives) == ((), ())
        assert result.error is not None and "no cpio archive" in result.error
        assert result.generator() == "unknown"


def test_lz4_blocks_and_repeated_magic() -> None:
    # Blocks decompress to at most 8 MiB each (lib/decompress_unlz4.c); `lz4 -l` on big input
    # repeats the magic between blocks when it concatenates frames.
    big = file("usr/lib/big", bytes(range(256)) * (40 << 10))  # 10 MiB: two blocks
    first = lz4_legacy(newc([big], trailer=False))
    rest = lz4_legacy(newc([file("etc/modprobe.d/a.conf", b"x")]))
    image = first + rest + gzip.compress(newc([file("etc/modprobe.d/b.conf", b"y")]))
    result = read(image, lambda name: name != "usr/lib/big")
    assert result.error is None
    assert result.files == {"etc/modprobe.d/a.conf": b"x", "etc/modprobe.d/b.conf": b"y"}
    assert [a.compression for a in result.archives] == ["lz4", "gzip"]
    assert result.entries[0].size == 10 << 20


def test_lzo_without_lzop_names_the_program(monkeypatch: pytest.MonkeyPatch) -> None:
    packed = lzop(newc([file("a")]))
    monkeypatch.setattr(shutil, "which", lambda _: None)
    result = read(MICROCODE + packed)
    assert result.error is not None
    assert "lzop" in result.error
    assert len(result.entries) == 3  # the early archive was still read


def test_stream_errors_propagate() -> None:
    class Failing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: object) -> int:
            raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output"):
        read_initramfs(Failing(), wanted)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("names", "generator"),
    [
        (["init", "conf/initramfs.conf", "conf/arch.conf", "scripts/init-top/udev"], "initramfs-tools"),
        (["init", "init_functions", "config", "buildconfig", "VERSION", "hooks/udev"], "mkinitcpio"),
        (["init", "usr/lib/dracut/build-parameter.txt"], "dracut"),
        (["init", "bin/busybox"], "unknown"),
    ],
)
def test_generator(names: list[str], generator: str) -> None:
    result = read(gzip.compress(newc([file(name, b"#") for name in names])))
    assert result.generator() == generator


def test_kernel_releases_and_modules_from_both_module_dirs() -> None:
    image = newc(
        [
            directory("lib/modules/5.10.0-1-amd64"),
            file("lib/modules/5.10.0-1-amd64/kernel/drivers/usb/host/xhci-pci.ko"),
            file("usr/lib/modules/6.1.0-56-amd64/kernel/drivers/xen/xen-pciback/xen-pciback.ko.gz"),
            file("usr/lib/modules/6.1.0-56-amd64/modules.alias"),
            file("usr/lib/firmware/foo.ko"),
        ]
    )
    result = read(image)
    assert result.kernel_releases() == ("5.10.0-1-amd64", "6.1.0-56-amd64")
    assert result.modules() == {"xhci_pci", "xen_pciback"}


def test_open_initramfs(tmp_path: Path) -> None:
    path = tmp_path / "initrd.img"
    path.write_bytes(MICROCODE + gzip.compress(dracut_main()))
    assert open_initramfs(path, wanted).files["etc/modprobe.d/pciback.conf"] == MODPROBE


# Parsers never crash on bad bytes (STYLE.md): random bytes and random damage to real images.

VALID = [
    MICROCODE + gzip.compress(dracut_main()),
    MICROCODE + zstandard.ZstdCompressor().compress(dracut_main()),
    MICROCODE + lz4_legacy(dracut_main()),
    dracut_main(),
]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise(data: bytes) -> None:
    result = read(data, lambda _: True)
    assert result.error is None or "\n" not in result.error


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8),
    st.floats(0, 1),
)
def test_damaged_images_never_raise(image: bytes, damage: list[tuple[float, int]], cut: float) -> None:
    data = bytearray(image)
    for where, value in damage:
        data[int(where * len(data))] = value
    read(bytes(data[: int(cut * len(data)) + 1]), lambda _: True)


@settings(max_examples=100, deadline=None)
@given(
    st.binary(max_size=512),
    st.sampled_from(
        [b"MZ", b"070701", b"\x1f\x8b", b"\x02\x21\x4c\x18", b"\x28\xb5\x2f\xfd", b"BZh", b"\x5d\x00\x00"]
    ),
)
def test_magic_then_garbage_never_raises(tail: bytes, magic: bytes) -> None:
    error = read(magic + tail).error
    assert error is None or "\n" not in error


# Memory stays flat as images grow (SPEC §10): a big file nobody wants is skipped, not held.


def _zeros_image(compression: str, size: int) -> bytes:
    early = newc([file("etc/modprobe.d/a.conf", b"x")])
    # The header of a `size`-byte file, then `size` zeros, then the next entries.
    name = b"usr/lib/firmware/huge.bin\0"
    head = header(len(name), ino=1, mode=0o100644, nlink=1, size=size) + name
    head += bytes(-len(head) % 4)
    tail = newc([file("etc/modprobe.d/after.conf", b"y")])
    chunk = bytes(1 << 20)
    if compression == "gzip":
        packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        out = [packer.compress(head)]
        out += [packer.compress(chunk) for _ in range(size >> 20)]
        out += [packer.compress(tail), packer.flush()]
    else:
        stream = zstandard.ZstdCompressor().compressobj()
        out = [stream.compress(head)]
        out += [stream.compress(chunk) for _ in range(size >> 20)]
        out += [stream.compress(tail), stream.flush()]
    return early + b"".join(out)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_big_unwanted_file_is_read_in_small_memory(compression: str) -> None:
    # 60 MiB: zeros compress 1000:1, so past IMAGE_RATIO_FLOOR (64 MiB) this is a bomb (see below)
    image = _zeros_image(compression, 60 << 20)
    tracemalloc.start()
    try:
        result = read(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.error is None
    assert result.files == {"etc/modprobe.d/a.conf": b"x", "etc/modprobe.d/after.conf": b"y"}
    assert result.entries[1].size == 60 << 20
    assert peak < 32 << 20, f"peak {peak >> 20} MiB reading a 60 MiB image"


# Real world: an image built by the real dracut from Debian's kernel package, read like cpio does.


@pytest.fixture(scope="module")
def dracut_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from debian import Unavailable, kernel_tree

    dracut = shutil.which("dracut") or "/usr/bin/dracut"
    if not Path(dracut).exists() or shutil.which("cpio") is None:
        pytest.skip("dracut and cpio are needed (Debian packages dracut-core, cpio)")
    try:
        root, release = kernel_tree()
    except Unavailable as exc:
        pytest.skip(str(exc))
    moddir = next(
        p for p in (root / "lib/modules" / release, root / "usr/lib/modules" / release) if p.is_dir()
    )
    out = tmp_path_factory.mktemp("dracut") / "initrd.img"
    subprocess.run(
        [dracut, "--no-hostonly", "--no-hostonly-cmdline", "--no-early-microcode", "--force",
         "--kver", release, "--kmoddir", str(moddir), "-m", "base kernel-modules",
         "--drivers", "e1000e xen-pciback", "--tmpdir", str(out.parent), str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    return out, release


@pytest.mark.realworld
def test_real_dracut_image_matches_cpio(dracut_image: tuple[Path, str], tmp_path: Path) -> None:
    built, release = dracut_image
    image = tmp_path / "with-microcode.img"
    image.write_bytes(MICROCODE + built.read_bytes())  # as dracut --early-microcode lays out
    result = open_initramfs(image, lambda name: name == "usr/lib/dracut/modules.txt")
    assert result.error is None
    plain = zlib.decompress(built.read_bytes(), 16 + zlib.MAX_WBITS)
    listing = subprocess.run(
        ["cpio", "-it", "--quiet"], input=plain, capture_output=True, check=True
    ).stdout.decode()
    names = [n.removeprefix("./") for n in listing.splitlines()]
    assert [e.name for e in result.entries if e.archive == 1] == names
    assert [a.compression for a in result.archives] == ["none", "gzip"]
    assert result.generator() == "dracut"
    assert result.kernel_releases() == (release,)
    assert {"e1000e", "xen_pciback"} <= result.modules()
    assert b"kernel-modules" in result.files["usr/lib/dracut/modules.txt"]
    links = {e.name: e.link_target for e in result.entries if e.link_target is not None}
    assert links["bin"] == "usr/bin"
