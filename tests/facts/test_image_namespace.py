"""The image's namespace as the kernel unpacks it (init/initramfs.c) and as kmod and dracut then read it.

Every lookup the boot model does in an image goes through `Initramfs.resolve/read/listdir`: names
are used as given (`..`, `./`, `//`), later entries replace earlier ones, symlinks are followed in
directories and files, at most 40 of them.
"""

from __future__ import annotations

import gzip
import io
from typing import BinaryIO

import pytest

from cpio_writer import CpioEntry, directory, file, newc, symlink
from pciback_doctor.facts.image import ImageFacts, image_facts, needed_files, wanted_file
from pciback_doctor.facts.initramfs import Initramfs, read_initramfs

OPTIONS = b"options xen-pciback hide=(0000:05:00.0)\n"
DRACUT = [directory("."), file("usr/lib/dracut/modules.txt", b"base\n")]


class Counting(io.BytesIO):
    """A seekable stream that counts how often the reader starts over."""

    seeks = 0

    def seek(self, offset: int, whence: int = 0) -> int:
        self.seeks += 1
        return super().seek(offset, whence)


def read(*entries: CpioEntry, archives: tuple[list[CpioEntry], ...] = ()) -> Initramfs:
    data = newc([*DRACUT, *entries]) + b"".join(gzip.compress(newc(a)) for a in archives)
    return read_initramfs(io.BytesIO(data), wanted_file, needed_files)


def facts(*entries: CpioEntry, archives: tuple[list[CpioEntry], ...] = ()) -> ImageFacts:
    return image_facts(read(*entries, archives=archives), "initrd.img")


def hide_sources(image: ImageFacts) -> list[str]:
    return [d.evidence.path for d in image.modprobe.options("xen-pciback")]


@pytest.mark.parametrize(
    "name",
    [
        "etc/modprobe.d/x.conf",
        "./etc/modprobe.d/x.conf",
        "/etc/modprobe.d/x.conf",
        "etc//modprobe.d///x.conf",
        "etc/modprobe.d/../modprobe.d/x.conf",
        "etc/./modprobe.d/./x.conf",
        "usr/../etc/modprobe.d/x.conf",
        "../../etc/modprobe.d/x.conf",  # `..` at the root stays there
    ],
)
def test_names_are_resolved_as_the_kernel_does(name: str) -> None:
    image = facts(directory("etc"), directory("etc/modprobe.d"), file(name, OPTIONS))
    assert hide_sources(image) == ["initrd.img!etc/modprobe.d/x.conf"]


def test_symlinked_conf_whose_target_came_first() -> None:
    # sorted like dracut's `find | sort`: the target sits before the link and was skipped
    raw = read(
        directory("etc"),
        file("etc/pciback-options", OPTIONS),
        directory("etc/modprobe.d"),
        symlink("etc/modprobe.d/x.conf", "../pciback-options"),
    )
    assert raw.read("etc/modprobe.d/x.conf") == OPTIONS
    assert hide_sources(image_facts(raw, "initrd.img")) == ["initrd.img!etc/modprobe.d/x.conf"]


def test_symlinked_conf_with_absolute_target_after_it() -> None:
    image = facts(
        directory("etc/modprobe.d"),
        symlink("etc/modprobe.d/x.conf", "/usr/share/xen/pciback.conf"),
        directory("usr/share/xen"),
        file("usr/share/xen/pciback.conf", OPTIONS),
    )
    assert hide_sources(image) == ["initrd.img!etc/modprobe.d/x.conf"]


def test_symlinked_directories() -> None:
    # merged /usr: `lib -> usr/lib`, so an entry named lib/modprobe.d/x.conf lands in usr/lib
    raw = read(
        directory("usr/lib"),
        symlink("lib", "usr/lib"),
        directory("lib/modprobe.d"),
        file("lib/modprobe.d/x.conf", OPTIONS),
        symlink("etc/modprobe.d", "../usr/share/modprobe"),
        directory("usr/share/modprobe"),
        file("usr/share/modprobe/y.conf", OPTIONS.replace(b"05", b"06")),
    )
    assert "usr/lib/modprobe.d/x.conf" in raw.paths and "lib/modprobe.d/x.conf" not in raw.paths
    assert raw.listdir("lib/modprobe.d") == ("x.conf",)
    assert raw.resolve("etc/modprobe.d/../modprobe/y.conf") == "usr/share/modprobe/y.conf"
    image = image_facts(raw, "initrd.img")
    # kmod reads usr/lib/modprobe.d and lib/modprobe.d: one file, the higher-priority name
    assert hide_sources(image) == ["initrd.img!usr/lib/modprobe.d/x.conf", "initrd.img!etc/modprobe.d/y.conf"]


def test_cmdline_d_and_device_list_through_links() -> None:
    image = facts(
        file("usr/lib/dracut/hooks/cmdline/00-xen-pciback-hide.sh"),
        file("usr/share/pciback/list", b"0000:05:00.0\n"),
        file("usr/share/pciback/cmdline", b"rd.driver.pre=xen-pciback\n"),
        symlink("etc/xen-pciback.conf", "../usr/share/pciback/list"),
        symlink("etc/cmdline.d", "../usr/share/cmdline.d"),
        symlink("usr/share/cmdline.d/50-x.conf", "/usr/share/pciback/cmdline"),
    )
    assert image.pciback_hook is not None
    assert [e for e, _ in image.pciback_hook.config] == ["0000:05:00.0"]
    assert [c.source for c in image.cmdline_d] == ["initrd.img!etc/cmdline.d/50-x.conf"]


