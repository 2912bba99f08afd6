"""Fuzzing the image namespace with archives built from random names, links and replacements."""

from __future__ import annotations

import io
import stat

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from seeds import finishes, fuzz

from cpio_writer import CpioEntry, newc
from pciback_doctor.facts.image import image_facts, needed_files, wanted_file
from pciback_doctor.facts.initramfs import read_initramfs

pytestmark = pytest.mark.fuzz

PARTS = st.sampled_from(["etc", "modprobe.d", "x.conf", "lib", "usr", "..", ".", "", "a", "cmdline.d"])
NAMES = st.lists(PARTS, min_size=1, max_size=6).map("/".join)
KINDS = st.sampled_from([stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755, stat.S_IFLNK | 0o777])


@st.composite
def entries(draw: st.DrawFn) -> list[CpioEntry]:
    out = []
    for _ in range(draw(st.integers(1, 25))):
        mode = draw(KINDS)
        name = draw(NAMES)
        data = draw(NAMES).encode() if stat.S_ISLNK(mode) else b"options xen-pciback hide=(05:00.0)\n"
        out.append(CpioEntry(name, b"" if stat.S_ISDIR(mode) else data, mode=mode))
    return out


@fuzz(300)
@given(entries())
@example(
    [
        CpioEntry("lib", b"lib", mode=stat.S_IFLNK | 0o777),  # a link to itself
        CpioEntry("lib/etc/modprobe.d/x.conf", b"x"),
        CpioEntry("etc", b"..", mode=stat.S_IFLNK | 0o777),  # `..` at the root
        CpioEntry("etc/modprobe.d/x.conf", b"y"),
    ]
)
def test_namespace_invariants(archive: list[CpioEntry]) -> None:
    with finishes():
        raw = read_initramfs(io.BytesIO(newc(archive)), wanted_file, needed_files)
        assert raw.error is None
        image_facts(raw, "initrd.img")
        for path, index in raw.paths.items():
            # a path in the tree is where it is: walking it without following its last link lands on it
            assert raw.resolve(path, follow=False) == path
            head, _, base = path.rpartition("/")
            assert base in raw.listdir(head or ".")
            if path in raw.files:
                assert stat.S_ISREG(raw.entries[index].mode)
