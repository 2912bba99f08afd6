"""PB4xx: the initramfs the next boot will use."""

from __future__ import annotations

from collections.abc import Iterator

from pciback_doctor.boot.analysis import Analysis
from pciback_doctor.checks import Check, check
from pciback_doctor.model import Finding, Severity


@check(
    "PB401",
    Severity.WARNING,
    "No initramfs found for the target kernel",
    """The doctor looks for the default boot entry's initrd, then boot/initramfs-K.img, boot/initrd.img-K and
    boot/initrd-K. Without it, it cannot tell whether a native driver loads from the initramfs before the
    backend; predictions that depend on it are 'unknown'. Name it with --initramfs.""",
)
def no_image(chk: Check, a: Analysis) -> Iterator[Finding]:
    if a.image is None and a.image_problem:
        yield chk.finding(a.image_problem)


@check(
    "PB403",
    Severity.ERROR,
    "initramfs unreadable",
    """The image is not a sequence of cpio archives in a compression the kernel knows (gzip, zstd, xz, lzma,
    bzip2, lz4, lzo), or it is truncated or corrupt. The kernel would fail to unpack it the same way.""",
)
def unreadable(chk: Check, a: Analysis) -> Iterator[Finding]:
    if a.image is not None and a.image.error:
        yield chk.finding(f"{a.image.path}: {a.image.error}", evidence=[a.image.where("")])
