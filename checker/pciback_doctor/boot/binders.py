"""Early binders: dracut modules that hand devices to pciback from a hook, before udev (SPEC §3).

An early binder is recognised by its hook file in the image. Given the command line (dracut's
getcmdline: the image's etc/cmdline.d/*.conf, etc/cmdline, then the kernel's), the PCI devices and
whether the pciback driver can come up in the initramfs, it says which devices it takes, and how it
fails: a device it cannot bind is skipped, or the whole boot stops (dracut's `die`). The boot model
asks every binder found in the image, in the order dracut runs their hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pciback_doctor.facts.cmdline import Cmdline
from pciback_doctor.facts.pci import Bdf, PciDevice
from pciback_doctor.model import Evidence

if TYPE_CHECKING:  # annotations only: `kernel` and `domu` import no image reader (start-up)
    from pciback_doctor.facts.image import ImageFacts, PcibackHook
    from pciback_doctor.facts.target import System

#: dracut's init runs the hook directories in this order (modules.d/99base/init.sh); a binder
#: at `cmdline` runs before udevd starts, so only built-in drivers hold devices then
HOOK_ORDER = ("cmdline", "pre-udev", "pre-trigger", "initqueue", "pre-mount", "mount", "pre-pivot")


@dataclass(frozen=True)
class BinderContext:
    """What a binder's hook sees when it runs."""

    cmdlines: tuple[Cmdline, ...]  # in dracut getcmdline order: the last occurrence of a key wins
    devices: tuple[PciDevice, ...]  # the PCI devices the doctor knows (sysfs, --device)
    backend_up: bool  # the pciback driver registers in the initramfs (built in, or module in the image)
    backend_problem: str  # why it does not, when it does not
    backend_in_image: bool  # built in, or xen-pciback.ko in the image
    malformed_hide: Evidence | None = None  # the malformed hide value that keeps pciback from registering
    shell: Evidence | None = None  # the image's bin/sh (text: its basename), when known


@dataclass(frozen=True)
class Take:
    """A device a binder will try to hand to pciback, and why."""

    bdf: Bdf
    evidence: Evidence
    binds: bool = True  # False: the binder tries, but its writes fail (the device stays as it was)
    problem: str = ""
    certain: bool = True  # False: whether the binder takes the device cannot be told
    stranded: bool = False  # the binder leaves it bound to nothing (driver_override set, no pciback)
    kind: str = "binder-skips"  # the model's observation when it does not bind (checks key on it)


@dataclass(frozen=True)
class BootStop:
    """The binder calls dracut's `die`: the boot stops in the initramfs."""

    reason: str
    evidence: tuple[Evidence, ...]


class EarlyBinder(Protocol):
    """One early-binding dracut module as found in an image."""

    @property
    def name(self) -> str: ...  # how a user knows it ("Qubes OS's 90qubes-pciback")

    @property
    def hook(self) -> Evidence: ...  # its hook file in the image

    @property
    def stage(self) -> str: ...  # the dracut hook directory (HOOK_ORDER)

    @property
    def priority(self) -> int: ...  # the hook file's number: dracut sources hooks sorted by name

    @property
    def failure(self) -> str: ...  # "device skipped" | "boot stops": what one failed device does

    @property
    def claim_reason(self) -> str: ...  # the prediction's reason for a device it binds

    def takes(self, ctx: BinderContext) -> dict[Bdf, Take]:
        """The devices the hook names, each saying whether its writes bind it."""
        ...

    def stops(self, ctx: BinderContext) -> BootStop | None:
        """Whether the hook stops the boot on this command line and these devices."""
        ...


def hook_priority(path: str) -> int:
    """`NN-name.sh` -> NN (dracut's inst_hook names the copy `<prio>-<basename>`)."""
    digits = path.rsplit("/", 1)[-1].split("-", 1)[0]
    return int(digits) if digits.isdigit() else 99


def hook_stage(path: str) -> str:
    """The hook directory of `…/dracut/hooks/<stage>/NN-x.sh` (initqueue/settled -> initqueue)."""
    rest = path.split("/dracut/hooks/", 1)[-1]
    return rest.split("/", 1)[0]


