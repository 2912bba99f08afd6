"""What each architecture's Kconfig offers for Xen PCI passthrough: one table, one row per
architecture, read from the kernel's own Kconfig files (Linux 6.1 unless a row says otherwise).

- x86 (arch/x86/xen/Kconfig, drivers/xen/Kconfig, drivers/pci/Kconfig): the full backend
  XEN_PCIDEV_BACKEND (`depends on PCI && X86 && XEN && XEN_BACKEND`); XEN_DOM0 `depends on
  (XEN_PV && SWIOTLB_XEN) || (XEN_PVH && X86_64)`; XEN_BACKEND `default XEN_DOM0`; XEN_PV `depends on
  X86_64` since Linux 5.9 (32-bit PV removed), so a 6.1 i386 kernel can be no dom0; the frontend
  XEN_PCIDEV_FRONTEND `depends on XEN_PV` (`PCI && X86 && XEN` in older trees). Guests: PV (XEN_PV),
  PVH (XEN_PVH), HVM (any kernel; XEN_PVHVM adds PV drivers). XEN_PV itself came in Linux 4.14; before
  it, CONFIG_XEN=y on x86 was the PV guest support (`pv_symbol`).
- arm64 / arm (arch/arm*/Kconfig): XEN_DOM0 `def_bool y, depends on XEN`; there is no
  XEN_PCIDEV_BACKEND, but XEN_PCIDEV_STUB (`depends on PCI && !X86 && XEN && XEN_BACKEND`, default m)
  builds the same xen-pciback.ko (drivers/xen/xen-pciback/Makefile) without its PV half:
  `xen_pcibk_pv_support()` is false, so no xenbus backend registers, but pcistub still claims the
  hidden devices, which is what the toolstack needs to assign them (Xen's vPCI on Arm). The stub came
  with commit a67efff28832 ("xen-pciback: allow compiling on other archs than x86", Linux 5.16); older Arm
  trees have no PCI backend at all (`backend_exists`). No XEN_PV,
  no pcifront: an Arm guest has one type (xl's "pvh") and never needs a frontend.
- every other architecture (riscv, powerpc, s390, mips, loongarch, ...): Linux defines CONFIG_XEN only
  in arch/x86/xen/Kconfig, arch/arm/Kconfig and arch/arm64/Kconfig, so such a kernel can be neither
  dom0 nor a Xen guest, and no backend symbol exists to suggest (`OTHER`).
- classic XenLinux (2.6.18 and the 3.x vendor trees, drivers/xen/Kconfig there): dom0 is
  XEN_PRIVILEGED_GUEST; XEN_BACKEND is a tristate (`=m` is fine); XEN_PCIDEV_BACKEND builds the module
  `pciback` (drivers/xen/pciback/Makefile); every XenLinux guest is PV and uses XEN_PCIDEV_FRONTEND.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from pciback_doctor.facts.kconfig import KernelConfig
from pciback_doctor.model import Evidence


@dataclass(frozen=True)
class Arch:
    name: str
    detected_by: str  # a symbol only this architecture (or tree) has, =y
    backend: str  # the symbol that builds the PCI backend module; "" where none exists
    backend_kind: str  # full (PV backend + stub) | stub (holds devices only, no PV backend) | none
    module: str  # the backend's kernel module name
    dom0: tuple[tuple[str, str], ...]  # (symbol, values it must have) for dom0 support
    pv: str | None  # the symbol that makes a PV guest kernel; None: no PV guests here
    frontend: str | None  # the PCI frontend (PV guests only)
    guests: str  # guest types a kernel of this architecture can be
    dom0_fix: tuple[str, ...]  # commands that give dom0 support here; () when none can
    dom0_note: str  # why, or why not
    backend_fix: str


_X86_DOM0 = (("CONFIG_XEN_DOM0", "y"), ("CONFIG_XEN_BACKEND", "y"))
_ARM_DOM0 = (("CONFIG_XEN", "y"), ("CONFIG_XEN_DOM0", "y"), ("CONFIG_XEN_BACKEND", "y"))

# fmt: off
_X86_64 = Arch(name="x86_64", detected_by="CONFIG_X86_64",
               backend="CONFIG_XEN_PCIDEV_BACKEND", backend_kind="full", module="xen_pciback",
               dom0=_X86_DOM0, pv="CONFIG_XEN_PV", frontend="CONFIG_XEN_PCIDEV_FRONTEND", guests="PV, PVH, HVM",
               dom0_fix=("make xen.config",), dom0_note="kernel/configs/xen.config sets XEN, XEN_DOM0, XEN_BACKEND",
               backend_fix="scripts/config --module XEN_PCIDEV_BACKEND")
_ARM64 = Arch(name="arm64", detected_by="CONFIG_ARM64",
              backend="CONFIG_XEN_PCIDEV_STUB", backend_kind="stub", module="xen_pciback",
              dom0=_ARM_DOM0, pv=None, frontend=None, guests="one type (xl's pvh)",
              dom0_fix=("make xen.config",), dom0_note="XEN_DOM0 and XEN_BACKEND follow CONFIG_XEN on Arm",
              backend_fix="scripts/config --module XEN_PCIDEV_STUB")
ARCHES: tuple[Arch, ...] = (
    Arch(name="xenlinux", detected_by="CONFIG_XEN_PRIVILEGED_GUEST",
         backend="CONFIG_XEN_PCIDEV_BACKEND", backend_kind="full", module="pciback",
         dom0=(("CONFIG_XEN_PRIVILEGED_GUEST", "y"), ("CONFIG_XEN_BACKEND", "ym")),
         pv="CONFIG_XEN", frontend="CONFIG_XEN_PCIDEV_FRONTEND", guests="PV",
         dom0_fix=("scripts/config --enable XEN_PRIVILEGED_GUEST --enable XEN_BACKEND", "make oldconfig"),
         dom0_note="the XenLinux tree's dom0 switch",
         backend_fix="scripts/config --module XEN_PCIDEV_BACKEND"),
    _X86_64,
    Arch(name="i386", detected_by="CONFIG_X86_32",
         backend="CONFIG_XEN_PCIDEV_BACKEND", backend_kind="full", module="xen_pciback",
         dom0=_X86_DOM0, pv="CONFIG_XEN_PV", frontend="CONFIG_XEN_PCIDEV_FRONTEND",
         guests="HVM, PVH (PV before Linux 5.9)",
         dom0_fix=(), dom0_note="build for x86_64: XEN_DOM0 needs XEN_PV, which Linux 5.9 removed for 32-bit x86",
         backend_fix="scripts/config --module XEN_PCIDEV_BACKEND"),
    replace(_X86_64, name="x86", detected_by=""),  # an x86 header without CONFIG_X86_64 / _32 lines
    _ARM64,
    replace(_ARM64, name="arm", detected_by="CONFIG_ARM"),
)
OTHER = Arch(name="other", detected_by="", backend="", backend_kind="none", module="xen_pciback",
             dom0=(("CONFIG_XEN", "y"),), pv=None, frontend=None, guests="none", dom0_fix=(),
             dom0_note="Linux has Xen support only on x86, arm64 and arm (CONFIG_XEN is defined in "
             "arch/x86/xen/Kconfig, arch/arm64/Kconfig and arch/arm/Kconfig): run dom0 on one of them",
             backend_fix="")
# fmt: on
BY_NAME = {a.name: a for a in ARCHES}
# conf_write's header names the source architecture (SRCARCH): x86 covers both widths
_HEADER_ARCH = {"arm64": "arm64", "arm": "arm"}


def arch_of(config: KernelConfig) -> Arch:
    """The row for this config: a symbol only one architecture has, else the header's SRCARCH,
    else the backend symbol it spells, else x86 (whose rows name the mainline symbols)."""
    if "CONFIG_XEN_PRIVILEGED_GUEST" in config.values or "CONFIG_XEN_UNPRIVILEGED_GUEST" in config.values:
        return BY_NAME["xenlinux"]
    for arch in ARCHES:
        if arch.detected_by and config.get(arch.detected_by) == "y":
            return arch
    if config.header_arch in _HEADER_ARCH:
        return BY_NAME[_HEADER_ARCH[config.header_arch]]
    if config.header_arch in ("x86", "x86_64", "i386"):
        return BY_NAME["x86_64" if config.get("CONFIG_64BIT") == "y" else "x86"]
    if config.header_arch:  # a header naming an architecture without Xen (riscv, powerpc, ...)
        return arch_named(config.header_arch)
    if "CONFIG_XEN_PCIDEV_STUB" in config.values:
        return BY_NAME["arm64" if config.get("CONFIG_64BIT") == "y" else "arm"]
    return BY_NAME["x86"]


def names_arch(config: KernelConfig) -> bool:
    """Does the config itself say which architecture it is for (a symbol only one has, or the
    header's SRCARCH)? A defconfig-form file often does not: CONFIG_ARM64 is `def_bool y`."""
    if "CONFIG_XEN_PRIVILEGED_GUEST" in config.values or config.header_arch:
        return True
    return any(a.detected_by and config.get(a.detected_by) == "y" for a in ARCHES)


def arch_named(name: str) -> Arch:
    """The row for an architecture named by make's ARCH= or by the kernel's own bytes
    (facts/machine.py): x86_64, i386, x86, arm64, arm; any other has no Xen (`OTHER`)."""
    return BY_NAME.get(name) or replace(OTHER, name=name)


def machine_name(arch: Arch, config: KernelConfig | None) -> str:
    """The architecture to show: a XenLinux tree's row is a kernel family, not a machine."""
    if arch.name != "xenlinux" or config is None:
        return arch.name
    return "x86_64" if config.get("CONFIG_X86_64") == "y" else "x86"


def arch_evidence(arch: Arch, config: KernelConfig) -> Evidence:
    """Why the config is this architecture's: the symbol only it has, else the header's SRCARCH."""
    symbol = "CONFIG_X86_64" if arch.name == "xenlinux" else arch.detected_by  # the machine, not the tree
    if symbol and symbol in config.values:
        return config.evidence(symbol)
    if config.header_arch:
        return Evidence(
            config.path, None, f"header: Linux/{config.header_arch} {config.version or ''}".rstrip()
        )
    if arch.backend_kind == "stub" and "CONFIG_XEN_PCIDEV_STUB" in config.values:
        return config.evidence("CONFIG_XEN_PCIDEV_STUB")
    return Evidence(config.path, None, f"no architecture symbol: taken as {arch.name}")


def make_arch(config: KernelConfig) -> str | None:
    """The `ARCH=` to expand a minimal config with, or None when the file does not say. x86 gives
    `x86` (the default on an x86 host): it prompts for 64BIT, default y, so a 32-bit savedefconfig
    made that way says `# CONFIG_64BIT is not set`; one made with ARCH=i386 does not (pass --arch)."""
    names = config.values
    if config.get("CONFIG_X86_32") == "y":
        return "i386"
    if any(k.startswith("CONFIG_ARM64") for k in names):
        return "arm64"
    if any(k.startswith("CONFIG_X86") for k in names):
        return "x86"
    if any(k.startswith(("CONFIG_ARCH_", "CONFIG_ARM_", "CONFIG_CPU_V7")) for k in names):
        return "arm"
    return None


def pv_symbol(arch: Arch, config: KernelConfig) -> str | None:
    """The symbol that makes this kernel a PV guest: XEN_PV, or CONFIG_XEN itself in an x86 tree
    older than XEN_PV (Linux 4.14), recognised by a full config with XEN=y and no XEN_PV line."""
    old_tree = arch.pv == "CONFIG_XEN_PV" and not config.minimal and arch.pv not in config.values
    # a 32-bit tree since 5.9 also lacks the line (XEN_PV depends on X86_64): the header tells them apart
    if old_tree and _version(config) < (4, 14) and config.get("CONFIG_XEN") == "y":
        return "CONFIG_XEN"
    return arch.pv


def backend_exists(arch: Arch, config: KernelConfig) -> bool:
    """False when the tree has no such symbol: a full config whose backend's dependencies (XEN,
    PCI, XEN_BACKEND) all hold would list it, set or not; an Arm tree older than the stub does not."""
    if config.minimal or arch.backend in config.values:
        return True
    deps = ("CONFIG_XEN", "CONFIG_PCI", "CONFIG_XEN_BACKEND")
    return not all(config.get(d) in ("y", "m") for d in deps)


def _version(config: KernelConfig) -> tuple[int, int]:
    """(major, minor) from the config's header; unknown counts as old (only old trees lack it)."""
    match = re.match(r"(\d+)\.(\d+)", config.version or "")
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)
