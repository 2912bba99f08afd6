"""What every boot-loader reader produces: the boot entry, the problems it met, and how a
loader's path becomes a path in the root.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pciback_doctor.facts.root import Root
from pciback_doctor.model import Evidence


@dataclass(frozen=True)
class BootEntry:
    source: str  # "grub" | "bls" | "xen.cfg"
    title: str
    id: str | None
    is_xen: bool
    kernel_path: str | None  # relative to the root (see _boot_path)
    kernel_release: str | None
    cmdline: str  # the Linux (dom0) command line, without the kernel path
    xen_cmdline: str | None  # the hypervisor's command line; None when not booted by Xen
    initrd_paths: tuple[str, ...]
    evidence: tuple[Evidence, ...]
    menu_path: str = ""  # GRUB: position as GRUB_DEFAULT would write it, e.g. "3>0>1"
    xen_path: str | None = None


@dataclass(frozen=True)
class BootProblem:
    message: str
    evidence: Evidence


_ESPS = ("boot/efi", "efi", "boot")


_RELEASE = re.compile(r"^(?:vmlinuz|vmlinux|bzImage|kernel|Image|linux)-(\d.*?)(?:\.efi)?$")


class _Notes:
    def __init__(self) -> None:
        self.items: list[BootProblem] = []

    def add(self, message: str, path: str, line: int | None = None, text: str = "") -> None:
        self.items.append(BootProblem(message, Evidence(path, line, text[:200])))


def _boot_path(root: Root, written: str, bases: Sequence[str]) -> str:
    """A loader's path as a root-relative path.

    Boot loaders see paths relative to the partition they read: `/vmlinuz-K` when /boot is its own
    partition, `/boot/vmlinuz-K` when it is not, so the same text means different files. `bases`
    are where that partition may be mounted (`boot/`). A candidate that exists in the root wins,
    the partition's own reading first; when none exists (a fixture, a partly copied root) the
    partition reading is kept, since that is how grub-mkconfig and kernel-install write paths.
    """
    path = re.sub(r"^\([^)]*\)", "", written.strip()).replace("\\", "/").lstrip("/")
    candidates = [f"{base}{path}" for base in bases if base and not path.startswith(base)]
    candidates.append(path)
    return next((c for c in candidates if root.exists(c)), candidates[0])


def kernel_release_of(path: str | None) -> str | None:
    """`6.1.0-18-amd64` from `boot/vmlinuz-6.1.0-18-amd64`; None for `vmlinuz-linux`."""
    if not path:
        return None
    m = _RELEASE.match(path.rsplit("/", 1)[-1])
    return m.group(1) if m else None


def release_in(root: Root, path: str | None) -> str | None:
    """The release of the kernel a loader reads at `path`: a symlink's target names it when the
    link's own name does not (XCP-ng boots `/boot/vmlinuz-4.19-xen`, a link to
    `vmlinuz-4.19.0+1`: kernel.spec's `ln -sf vmlinuz-%{uname} vmlinuz-%{short_uname}-xen`)."""
    target = root.readlink(path) if path else None
    return (target and kernel_release_of(target)) or kernel_release_of(path)


def _join(words: Iterable[str]) -> str:
    return " ".join(w for w in words if w)