@dataclass(frozen=True)
class ProjectModule:
    """The project's dracut module (dracut-module/90xen-pciback/xen-pciback-hide.sh, SPEC §9):
    rd.xen_pciback.hide=, the xen-pciback.hide= token and etc/xen-pciback.conf; per device
    driver_override, unbind, new_slot, bind and verify; a failure is counted and the device skipped,
    unless rd.xen_pciback.strict=1 makes it fatal."""

    found: PcibackHook
    name: str = "the pciback dracut module"
    failure: str = "device skipped"
    claim_reason: str = (
        "the pciback dracut module binds the device through driver_override at the cmdline hook, "
        "before udev starts"
    )

    @property
    def hook(self) -> Evidence:
        return self.found.hook

    @property
    def stage(self) -> str:
        return hook_stage(self.found.hook.path)

    @property
    def priority(self) -> int:
        return hook_priority(self.found.hook.path)

    def disabled(self, ctx: BinderContext) -> bool:
        return any(p.value == "0" for c in ctx.cmdlines for p in c.get("rd.xen_pciback"))

    def takes(self, ctx: BinderContext) -> dict[Bdf, Take]:
        from pciback_doctor.boot.model import hook_devices

        listed = hook_devices(list(ctx.cmdlines), self.found.config, [d.bdf for d in ctx.devices])
        if self.disabled(ctx):  # the devices stay wanted: the list says what the admin meant
            problem = "rd.xen_pciback=0 disables the dracut module"
            return {bdf: Take(bdf, e, False, problem, kind="hook-disabled") for bdf, e in listed.items()}
        if not ctx.backend_in_image:
            problem = "the dracut module is in the image but xen-pciback is not"
            return {
                bdf: Take(bdf, e, False, problem, kind="image-lacks-backend") for bdf, e in listed.items()
            }
        if ctx.malformed_hide is not None:
            # driver_override is already pciback, so the native driver cannot bind either
            problem = (
                "the dracut module sets driver_override, but with the malformed hide value the backend "
                "never comes up (pcistub_init returns -EINVAL), so nothing binds the device"
            )
            return {bdf: Take(bdf, e, False, problem, stranded=True) for bdf, e in listed.items()}
        return {bdf: Take(bdf, evidence) for bdf, evidence in listed.items()}

    def stops(self, ctx: BinderContext) -> BootStop | None:
        from pciback_doctor.boot.model import malformed_hook_entries

        if self.disabled(ctx):
            return None
        strict = any(p.value == "1" for c in ctx.cmdlines for p in c.get("rd.xen_pciback.strict"))
        bad = malformed_hook_entries(list(ctx.cmdlines), self.found.config)
        if strict and bad:
            return BootStop(
                "rd.xen_pciback.strict=1 and a malformed device list: the dracut module stops the boot",
                (self.hook, *(e for _, e in bad)),
            )
        return None


def binders_in(image: ImageFacts) -> list[EarlyBinder]:
    """The early binders whose hooks the image carries, in the order dracut runs them."""
    from pciback_doctor.boot.qubes import QUBES_HOOK, QubesPciback

    found: list[EarlyBinder] = []
    if image.pciback_hook is not None:
        found.append(ProjectModule(image.pciback_hook))
    for name in image.hooks:
        if name.endswith(QUBES_HOOK) and hook_stage(name) == "cmdline":
            found.append(QubesPciback(image.where(name)))
    return sorted(found, key=_order)


def binders_for(system: System, image: ImageFacts | None) -> list[EarlyBinder]:
    """The early binders of the next boot: those in the image when it can be read; without one
    (Fedora and Qubes write /boot/initramfs-*.img readable by root only), those the platform puts
    into every image it builds: Qubes OS's dracut always includes 90qubes-pciback (no check() in
    its module-setup.sh, so dracut takes it whenever it is installed, as it is on every dom0)."""
    from pciback_doctor.boot.qubes import QubesPciback

    if image is not None and not image.error:
        return binders_in(image)
    if system.platform.id == "qubes":
        rel = next((e.path for e in system.platform.evidence), "etc/os-release")
        return [QubesPciback(Evidence(rel, None, "Qubes OS: dracut puts 90qubes-pciback into every image"))]
    return []


def _order(binder: EarlyBinder) -> tuple[int, int, str]:
    stage = HOOK_ORDER.index(binder.stage) if binder.stage in HOOK_ORDER else len(HOOK_ORDER)
    return (stage, binder.priority, binder.hook.path)
