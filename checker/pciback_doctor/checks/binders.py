"""PB703-PB707: early binders in the image (boot/binders.py), and Qubes OS's 90qubes-pciback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pciback_doctor.checks import Check, check
from pciback_doctor.model import Finding, Fix, Severity, Verdict

if TYPE_CHECKING:  # annotations only: `explain` must not import the boot model and readers
    from pciback_doctor.boot.analysis import Analysis
    from pciback_doctor.boot.binders import BinderContext
    from pciback_doctor.boot.qubes import QubesPciback, Selection


def _context(a: Analysis) -> BinderContext | None:
    from pciback_doctor.boot.model import binder_context

    image = a.image if a.image is not None and not a.image.error else None
    return binder_context(a.system, a.backend.backend.mode, image)


def _qubes(a: Analysis) -> tuple[QubesPciback, Selection] | None:
    from pciback_doctor.boot.binders import binders_for
    from pciback_doctor.boot.qubes import QubesPciback

    ctx = _context(a)
    if ctx is None:
        return None
    found = next((b for b in binders_for(a.system, a.image) if isinstance(b, QubesPciback)), None)
    return (found, found.selection(ctx)) if found is not None else None


_FIXES: dict[int, tuple[Analysis, list[Fix]]] = {}


def _qubes_fixes(a: Analysis) -> list[Fix]:
    """The Qubes fix, proven once per analysis (several findings point at it)."""
    from pciback_doctor.fixes import qubes_fix  # the fix layer, only when a finding needs it

    found = _FIXES.get(id(a))
    if found is None or found[0] is not a:
        fix = qubes_fix(a)
        _FIXES.clear()
        found = _FIXES[id(a)] = (a, [fix] if fix is not None else [])
    return found[1]


@check(
    "PB703",
    Severity.ERROR,
    "An early binder in the image will stop the boot",
    """A dracut module that binds devices for pciback in the initramfs calls dracut's `die` on this
    command line: the boot stops in the initramfs ("Refusing to continue") and dom0 never comes up.
    Qubes OS's 90qubes-pciback does so when rd.qubes.hide_pci holds a character outside [0-9a-f.:,]
    ("Bogus PCI device list"), or when the last device of its list cannot be bound under Xen ("Cannot
    unbind PCI devices"): a domain written in rd.qubes.hide_pci (it prepends 0000: itself), a device
    that does not exist, or no pciback driver (xen-pciback missing, or a malformed hide value). Only
    the last device counts: the hook's `set -e` is inert inside `( ... ) ||`, so an earlier failure is
    skipped silently. The project's module stops the boot only with rd.xen_pciback.strict=1. Fix the
    list (rd.qubes.hide_pci takes BB:SS.F, lower-case hex, comma separated) and regenerate grub.cfg.""",
)
def stops_boot(chk: Check, a: Analysis) -> Iterator[Finding]:
    from pciback_doctor.boot.binders import binders_for

    ctx = _context(a)
    if ctx is None:
        return
    for binder in binders_for(a.system, a.image):
        stop = binder.stops(ctx)
        if stop is not None:
            fixes = _qubes_fixes(a) if binder.name.startswith("Qubes") else []
            yield chk.finding(
                f"{binder.name} stops the boot in the initramfs: {stop.reason}",
                evidence=stop.evidence,
                fixes=fixes,
            )
            return  # nothing after a stop runs


@check(
    "PB704",
    Severity.ERROR,
    "A domain in rd.qubes.hide_pci",
    """90qubes-pciback writes "0000:" + each rd.qubes.hide_pci word to pciback's new_slot and bind, so
    a word that already carries its domain (0000:03:00.0) becomes 0000:0000:03:00.0: new_slot rejects
    it (EINVAL), bind finds no such device (ENODEV), and the device is not hidden. If it is the last
    word of the list the hook calls die and the boot stops (PB703). Write BB:SS.F without the domain;
    devices outside PCI domain 0 cannot be named through rd.qubes.hide_pci at all.""",
)
def domain_in_hide_pci(chk: Check, a: Analysis) -> Iterator[Finding]:
    from pciback_doctor.boot.qubes import HIDE_PCI

    found = _qubes(a)
    if found is None:
        return
    _, sel = found
    final = sel.words[-1] if sel.words else None
    offered = sel.stop is not None  # then PB703 carries the fix
    for word in sel.words:
        if word.origin == HIDE_PCI and word.text.count(":") >= 2:
            what = f"{word.intended}" if word.intended is not None else "no device"
            last = sel.stop is not None and word is final
            tail = "; it is the last word of the list, so the hook stops the boot" if last else ""
            yield chk.finding(
                f"rd.qubes.hide_pci word '{word.text}' has a domain: the hook writes '0000:{word.text}', "
                f"so {what} is not hidden{tail}",
                device=str(word.intended) if word.intended is not None else None,
                evidence=[word.evidence],
                fixes=() if offered else _qubes_fixes(a),
            )
            offered = True


@check(
    "PB705",
    Severity.WARNING,
    "rd.qubes.dom0_usb keeps a device in dom0, or matches nothing",
    """90qubes-pciback skips a device whose address equals a rd.qubes.dom0_usb word, compared as text
    with the form lspci prints (BB:SS.F, no domain). A device both hidden (by class or by
    rd.qubes.hide_pci) and in rd.qubes.dom0_usb stays with dom0's driver; a dom0_usb word written with
    its domain, or naming a device the hook does not select, matches nothing and keeps nothing in dom0.""",
)
def dom0_usb(chk: Check, a: Analysis) -> Iterator[Finding]:
    found = _qubes(a)
    if found is None:
        return
    _, sel = found
    for text, evidence in sel.exceptions:
        hidden = [w for w in sel.words if w.text == text]
        if hidden:
            via = sorted({w.origin for w in hidden})
            yield chk.finding(
                f"{hidden[0].intended or text} is selected ({', '.join(via)}) and listed in rd.qubes.dom0_usb: "
                "the hook skips it and it stays with dom0's driver",
                device=str(hidden[0].intended) if hidden[0].intended else None,
                evidence=[evidence, *(w.evidence for w in hidden)],
            )
        else:
            hint = (
                " (written with a domain: the hook compares it with lspci's BB:SS.F)"
                if text.count(":") >= 2
                else ""
            )
            yield chk.finding(
                f"rd.qubes.dom0_usb word '{text}' matches no device the hook selects{hint}",
                evidence=[evidence],
            )


@check(
    "PB706",
    Severity.WARNING,
    "A device meant for passthrough that Qubes OS's binder does not select",
    """90qubes-pciback takes network devices (class 02xx), USB controllers (0c03) only with
    rd.qubes.hide_all_usb, and the devices in rd.qubes.hide_pci. A device named for passthrough (xl
    pci=, a hide value, --device) of another class and not in rd.qubes.hide_pci is left to the rest of
    the boot, and the model predicts it will not be pciback's. Add it to rd.qubes.hide_pci= (BB:SS.F,
    comma separated) in GRUB_CMDLINE_LINUX of /etc/default/grub and regenerate grub.cfg.""",
)
def not_selected(chk: Check, a: Analysis) -> Iterator[Finding]:
    found = _qubes(a)
    if found is None:
        return
    binder, sel = found
    taken = {w.intended for w in sel.words if not w.skipped}
    fixes: list[Fix] | None = None
    for dev in a.devices:
        if dev.prediction.verdict is Verdict.CLAIMED or dev.bdf in taken or dev.device is None:
            continue
        cls = dev.device.pci_class
        if cls is None or any(w.intended == dev.bdf and w.skipped for w in sel.words):
            continue
        first = fixes is None
        if first:
            fixes = _qubes_fixes(a)
        classes = "02xx or 0c03" if sel.hide_all_usb else "02xx"
        yield chk.finding(
            f"{dev.bdf} (class {cls:06x}) is not selected by {binder.name} (it takes class {classes} "
            f"and rd.qubes.hide_pci), so it is left to the rest of the boot: {dev.prediction.reason}",
            device=str(dev.bdf),
            evidence=[binder.hook],
            fixes=fixes if first and fixes else (),
        )


@check(
    "PB707",
    Severity.WARNING,
    "A bogus rd.qubes option",
    """90qubes-pciback accepts only lower-case hex digits, '.', ':' and ',' in rd.qubes.hide_pci and
    rd.qubes.dom0_usb. A bogus rd.qubes.hide_pci is warned about and then stops the boot (PB703); a
    bogus rd.qubes.dom0_usb is ignored with a warning, so every USB controller the hook selects is
    hidden from dom0 (a USB keyboard at the disk-unlock prompt stops working).""",
)
def bogus_option(chk: Check, a: Analysis) -> Iterator[Finding]:
    found = _qubes(a)
    if found is None:
        return
    _, sel = found
    for message, evidence in sel.warnings:
        if evidence is not None:
            yield chk.finding(message, evidence=[evidence])
