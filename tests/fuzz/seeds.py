"""The fuzzing tier's settings (fixed example counts, derandomized, a time bound per input), realistic
seeds per format and a mutator that breaks them the way unlucky admins and attackers do."""

from __future__ import annotations

import contextlib
import gzip
import importlib
import os
import signal
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from cpio_writer import directory, file, newc, symlink

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

T = TypeVar("T")
SECONDS = 10  # one input taking longer is a hang


# CI runs the fixed, derandomized set; PCIBACK_FUZZ_SCALE=20 PCIBACK_FUZZ_RANDOM=1 explores further
SCALE = int(os.environ.get("PCIBACK_FUZZ_SCALE", "1"))
RANDOM = os.environ.get("PCIBACK_FUZZ_RANDOM") == "1"


def fuzz(examples: int) -> Callable[[T], T]:
    return settings(  # type: ignore[return-value]
        max_examples=examples * SCALE,
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@contextlib.contextmanager
def finishes() -> Iterator[None]:
    def stop(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"one input took more than {SECONDS} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# bytes that end or split lines, quote, nest, escape or expand in one of the formats read
TOKENS = [
    *(b"\n", b"\r\n", b"\r", b"\f", b"\v", b"\x00", b"\t", b" ", b"\\\n", b"\\", b"#", b";", b"=", b"+="),
    *(b'"', b"'", b"`", b"$", b"${", b"$(", b"(", b")", b"[", b"]", b"{", b"}", b"[[", b",", b":", b"."),
    *(b"\xc2\x85", b"\xe2\x80\xa8", b"\xff\xfe", b"\xed\xa0\x80", b"\x1b[31m", b"..", b"/", b"//", b"*"),
    *(b"0000:05:00.0", b"(0000:05:00.0)", b"05:00.*", b"xen-pciback", b"xen_pciback.hide=", b"=y", b"=m"),
    *(b"if", b"fi", b"then", b"menuentry", b"submenu", b"}", b"options", b"softdep", b"install", b"0x"),
    *(b"9" * 24, b"-1", b"ffffffffffffffff", b"\x7fELF", b"\x1f\x8b\x08", b"070701", b"TRAILER!!!"),
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """One seed with up to 8 edits: token inserts, deletions, byte swaps, repeats, truncation."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 8))):
        op = draw(st.integers(0, 4))
        at = draw(st.integers(0, len(data)))
        if op == 0:
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif op == 1:
            del data[at : at + draw(st.integers(1, 32))]
        elif op == 2:
            data[at : at + 1] = draw(st.binary(min_size=1, max_size=4))
        elif op == 3:
            data[at:at] = bytes(data[at : at + draw(st.integers(1, 64))]) * draw(st.integers(1, 8))
        else:
            del data[at:]
    return bytes(data)


def inputs(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, a token soup, and mutated seeds."""
    return st.one_of(
        st.binary(max_size=512),
        st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join),
        mutated(seeds),
    )


def text(seeds: list[bytes]) -> st.SearchStrategy[str]:
    return inputs(seeds).map(lambda b: b.decode("utf-8", "replace"))


def fixture_files(pattern: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted(FIXTURES.glob(pattern)) if p.is_file()]


def elf(sections: dict[bytes, bytes]) -> bytes:
    """An ELF64 relocatable (a `.ko`) with the given sections, nothing else."""
    names = [b"", *sections, b".shstrtab"]
    shstrtab = b"\0".join(names) + b"\0"
    bodies = [b"", *sections.values(), shstrtab]
    blob = bytearray(64)
    offsets = []
    for body in bodies:
        blob += b"\0" * (-len(blob) % 8)
        offsets.append(len(blob))
        blob += body
    blob += b"\0" * (-len(blob) % 8)
    shoff = len(blob)
    for i, (name, body) in enumerate(zip(names, bodies, strict=True)):
        kind = 0 if i == 0 else (3 if name == b".shstrtab" else 1)
        name_at = shstrtab.index(name + b"\0") if name else 0
        blob += struct.pack("<IIQQQQIIQQ", name_at, kind, 0, 0, offsets[i], len(body), 0, 0, 1, 0)
    ident = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    blob[:64] = struct.pack(
        "<16sHHIQQQIHHHHHH", ident, 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, len(names), len(names) - 1
    )
    return bytes(blob)


MODINFO = b"alias=pci:v00008086d000010D3sv*sd*bc*sc*i*\0parm=hide:devices to hide\0name=xen_pciback\0"
MODULES = [elf({b".modinfo": MODINFO}), gzip.compress(elf({b".modinfo": MODINFO})), elf({b".text": b"\xc3"})]


def kernels() -> list[bytes]:
    """bzImages (gzip, xz, zstd payloads) and a vmlinux, built by the kernel-image tests' helpers."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "facts"))
    try:
        kimage = importlib.import_module("test_kimage")
    finally:
        sys.path.pop(0)
    vmlinux = kimage.make_vmlinux(ikconfig=True, symbols=["start_kernel", "pcifront_init"])
    built = [
        kimage.make_bzimage(kimage.COMPRESSORS[c](vmlinux), size=len(vmlinux)) for c in ("gzip", "xz", "zstd")
    ]
    return [*built, vmlinux]


IMAGES = [
    newc(
        [
            directory("."),
            directory("usr/lib"),
            symlink("lib", "usr/lib"),
            file("usr/lib/dracut/modules.txt", b"base\n"),
            file("usr/lib/dracut/hooks/cmdline/00-xen-pciback-hide.sh", b"#!/bin/sh\n"),
            file("etc/xen-pciback.conf", b"0000:05:00.0\n"),
            file("etc/pciback", b"options xen-pciback hide=(0000:05:00.0)\n"),
            symlink("etc/modprobe.d/x.conf", "../pciback"),
            file("etc/cmdline.d/50.conf", b"rd.driver.pre=xen-pciback\n"),
            file("lib/modules/6.1.0/kernel/drivers/xen/xen-pciback/xen-pciback.ko", b"\x7fELF"),
        ]
    ),
    newc([file("conf/initramfs.conf", b"MODULES=most\n"), file("conf/modules", b"xen-pciback\n")]),
]
IMAGES.append(gzip.compress(IMAGES[0]))


# found by the fuzzer: a section offset of 2**63 made pyelftools raise OverflowError
HUGE_OFFSET = struct.pack(
    "<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + b"\0" * 9, 1, 62, 1, 0, 0, 64, 0, 64, 0, 0, 64, 1, 0
) + struct.pack("<IIQQQQIIQQ", 0, 3, 0, 0, 1 << 63, 16, 0, 0, 1, 0)
