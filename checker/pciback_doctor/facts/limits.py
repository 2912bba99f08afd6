"""Limits on what the doctor reads, as policy: each bound is named here once, with why it is safe.

Real systems stay far below every one of them; hostile or broken input (decompression bombs,
endless lines, millions of archive entries, deep nesting) hits one and becomes a finding that names
the limit — never a MemoryError, a RecursionError or a hang. Readers take the number from here;
the finding quotes `Limit.name` and the value so an admin can see which bound was hit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    name: str
    value: int
    why: str
    is_size: bool = True  # a number of bytes (else a count or a ratio)

    def describe(self) -> str:
        return f"{self.name} ({_size(self.value) if self.is_size else f'{self.value:,}'})"


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return str(n)


# Generated text indexes read whole (modules.alias, modules.dep, modules.builtin, a kernel config).
TEXT_FILE = Limit("text file size", 16 << 20, "modules.alias of a distribution kernel is ~1.3 MiB")
# Configuration files an admin or a generator writes, parsed into words (grub.cfg, BLS entries,
# modprobe.d, xl configs, dracut.conf, unit files, waivers): parsing costs ~5 s and ~150 MB a MiB
# at worst (a word per two bytes), so this bound is what keeps one hostile file from costing minutes.
CONFIG_FILE = Limit("configuration file size", 1 << 20, "a grub.cfg with dozens of kernels is ~100 KiB")
# A module (.ko, any compression) decompressed to read its .modinfo section.
MODULE_FILE = Limit(
    "module size", 64 << 20, "xen-pciback.ko is ~100 KiB; the largest in-tree modules ~20 MiB"
)
# A kernel image (bzImage, vmlinux) and its decompressed payload.
KERNEL_IMAGE = Limit("kernel image size", 256 << 20, "a distribution vmlinux is ~60 MiB decompressed")
# An initramfs: everything read and decompressed from one image, and the number of cpio entries in it.
IMAGE_OUTPUT = Limit("initramfs decompressed size", 4 << 30, "the largest real images hold ~1 GiB")
IMAGE_ENTRIES = Limit(
    "initramfs entry count",
    1 << 18,
    "a full dracut image has ~3,000 entries, a generic one ~20,000",
    is_size=False,
)
# One compressed stream of an initramfs past IMAGE_RATIO_FLOOR of output: output over input.
IMAGE_RATIO = Limit(
    "initramfs compression ratio",
    200,
    "a real dracut image (gzip, 35 MB) unpacks 3.5:1, never above 4:1 at any point; zeros reach 1000:1",
    is_size=False,
)
IMAGE_RATIO_FLOOR = Limit(
    "initramfs output before the ratio applies", 64 << 20, "small streams of padding compress well"
)
# One file inside an initramfs that the model reads (modprobe.d, cmdline.d, hooks, dracut config),
# and all that is kept of one image: entry names, symlink targets and those files together.
IMAGE_WANTED_FILE = Limit("wanted initramfs file size", 1 << 20, "those files are a few KiB")
IMAGE_KEPT = Limit(
    "initramfs names and files kept",
    32 << 20,
    "a generic dracut image's names, links and wanted files are ~1 MiB",
)
# One line of any text input: a file with a longer one is not read, and reported (PB110).
LINE = Limit("line length", 1 << 20, "a kernel command line is at most 4 KiB (COMMAND_LINE_SIZE)")
# Alias globs of modules.alias / modules.builtin.modinfo: each is compiled to a regex once, in time
# quadratic in its unclosed `[`s. 60,000 globs of 256 characters took 13 to 57 s per device; longer
# globs are not matched at all, and a file with more aliases is reported (PB110) and matched on the
# first ones only (32,768 globs of 128 characters compile in 4 to 15 s, once).
ALIAS_GLOB = Limit("module alias length", 128, "file2alias writes PCI aliases of at most ~55 characters")
ALIAS_COUNT = Limit("alias count", 1 << 15, "Debian 6.1: 8,968 PCI aliases, 62 built in", is_size=False)
# Problems reported for one file (each becomes a finding; more says nothing new, and half a million
# findings from a file of `}` lines took longer to render than everything else).
REPORTED_ERRORS = Limit("errors reported per file", 20, "xl itself stops at the first", is_size=False)
# Nesting of brackets/blocks in xl configs and GRUB scripts.
NESTING = Limit("nesting depth", 64, "real configs nest two or three levels", is_size=False)
# Path components of cpio names and link targets resolved one by one (`..`, `//`, symlinks on the way).
IMAGE_NAME_WALK = Limit(
    "initramfs path walk",
    2_000_000,
    "a real image walks a few components an entry, ~30,000 in all",
    is_size=False,
)
# A snapshot (`--root host.tar.gz`, made by the collector): the tar stream decompressed, its member
# count, one member's size, and the small members held in memory (bigger ones are streamed from
# the archive when read). The collector's own bounds are 2 GiB, 100,000 paths and 512 MiB a file.
SNAPSHOT_SIZE = Limit("snapshot decompressed size", 4 << 30, "the collector stops at 2 GiB of files")
SNAPSHOT_ENTRIES = Limit(
    "snapshot entry count", 1 << 18, "the collector writes at most 100,000 paths", is_size=False
)
SNAPSHOT_MEMBER = Limit("snapshot member size", 1 << 30, "the collector leaves out files over 512 MiB")
SNAPSHOT_KEPT = Limit(
    "snapshot members held in memory", 256 << 20, "a dom0's configs, sysfs and module indexes are ~20 MiB"
)
