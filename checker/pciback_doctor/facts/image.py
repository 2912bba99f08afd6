"""What an initramfs image means for the boot: its modules, modprobe.d, cmdline.d, hooks.

Built from the raw entries the initramfs reader returns; evidence paths are `IMAGE!inner/path`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pciback_doctor.facts.cmdline import Cmdline
from pciback_doctor.facts.modprobe import ModprobeConfig
from pciback_doctor.model import Evidence


@dataclass(frozen=True)
class PcibackHook:
    """The project's dracut module inside an image: its hook and the devices it will claim."""

    hook: Evidence
    config: tuple[tuple[str, Evidence], ...]  # BDF lines from etc/xen-pciback.conf in the image


@dataclass(frozen=True)
class ImageFacts:
    path: str  # as shown in evidence (relative to the root when inside it)
    generator: str  # dracut | initramfs-tools | mkinitcpio | unknown
    releases: tuple[str, ...]
    modules: frozenset[str]  # normalized names of the modules in the image
    modprobe: ModprobeConfig
    cmdline_d: Cmdline | None  # dracut etc/cmdline.d/*.conf joined
    kernel_modules_code: bool  # dracut's kernel-modules hook: rd.driver.pre works
    early_modules: tuple[tuple[str, Evidence], ...]  # loaded by the generator's own init
    early_modules_before_udev: bool  # mkinitcpio: yes; initramfs-tools: after coldplug
    pciback_hook: PcibackHook | None
    error: str | None = None

    def where(self, inner: str, line: int | None = None, text: str = "") -> Evidence:
        return Evidence(f"{self.path}!{inner}", line, text)
