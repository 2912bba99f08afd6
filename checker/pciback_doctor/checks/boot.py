"""PB3xx: who binds each device first, from the boot model's observations."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pciback_doctor.checks import Check, check
from pciback_doctor.model import Finding, Severity, Verdict

if TYPE_CHECKING:  # annotations only: `explain` must not import the boot model and readers
    from pciback_doctor.boot.analysis import Analysis
    from pciback_doctor.boot.model import DevicePrediction, Observation


def _observed(
    a: Analysis, kind: str, unless_claimed: bool = True
) -> Iterator[tuple[DevicePrediction, Observation]]:
    for dev in a.devices:
        if unless_claimed and dev.prediction.verdict is Verdict.CLAIMED:
            continue
        seen = set()
        for obs in dev.observations:
            if obs.kind == kind and obs.message not in seen:
                seen.add(obs.message)
                yield dev, obs


def _report(chk: Check, a: Analysis, kind: str, unless_claimed: bool = True) -> Iterator[Finding]:
    for dev, obs in _observed(a, kind, unless_claimed):
        yield chk.finding(obs.message, device=str(dev.bdf), evidence=obs.evidence)


@check(
    "PB301",
    Severity.ERROR,
    "Native driver built in while the backend is a module",
    """A built-in driver binds the device during kernel init, before any module can load, and a module never
    takes a bound device. Either build the backend in (CONFIG_XEN_PCIDEV_BACKEND=y on x86, CONFIG_XEN_PCIDEV_STUB=y on
    Arm, with xen-pciback.hide= on the command line), or unbind the device early: the pciback dracut module or a late-binding unit using
    driver_override.""",
)
def native_builtin(chk: Check, a: Analysis) -> Iterator[Finding]:
    yield from _report(chk, a, "native-builtin")


@check(
    "PB302",
    Severity.ERROR,
    "Nothing orders the backend before the native driver",
    """systemd-udevd loads the native driver by modalias as soon as it sees the device; xen-pciback has no
    device table, so udev never loads it. Unless a 'softdep NATIVE pre: xen-pciback' (or a correct install
    rule) makes kmod load the backend first, the native driver binds the device.""",
)
def unordered(chk: Check, a: Analysis) -> Iterator[Finding]:
    yield from _report(chk, a, "unordered")


@check(
    "PB303",
    Severity.ERROR,
    "Native driver in the initramfs, backend not (or not ordered there)",
    """udev in the initramfs loads whatever driver modules the image holds. If the native driver is in the
    image, the backend must be too, with the softdep/options in the image's own modprobe.d (dracut copies
    /etc/modprobe.d only in hostonly mode) - or the native driver must be left out of the image.""",
)
def image_order(chk: Check, a: Analysis) -> Iterator[Finding]:
    for kind in ("image-lacks-backend", "image-unordered"):
        yield from _report(chk, a, kind)


@check(
    "PB304",
    Severity.ERROR,
    "Broken install or softdep rule",
    """The rule meant to load the backend first does not: it names a module that no longer exists (the
    classic 'pciback'), loads the native driver without --ignore-install (it calls itself), never loads the
    native driver, or relies on rd.driver.pre without dracut's kernel-modules code in the image (with systemd
    in the image: without dracut-pre-udev.service, which loads rd.driver.pre there).""",
)
def broken_rule(chk: Check, a: Analysis) -> Iterator[Finding]:
    for dev, obs in _observed(a, "broken-rule", unless_claimed=False):
        # severity follows effect: a broken rule next to one that works changes no outcome
        claimed = dev.prediction.verdict is Verdict.CLAIMED
        yield chk.finding(
            obs.message + (" (the device is claimed anyway)" if claimed else ""),
            device=str(dev.bdf),
            evidence=obs.evidence,
            severity=Severity.WARNING if claimed else None,
        )


@check(
    "PB305",
    Severity.WARNING,
    "Backend loaded only by modules-load.d / xencommons: races udev",
    """systemd-modules-load, /etc/modules and the xencommons script run in parallel with udev coldplug;
    nothing orders them before the native driver's load. The outcome can differ from boot to boot.""",
)
def race(chk: Check, a: Analysis) -> Iterator[Finding]:
    yield from _report(chk, a, "race")


@check(
    "PB309",
    Severity.WARNING,
    "A built-in driver cannot be ruled out",
    """A driver built into the kernel binds its devices during kernel init, before any module loads, so
    nothing in modprobe.d or the initramfs can beat it. Kernels that record no PCI ids for their built-in
    drivers in modules.builtin.modinfo (Debian 12's 6.1 among them) still carry them in the kernel image,
    where the doctor reads them; here neither source was there, so a device a module path would claim is
    predicted unknown. Give the kernel image with --kernel-image F (or have boot/vmlinuz-K in the root).""",
)
def builtin_unknown(chk: Check, a: Analysis) -> Iterator[Finding]:
    for dev in a.devices:
        if dev.native.builtin_unknown and dev.prediction.verdict is Verdict.UNKNOWN:
            yield chk.finding(f"{dev.bdf}: {dev.native.note}", device=str(dev.bdf))


@check(
    "PB306",
    Severity.INFO,
    "Device currently bound to another driver",
    """Right now the device belongs to a driver other than pciback. That says what this boot did, not what
    the next one will do; 'xl pci-assignable-add BDF' moves it now, until the next reboot.""",
)
def bound_now(chk: Check, a: Analysis) -> Iterator[Finding]:
    for dev in a.devices:
        d = dev.device
        if d is not None and d.driver not in (None, "pciback"):
            yield chk.finding(f"{dev.bdf} is bound to {d.driver} now", device=str(dev.bdf), evidence=[])


@check(
    "PB307",
    Severity.INFO,
    "Native driver blacklisted",
    """udev will not load a blacklisted driver for the device, so dom0 cannot use it until it is assigned;
    the backend still has to be loaded (with hide) by something.""",
)
def blacklisted(chk: Check, a: Analysis) -> Iterator[Finding]:
    yield from _report(chk, a, "native-blacklisted", unless_claimed=False)


@check(
    "PB308",
    Severity.ERROR,
    "Device meant for passthrough will not be pciback's",
    """The device is named for passthrough (hide value, xl pci=, --device) but the boot model predicts
    that another driver (or nobody) will own it after the next boot; the other PB3xx/PB2xx findings say
    why. The fixes are the strategies that fit this system: modprobe (softdep + options, and the initramfs
    config), cmdline (xen-pciback.hide=), dracut (the pciback dracut module) and late-binding
    (driver_override from a unit ordered before the Xen domains). `pciback-doctor fix` applies one.""",
)
def not_claimed(chk: Check, a: Analysis) -> Iterator[Finding]:
    # one fix per strategy for the whole system, proven on a model copy, printed once: with the
    # first of these findings (a copy per device would carry a script for that device only)
    fixes = None
    for dev in a.devices:
        p = dev.prediction
        if p.verdict is Verdict.NOT_CLAIMED:
            who = (
                f"{p.winner} will own it"
                if p.winner and p.winner != "none"
                else "nothing hands it to pciback"
            )
            first = fixes is None
            if first:
                from pciback_doctor.fixes import advice  # only when a finding needs it

                fixes = advice(a)
            yield chk.finding(
                f"{dev.bdf}: {who} ({p.reason})",
                device=str(dev.bdf),
                evidence=p.evidence,
                fixes=fixes if first and fixes else (),
            )
