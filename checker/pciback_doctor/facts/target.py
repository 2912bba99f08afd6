"""The facts about one target system (SPEC §2): what the collector (facts/system.py) or the
single-input commands (facts/standalone.py) hand to the boot model and the checks. Only the types
live here, so that `kernel` and `domu` do not import the readers of bootloaders and images
(start-up budget, issue 17)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pciback_doctor.facts.dracutconf import DracutConfig
from pciback_doctor.facts.platform import UNKNOWN, Platform

if TYPE_CHECKING:
    from pciback_doctor.facts.bootloader import BootEntry, NextBoot
    from pciback_doctor.facts.builtin_pci import BuiltinPciDrivers
    from pciback_doctor.facts.cmdline import Cmdline
    from pciback_doctor.facts.domu import DomuKernel
    from pciback_doctor.facts.image import ImageFacts
    from pciback_doctor.facts.kconfig import KernelConfig
    from pciback_doctor.facts.machine import Machine
    from pciback_doctor.facts.modprobe import ModprobeConfig
    from pciback_doctor.facts.modules import ModuleInfo, ModuleTree
    from pciback_doctor.facts.pci import PciDevice
    from pciback_doctor.facts.root import Root
    from pciback_doctor.facts.services import BackendLoader, LateBinding
    from pciback_doctor.facts.xl import XlConfig
    from pciback_doctor.model import Evidence

BACKEND = "xen_pciback"


@dataclass(frozen=True)
class Options:
    """What the user named on the command line (explicit paths are host paths)."""

    root: str = "/"
    kernel: str | None = None
    config: str | None = None
    modules_dir: str | None = None
    initramfs: str | None = None
    kernel_image: str | None = None
    cmdline: str | None = None
    cmdline_file: str | None = None
    xen_cmdline: str | None = None
    devices: tuple[str, ...] = ()
    domu_configs: tuple[str, ...] = ()
    domu_kernels: tuple[str, ...] = ()
    progress: Callable[[str], None] | None = None  # told about long work (big images)


@dataclass(frozen=True)
class System:
    root: Root
    release: str | None
    release_source: str
    running_release: str | None
    config: KernelConfig | None
    modules: ModuleTree | None
    backend_modinfo: ModuleInfo | None
    modprobe: ModprobeConfig
    cmdline: Cmdline | None
    cmdline_kind: str  # "option" | "boot-entry" | "proc" | "none"

    @property
    def cmdline_source(self) -> str | None:
        return self.cmdline.source if self.cmdline else None

    @property
    def boots_without_xen(self) -> BootEntry | None:
        """The next boot's entry when it starts the target kernel without Xen while the menu has
        Xen entries (NextBoot.without_xen), for the kernel the doctor looks at."""
        entry = self.next_boot.without_xen if self.next_boot is not None else None
        return entry if entry is not None and entry.kernel_release in (None, self.release) else None

    devices: tuple[PciDevice, ...]
    sysfs: bool  # a sysfs PCI tree was there to look at
    offline_devices: tuple[PciDevice, ...] = ()
    next_boot: NextBoot | None = None
    xen_cmdline: Cmdline | None = None
    domu_configs: tuple[XlConfig, ...] = ()
    domu_kernels: tuple[DomuKernel, ...] = ()
    files: Mapping[str, str] = field(default_factory=dict)  # current text of the files fixes may edit
    dracut_conf: DracutConfig = field(default_factory=DracutConfig)
    proc_cmdline: Cmdline | None = None  # the running boot's, when the root has one
    running_dom0: bool = False  # /proc/xen/capabilities says control_d
    image: ImageFacts | None = None
    image_problem: str | None = None  # why there is no image to look at
    loaders: tuple[BackendLoader, ...] = ()
    late_bindings: tuple[LateBinding, ...] = ()
    problems: tuple[Evidence, ...] = field(default=())  # unreadable discovered inputs
    # the built-in PCI drivers read from the kernel image, when the module tree does not list them:
    # a call, since that read (decompressing the kernel) is waited for only when a device is predicted
    builtin_pci: Callable[[], BuiltinPciDrivers | None] = field(default=lambda: None)
    # the backend's module file is listed but empty, garbage or unreadable: modprobe would fail
    backend_module_problem: Evidence | None = None
    platform: Platform = UNKNOWN  # which distribution: the tools its fixes name
    # the kernel's architecture from its own bytes, read only when no kernel config names it
    machine: Machine | None = None
