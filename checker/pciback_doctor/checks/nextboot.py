"""PB6xx: is the doctor looking at the next boot, and what does the hypervisor allow?"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pciback_doctor.boot.hide import cmdline_hides
from pciback_doctor.checks import Check, check
from pciback_doctor.facts.pci import Bdf
from pciback_doctor.model import Finding, Fix, Severity, Verdict

if TYPE_CHECKING:  # annotations only: `explain` must not import the boot model and readers
    from pciback_doctor.boot.analysis import Analysis


@check(
    "PB604",
    Severity.INFO,
    "Command line of the current boot, not the next",
    """No boot entry or --cmdline said what the next boot's dom0 command line will be, so the doctor used
    /proc/cmdline: the command line this system booted with. If the bootloader configuration changed since,
    the prediction may be off; pass --cmdline or --cmdline-file to be sure.""",
)
def current_cmdline(chk: Check, a: Analysis) -> Iterator[Finding]:
    if a.system.cmdline_kind == "proc" and a.system.cmdline is not None:
        yield chk.finding(
            "using proc/cmdline, the command line of the current boot",
            evidence=[a.system.cmdline.evidence(a.system.cmdline.params[0])]
            if a.system.cmdline.params
            else [],
        )


_FALSE = {"0", "off", "no", "false", "disable", "disabled"}


@check(
    "PB601",
    Severity.WARNING,
    "IOMMU switched off on the Xen command line",
    """With iommu=0/off/no/false Xen cannot protect memory from a passed-through device's DMA and refuses PCI
    passthrough to HVM guests (they need the IOMMU to remap DMA); PV passthrough still works but a guest can
    then DMA anywhere - the device owns the host. Remove the setting (Xen enables the IOMMU by default).""",
)
def iommu_off(chk: Check, a: Analysis) -> Iterator[Finding]:
    xen = a.system.xen_cmdline
    if xen is None:
        return
    for p in xen.get("iommu"):
        words = (p.value or "").lower().split(",")
        if any(w in _FALSE for w in words):
            hvm = [c.path for c in a.domu_configs if c.guest_type == "hvm" and c.pci]
            severity = Severity.ERROR if hvm else Severity.WARNING
            breaks = (
                f"HVM passthrough is impossible ({', '.join(hvm)})"
                if hvm
                else "HVM passthrough is impossible and PV passthrough unsafe"
            )
            yield chk.finding(
                f"{xen.evidence(p).text} on the Xen command line: {breaks}",
                evidence=[xen.evidence(p)],
                severity=severity,
            )


@check(
    "PB602",
    Severity.INFO,
    "The next boot differs from the running one",
    """The doctor predicts the default boot entry, which is not what is running now: live state (current
    bindings, loaded modules) says little about the next boot.""",
)
def differs(chk: Check, a: Analysis) -> Iterator[Finding]:
    s = a.system
    if not s.root.is_live:
        return
    if s.running_release and s.release and s.running_release != s.release:
        yield chk.finding(f"the next boot runs kernel {s.release}; {s.running_release} is running now")
    if s.cmdline_kind == "boot-entry" and s.cmdline is not None and s.proc_cmdline is not None:
        ours = {p.key for p in s.cmdline.params if "pciback" in p.key}
        now = {p.key for p in s.proc_cmdline.params if "pciback" in p.key}
        if [p.value for p in s.cmdline.params if p.key in ours] != [
            p.value for p in s.proc_cmdline.params if p.key in now
        ]:
            yield chk.finding(
                "the next boot's xen-pciback settings on the command line differ from the running boot's"
            )


@check(
    "PB603",
    Severity.INFO,
    "Not running as Xen dom0 now",
    """The doctor runs on / but this system is not Xen's dom0 at the moment (no control_d in
    /proc/xen/capabilities, /sys/hypervisor/type is not xen), so what is bound now says nothing about Xen.""",
)
def not_dom0_now(chk: Check, a: Analysis) -> Iterator[Finding]:
    if a.system.root.is_live and not a.system.running_dom0:
        yield chk.finding("this system is not running as Xen dom0 right now: live checks are limited")


@check(
    "PB605",
    Severity.WARNING,
    "Bootloader configuration not regenerated",
    """etc/default/grub (or grub.d) says one thing, the generated grub.cfg another: grub.cfg is what the
    next boot uses. Run update-grub (Debian) or grub2-mkconfig -o /boot/grub2/grub.cfg.""",
)
def stale_bootloader(chk: Check, a: Analysis) -> Iterator[Finding]:
    nb = a.system.next_boot
    for stale in nb.stale if nb else ():
        from pciback_doctor.fixes import grub_update  # only when there is a finding to fix

        yield chk.finding(
            stale.message,
            evidence=stale.evidence,
            fixes=[Fix("bootloader", "regenerate grub.cfg", commands=(grub_update(a),))],
        )


@check(
    "PB607",
    Severity.ERROR,
    "The next boot does not start Xen",
    """The entry the bootloader starts next boots Linux by itself, while the menu has Xen entries: after the
    reboot there is no hypervisor, no dom0 and no domU, and nothing is passed through. A modular xen-pciback
    does not even load (xen_pcibk_init returns -ENODEV outside dom0), so every device goes to its native
    driver. Make a Xen entry the default: GRUB_DEFAULT in etc/default/grub (on Debian, the
    etc/default/grub.d/xen.cfg that the Xen packages install sets it to the Xen entry unless
    XEN_OVERRIDE_GRUB_DEFAULT=0), then regenerate grub.cfg; with GRUB_DEFAULT=saved, grub-set-default
    (grub2-set-default) names the entry. The doctor offers no other fix while this holds: a fix proven on a
    boot without Xen proves nothing. An error when devices are meant for passthrough, else a warning.""",
)
def next_boot_without_xen(chk: Check, a: Analysis) -> Iterator[Finding]:
    next_boot = a.system.next_boot
    entry = a.system.boots_without_xen
    if next_boot is None or entry is None:
        return
    from pciback_doctor.facts.bootloader import grub_variables  # `kernel` and `domu` never get here

    xen = next(e for e in next_boot.entries if e.is_xen)
    wanted = bool(a.devices) or any(c.pci for c in a.domu_configs)
    grub_cfg = xen.evidence[0].path if xen.source == "grub" and xen.evidence else None
    default = grub_variables(a.system.root).get("GRUB_DEFAULT")
    if default == "saved":
        tool = "grub2-set-default" if a.system.platform.family == "fedora" else "grub-set-default"
        how = f"{tool} '{xen.title}' (GRUB_DEFAULT=saved)"
    else:
        where = "etc/default/grub"
        if a.system.root.exists("etc/default/grub.d/xen.cfg"):
            where += " (or XEN_OVERRIDE_GRUB_DEFAULT=1 in etc/default/grub.d/xen.cfg)"
        how = f'GRUB_DEFAULT="{xen.title}" in {where}, then {a.system.platform.grub_update(grub_cfg)}'
    yield chk.finding(
        f"the next boot starts '{entry.title}', Linux without Xen ({next_boot.why}): no dom0 and no "
        f"passthrough after the reboot; the Xen entries include '{xen.title}'",
        evidence=[*entry.evidence[:1], *xen.evidence[:1]],
        severity=None if wanted else Severity.WARNING,
        fixes=[Fix("bootloader", f"make a Xen entry the default: {how}")],
    )


@check(
    "PB606",
    Severity.ERROR,
    "xen-pciback.hide= on Xen's own command line",
    """The hypervisor's command line (the multiboot2 / kernel line of xen.gz, GRUB_CMDLINE_XEN, xen.cfg
    options=) is Xen's: Xen ignores parameters it does not know and never passes them to dom0, so a
    xen-pciback.hide= there hides nothing. Put it on the dom0 kernel's line (module2 / GRUB_CMDLINE_LINUX*).""",
)
def hide_on_xen_line(chk: Check, a: Analysis) -> Iterator[Finding]:
    xen = a.system.xen_cmdline
    if xen is None:
        return
    claimed = {d.bdf for d in a.devices if d.prediction.verdict is Verdict.CLAIMED}
    for source in cmdline_hides(xen):
        named = [
            Bdf(e.domain, e.bus, e.slot, e.func)
            for e in source.spec.intended()
            if e.slot is not None and e.func is not None
        ]
        # severity follows effect: harmless when the devices it names are claimed anyway
        harmless = all(b in claimed for b in named)
        fix = Fix(
            "cmdline",
            "move the token from Xen's line to the dom0 kernel's command line (the module2 / "
            "kernel= line; GRUB_CMDLINE_LINUX_XEN_REPLACE in etc/default/grub), as one value",
        )
        if a.system.platform.family == "xenserver":
            fix = _xen_cmdline_move(a, source.evidence.text)
        yield chk.finding(
            f"{source.evidence.text} is on Xen's command line ({xen.source}), which dom0 never sees",
            evidence=[source.evidence],
            severity=Severity.WARNING if harmless else None,
            fixes=[fix],
        )


def _xen_cmdline_move(a: Analysis, word: str) -> Fix:
    """XenServer/XCP-ng: `xen-cmdline --set-xen` put it there; the same tool moves it (`--delete-xen`
    takes it off the xen.gz line, `--set-dom0` puts it on the dom0 one: fixes/xen_cmdline.py)."""
    from pciback_doctor.fixes.xen_cmdline import XEN_CMDLINE, set_dom0

    key, _, value = word.partition("=")
    delete = f"{XEN_CMDLINE} --delete-xen {key}"
    if cmdline_hides(a.system.cmdline):  # the dom0 line has a value already: one value must hold both
        return Fix(
            "cmdline",
            f"take it off Xen's line ({delete}), then put one xen-pciback.hide= holding these devices and "
            f"the dom0 line's own on the dom0 line with {XEN_CMDLINE} --set-dom0",
            commands=(delete,),
        )
    return Fix(
        "cmdline",
        "move the token from Xen's line to the dom0 line with xen-cmdline",
        commands=(delete, set_dom0(f"xen-pciback.hide={value}")),
    )
