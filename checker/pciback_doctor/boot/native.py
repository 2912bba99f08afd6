"""Which driver would bind a device if pciback does not: built in, a module, none, or unknown."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pciback_doctor.facts.cmdline import Cmdline
from pciback_doctor.facts.modprobe import ModprobeConfig
from pciback_doctor.facts.modules import ModuleTree, normalize
from pciback_doctor.facts.pci import PciDevice
from pciback_doctor.model import Evidence

if TYPE_CHECKING:
    from pciback_doctor.facts.builtin_pci import BuiltinPciDrivers

PCIBACK_DRIVER = "pciback"  # the PCI driver's name; its module is xen_pciback


@dataclass(frozen=True)
class NativeDriver:
    name: str | None
    mode: str  # builtin | module | none | unknown
    evidence: tuple[Evidence, ...] = ()
    note: str = ""
    # no list of the kernel's built-in PCI ids could be had: a built-in driver may bind the device
    # at kernel init, before any module — a competitor that cannot be ruled out
    builtin_unknown: bool = False


def cmdline_blacklist(cmdline: Cmdline | None, module: str) -> Evidence | None:
    """`modprobe.blacklist=a,b` (kmod reads it from /proc/cmdline) and the kernel's own
    `module_blacklist=` (refuses the module outright)."""
    if cmdline is None:
        return None
    for key in ("modprobe.blacklist", "module_blacklist"):
        for p in cmdline.get(key):
            if normalize(module) in {normalize(m) for m in (p.value or "").split(",")}:
                return cmdline.evidence(p)
    return None


def resolve_native(
    device: PciDevice | None,
    tree: ModuleTree | None,
    modprobe: ModprobeConfig,
    live_target: bool,
    builtin_pci: BuiltinPciDrivers | None = None,
) -> NativeDriver:
    if device is None:
        return NativeDriver(
            None, "unknown", note="the device is not in sysfs; give --device BDF=VVVV:DDDD:CCCCCC"
        )
    modalias = device.computed_modalias()
    bound = device.driver if device.driver not in (None, PCIBACK_DRIVER) else None
    if tree is None:
        if bound:
            return NativeDriver(bound, "unknown", note="no module tree for the target kernel")
        return NativeDriver(None, "unknown", note="no module tree for the target kernel")
    if modalias is None:
        note = "no modalias or class for the device; give --device BDF=VVVV:DDDD:CCCCCC"
        return NativeDriver(bound, "unknown", note=note)
    recorded = tree.records_builtin_pci_ids
    tables = builtin_pci if builtin_pci is not None and builtin_pci.error is None else None
    if not recorded and tables is not None:
        # the kernel's own pci_device_id tables: a built-in match binds at its initcall, before
        # udev or kmod get to load anything, whatever modprobe.d says
        found = _builtin_match(device, tables)
        if found is not None:
            return found
    # on the kernel that boots next, what sysfs shows bound (or nothing) already answers it
    seen_live = live_target and device.driver != PCIBACK_DRIVER
    unverified = not recorded and tables is None and not seen_live
    native = _module_native(
        device, modalias, bound, tree, modprobe, live_target, recorded or tables is not None
    )
    if unverified and native.mode in ("module", "unknown"):
        why = builtin_pci.error if builtin_pci is not None and builtin_pci.error else "no kernel image found"
        note = native.note or (
            "this kernel records no PCI ids of its built-in drivers and they could not be read "
            f"from the kernel image ({why}): a built-in driver may bind the device at boot"
        )
        return replace(native, note=note, builtin_unknown=True)
    return native


def _builtin_match(device: PciDevice, tables: BuiltinPciDrivers) -> NativeDriver | None:
    if device.vendor is None or device.device is None or device.pci_class is None:
        return None
    # a built-in backend's own driver matches every device (pcistub_ids): it is no competitor
    hit = tables.match(
        device.vendor,
        device.device,
        device.subsystem_vendor,
        device.subsystem_device,
        device.pci_class,
        exclude=PCIBACK_DRIVER,
    )
    if hit is None:
        return None
    driver, pid = hit
    return NativeDriver(
        driver.name,
        "builtin",
        (Evidence(tables.path, None, f"built-in PCI driver {driver.name} matches {pid}"),),
    )


def _module_native(
    device: PciDevice,
    modalias: str,
    bound: str | None,
    tree: ModuleTree,
    modprobe: ModprobeConfig,
    live_target: bool,
    builtins_known: bool,
) -> NativeDriver:
    # kmod's lookup order: aliases from modprobe.d first, then modules.alias, then built-ins.
    for d in modprobe.directives:
        if d.command == "alias" and fnmatch.fnmatchcase(modalias, d.module):
            target = normalize(d.args)
            return NativeDriver(target, _mode(tree, target), (d.evidence,))
    modules, builtins = tree.lookup_modalias(modalias)
    if builtins:
        # built-in drivers bind at their initcall whatever udev does later
        return NativeDriver(builtins[0].module, "builtin", tuple(a.evidence for a in builtins))
    if modules:
        chosen = modules[0].module
        return NativeDriver(chosen, _mode(tree, chosen), tuple(a.evidence for a in modules))
    if bound and live_target:
        # bound now, on the kernel that boots next, yet no module alias matches: a built-in
        # driver (8250_pci's `serial`, say). On another kernel the binding proves nothing.
        return NativeDriver(bound, "builtin", (Evidence(device.path + "/driver", None, bound),))
    if builtins_known or (live_target and device.driver is None):
        return NativeDriver(None, "none", note=f"no driver in this kernel matches {modalias}")
    return NativeDriver(
        None,
        "unknown",
        note=(
            f"no module matches {modalias}, and this kernel does not record its built-in "
            "drivers' PCI ids (no pci aliases in modules.builtin.modinfo): a built-in driver may bind"
        ),
    )


def _mode(tree: ModuleTree, module: str) -> str:
    if tree.is_builtin(module):
        return "builtin"
    return "module" if tree.has_file(module) or not tree.files else "unknown"