def test_later_entries_replace_earlier_ones() -> None:
    later = OPTIONS.replace(b"05", b"07")
    image = facts(
        directory("etc/modprobe.d"),
        file("etc/modprobe.d/x.conf", OPTIONS),
        file("etc/modprobe.d/gone.conf", OPTIONS),
        archives=(
            [
                file("etc/modprobe.d/x.conf", later),  # truncated and rewritten
                directory("etc/modprobe.d/gone.conf"),  # clean_path: the file goes, a directory comes
            ],
        ),
    )
    assert [d.args for d in image.modprobe.options("xen-pciback")] == ["hide=(0000:07:00.0)"]


def test_a_file_replaces_a_symlink_and_a_symlink_a_file() -> None:
    raw = read(
        file("etc/real", OPTIONS),
        symlink("etc/modprobe.d/a.conf", "../real"),
        file("etc/modprobe.d/b.conf", OPTIONS),
        archives=(
            [file("etc/modprobe.d/a.conf", b"# now a file\n"), symlink("etc/modprobe.d/b.conf", "nowhere")],
        ),
    )
    assert raw.read("etc/modprobe.d/a.conf") == b"# now a file\n"
    assert raw.entry("etc/modprobe.d/b.conf") is None  # dangling
    assert hide_sources(image_facts(raw, "i")) == []


def test_non_empty_directory_is_not_replaced() -> None:
    raw = read(
        directory("etc/modprobe.d"), file("etc/modprobe.d/x.conf", OPTIONS), file("etc/modprobe.d", b"x")
    )
    assert raw.read("etc/modprobe.d/x.conf") == OPTIONS


@pytest.mark.parametrize(
    "links",
    [
        [symlink("etc/modprobe.d/x.conf", "x.conf")],  # a loop onto itself
        [symlink("etc/modprobe.d/x.conf", "y.conf"), symlink("etc/modprobe.d/y.conf", "x.conf")],
        [symlink("etc/modprobe.d/x.conf", "../l0")]
        + [symlink(f"etc/l{i}", f"l{i + 1}") for i in range(40)]
        + [file("etc/l40", OPTIONS)],  # 41 links: ELOOP
        [file("etc/f", b""), symlink("etc/modprobe.d/x.conf", "../f/x.conf")],  # a file as a directory
    ],
)
def test_loops_and_bad_links_are_not_read(links: list[CpioEntry]) -> None:
    image = facts(directory("etc/modprobe.d"), *links)
    assert hide_sources(image) == []
    assert image.error is None


def test_forty_links_are_followed() -> None:
    chain = [symlink(f"etc/l{i}", f"l{i + 1}") for i in range(39)]
    image = facts(symlink("etc/modprobe.d/x.conf", "../l0"), *chain, file("etc/l39", OPTIONS))
    assert hide_sources(image) == ["initrd.img!etc/modprobe.d/x.conf"]


def test_second_pass_only_when_a_link_needs_it() -> None:
    plain = Counting(newc([*DRACUT, file("etc/modprobe.d/x.conf", OPTIONS)]))
    read_initramfs(plain, wanted_file, needed_files)
    linked = Counting(newc([*DRACUT, file("etc/o", OPTIONS), symlink("etc/modprobe.d/x.conf", "../o")]))
    raw = read_initramfs(linked, wanted_file, needed_files)
    assert (plain.seeks, linked.seeks) == (0, 1)
    assert raw.files == {"etc/o": OPTIONS}


def test_unseekable_stream_reads_once() -> None:
    class Pipe(io.BytesIO):
        def seekable(self) -> bool:
            return False

    stream: BinaryIO = Pipe(newc([*DRACUT, file("etc/o", OPTIONS), symlink("etc/modprobe.d/x.conf", "../o")]))
    raw = read_initramfs(stream, wanted_file, needed_files)
    assert raw.entry("etc/modprobe.d/x.conf") is not None and raw.read("etc/modprobe.d/x.conf") is None


def test_names_built_to_be_slow_hit_the_walk_limit() -> None:
    # each name walks 2,000 components (a `..` at the end defeats the one-lookup path); a few
    # thousand of them would otherwise cost seconds each thousand
    deep = "/".join(["a"] * 2000)
    raw = read_initramfs(io.BytesIO(newc([file(f"{deep}/{i}/../{i}") for i in range(1100)])), wanted_file)
    assert raw.error is not None and "initramfs path walk (2,000,000) exceeded" in raw.error


def test_a_real_generators_names_take_the_one_lookup_path() -> None:
    names = ["./usr", "./usr/lib", "./lib", "./usr/lib/modprobe.d", "./usr/lib/modprobe.d/x.conf"]
    entries = [directory(n) for n in names[:2]] + [symlink(names[2], "usr/lib"), directory(names[3])]
    raw = read_initramfs(io.BytesIO(newc([*entries, file(names[4], OPTIONS)])), wanted_file)
    assert raw.namespace.steps == 0  # placing every entry was one lookup
    assert raw.read("lib/modprobe.d/x.conf") == OPTIONS


def test_modules_kmod_can_reach() -> None:
    k = "lib/modules/6.1.0"
    raw = read(
        directory("usr/lib/modules/6.1.0/kernel"),
        symlink("lib", "usr/lib"),
        file(f"{k}/kernel/e1000e.ko.xz"),  # lands in usr/lib/modules
        symlink(f"{k}/updates", "/opt/vendor"),  # a linked directory
        file("opt/vendor/xen-pciback.ko"),
        symlink(f"{k}/kernel/gone.ko", "/nowhere/gone.ko"),  # dangling: modprobe cannot load it
        symlink(f"{k}/kernel/loop", ".."),  # a loop back up: visited once
        file("opt/elsewhere/igb.ko"),  # outside the module directories
    )
    assert raw.kernel_releases() == ("6.1.0",)
    assert raw.modules() == {"e1000e", "xen_pciback"}
