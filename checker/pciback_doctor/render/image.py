"""`pciback-doctor initramfs IMAGE`: what in an image matters for pciback, and `--list`."""

from __future__ import annotations

import stat

from pciback_doctor.facts.image import ImageFacts
from pciback_doctor.facts.initramfs import Initramfs
from pciback_doctor.render.escape import one_line

PCI_HINTS = ("xen_pciback", "vfio_pci", "pci_stub")


def summary(facts: ImageFacts, raw: Initramfs) -> str:
    lines = [f"initramfs {facts.path}"]
    if facts.error:
        lines.append(f"  ERROR: {facts.error} (what follows is what could be read before it)")
    archives = ", ".join(f"{a.compression}@{a.offset}" for a in raw.archives) or "none"
    lines.append(f"  archives     {archives}")
    lines.append(
        f"  generator    {facts.generator}"
        + (f" (hostonly={'yes' if facts.hostonly else 'no'})" if facts.hostonly is not None else "")
    )
    lines.append(f"  kernel       {', '.join(facts.releases) or 'no lib/modules/K in the image'}")
    lines.append(
        f"  modules      {len(facts.modules)}; backend xen-pciback {'present' if 'xen_pciback' in facts.modules else ('absent from what could be read' if facts.error else 'ABSENT')}"
    )
    if facts.systemd:
        lines.append("  init         systemd (dracut's hooks run from its units)")
        pre_udev = "dracut-pre-udev.service" in facts.wanted_units
        lines.append(f"  rd.driver.pre support (dracut-pre-udev.service): {'yes' if pre_udev else 'no'}")
        if facts.modules_load:
            lines.append("  modules-load.d (systemd-modules-load, unordered against udev):")
            lines.extend(f"    {e.path}:{e.line}: {e.text}" for e in facts.modules_load)
    else:
        lines.append(
            f"  rd.driver.pre support (dracut kernel-modules code): {'yes' if facts.kernel_modules_code else 'no'}"
        )
    lines.append(f"  pciback dracut module: {facts.pciback_hook.hook.path if facts.pciback_hook else 'no'}")
    if facts.pciback_hook:
        for bdf, e in facts.pciback_hook.config:
            lines.append(f"    device {bdf}  ({e.path}:{e.line})")
    lines.append("  modprobe.d:")
    for d in facts.modprobe.directives:
        lines.append(f"    {d.evidence.path}:{d.evidence.line}: {d.evidence.text}")
    if not facts.modprobe.directives:
        lines.append("    (none)")
    if facts.cmdline_d:
        lines.append("  cmdline.d:")
        for c in facts.cmdline_d:
            lines.append(f"    {c.source}: {c.text}")
    if facts.early_modules:
        when = "before udev" if facts.early_modules_before_udev else "after udev coldplug"
        lines.append(f"  modules loaded by the generator's init ({when}):")
        for name, e in facts.early_modules:
            lines.append(f"    {name}  ({e.path}:{e.line})")
    if facts.hooks:
        lines.append("  hooks:")
        lines.extend(f"    {h}" for h in facts.hooks)
    # names and lines from the image: a newline or ESC in a cpio name is shown, not obeyed
    return "".join(one_line(line) + "\n" for line in lines)


def listing(raw: Initramfs) -> str:
    """Every entry, like `lsinitrd` / `cpio -tv`."""
    out = []
    for e in raw.entries:
        target = f" -> {e.link_target}" if e.link_target is not None else ""
        out.append(f"{stat.filemode(e.mode)} {e.nlink:3} {e.size:10} {e.name}{target}")
    if raw.error:
        out.append(f"ERROR: {raw.error}")
    return "".join(one_line(line) + "\n" for line in out)
