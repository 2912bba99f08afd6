"""PB2xx: the `hide` parameter, as the kernel will parse it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from packaging.version import InvalidVersion, Version

from pciback_doctor.boot.hide import HideSource, effective_hide
from pciback_doctor.checks import Check, check
from pciback_doctor.facts.hide import HIDE_MAX
from pciback_doctor.facts.pci import Bdf
from pciback_doctor.model import Finding, Fix, Severity, Verdict

if TYPE_CHECKING:  # annotations only: `explain` must not import the boot model and readers
    from pciback_doctor.boot.analysis import Analysis

# Commit c3cb4709 ("xen-pciback: support wild cards in slot specifications") went into Linux 3.7.
WILDCARD_SINCE = Version("3.7")


@check(
    "PB201",
    Severity.ERROR,
    "Malformed hide value",
    """pcistub_init() parses hide with sscanf: each entry is (DDDD:BB:SS.F) or (BB:SS.F), hex numbers, slot
    below 0x20, function below 8, wildcards only as (BB:SS.*) or (BB:*.*); whitespace may separate entries but
    nothing else may (no commas). One bad entry and the backend prints 'Error parsing pci_devs_to_hide' and
    refuses to initialise: no device is hidden at all, and a module load fails. A built-in backend then
    never registers its `pciback` driver, so libxl (xl pci-assignable-list, XenServer/XCP-ng's xapi)
    reports 'Looks like pciback driver not loaded' (libxl_pci.c: /sys/bus/pci/drivers/pciback is
    missing). Two spellings seen in the wild: `82.0.0` (dots where BB:SS.F has a colon) and `0:0:0:0`
    (a SCSI address host:channel:target:lun from lsscsi, not a PCI one).""",
)
def malformed(chk: Check, a: Analysis) -> Iterator[Finding]:
    builtin = a.backend.backend.mode == "builtin"
    applied = [s for s in a.hides if not s.classic and (s.origin == "cmdline" or not builtin)]
    winner = effective_hide(applied, builtin=builtin, classic_alias=False)
    for source in a.hides:
        error = source.spec.error
        if error is None or len(source.value) > HIDE_MAX:
            continue
        hint, meant = _misspelt(source.value, error.position, a)
        good = "".join(f"({e})" for e in source.spec.entries) + (f"({meant})" if meant else "")
        # severity follows effect: a value a later one replaces (hide is a charp) breaks nothing
        replaced = winner is not None and source in applied and source is not winner
        effect = ""
        if source is winner:
            effect = (
                "\nthe built-in backend never registers its pciback driver: nothing is hidden, and "
                "xl pci-assignable-list (or xapi) says 'Looks like pciback driver not loaded'"
                if builtin
                else "\nloading xen-pciback fails (EINVAL): nothing is hidden"
            )
        yield chk.finding(
            f"{source.label}: {error.message} at character {error.position + 1}:\n{error.caret(source.value)}"
            + hint
            + effect
            + (f"\n(replaced by {winner.label}, so it has no effect)" if replaced and winner else ""),
            severity=Severity.WARNING if replaced else None,
            evidence=[source.evidence],
            fixes=[
                Fix(
                    "hide",
                    "write each device as (DDDD:BB:SS.F), one after the other, no commas"
                    + (f", e.g. {good}" if good else ""),
                )
            ],
        )


_SCSI = re.compile(r"\d+:\d+:\d+:\d+")  # host:channel:target:lun, as lsscsi and dmesg print it
_DOTTED = re.compile(r"(?:([0-9a-fA-F]{1,4})[.:])?([0-9a-fA-F]{1,2})\.([0-9a-fA-F]{1,2})\.([0-7])")


def _misspelt(value: str, position: int, a: Analysis) -> tuple[str, Bdf | None]:
    """What the entry the parse stopped in looks like, when it is a known mistake: (a line for the
    message, the PCI address it most likely means when that device exists)."""
    start = value.rfind("(", 0, position + 1)
    end = value.find(")", position)
    if start < 0 or end < 0:
        return "", None
    inner = value[start + 1 : end].strip()
    if _SCSI.fullmatch(inner):
        return (
            f"\n{inner} is a SCSI address (host:channel:target:lun, as lsscsi prints it), not a PCI one: "
            "the controller's address is in lspci -D (or readlink /sys/class/scsi_host/hostN/device)",
            None,
        )
    m = _DOTTED.fullmatch(inner)
    if m is None:
        return "", None
    bdf = Bdf(int(m.group(1) or "0", 16), int(m.group(2), 16), int(m.group(3), 16), int(m.group(4), 16))
    found = a.device(bdf)
    present = f" — {bdf} is here ({found.id or 'unknown id'}, {found.driver or 'no driver'})" if found else ""
    return (
        f"\n{inner} uses dots where a PCI address has colons (DDDD:BB:SS.F): did you mean ({bdf})?{present}",
        bdf if found else None,
    )


@check(
    "PB202",
    Severity.ERROR,
    "hide value too long",
    """hide is a charp module parameter; param_set_charp refuses values longer than 1024 characters
    (-ENOSPC), so the backend fails to initialise. Use wildcards ((BB:SS.*)) or a bridge to cover many
    devices, or bind the rest late.""",
)
def too_long(chk: Check, a: Analysis) -> Iterator[Finding]:
    for source in a.hides:
        if len(source.value) > HIDE_MAX:
            yield chk.finding(
                f"{source.label} is {len(source.value)} characters; the kernel takes at most {HIDE_MAX}",
                evidence=[source.evidence],
            )


@check(
    "PB203",
    Severity.ERROR,
    "hide only in modprobe.d while the backend is built in",
    """kmod never applies modprobe.d options to a built-in module, so 'options xen-pciback hide=...' does
    nothing when the backend is built in (CONFIG_XEN_PCIDEV_BACKEND=y on x86, CONFIG_XEN_PCIDEV_STUB=y on Arm). Put xen-pciback.hide=... on the dom0 kernel command line.""",
)
def modprobe_only_builtin(chk: Check, a: Analysis) -> Iterator[Finding]:
    if a.backend.backend.mode != "builtin":
        return
    in_config = [s for s in a.hides if s.origin != "cmdline" and not s.classic]
    on_cmdline = [s for s in a.hides if s.origin == "cmdline" and not s.classic]
    if in_config and not on_cmdline:
        # severity follows effect: harmless when what it names is claimed another way
        claimed = {d.bdf for d in a.devices if d.prediction.verdict is Verdict.CLAIMED}
        named = [
            Bdf(e.domain, e.bus, e.slot, e.func)
            for s in in_config
            for e in s.spec.intended()
            if e.slot is not None and e.func is not None
        ]
        yield chk.finding(
            "hide is set only in modprobe.d, which a built-in backend never reads",
            severity=Severity.WARNING if named and all(b in claimed for b in named) else None,
            evidence=[s.evidence for s in in_config],
            fixes=[
                Fix("cmdline", f"add xen-pciback.hide={in_config[-1].value} to the dom0 kernel command line")
            ],
        )


@check(
    "PB204",
    Severity.WARNING,
    "hide given in several places with different values",
    """The backend keeps only the last hide= it is given: for a module, modprobe.d options first, then the
    kernel command line's xen-pciback.hide= (kmod appends command-line options after the config's); for a
    built-in backend, only the command line counts. Devices in the other values are not hidden.""",
)
def conflicting(chk: Check, a: Analysis) -> Iterator[Finding]:
    builtin = a.backend.backend.mode == "builtin"
    applied = [s for s in a.hides if not s.classic and (s.origin == "cmdline" or not builtin)]
    # device sets, not strings: (04:00.0) and (0000:04:00.0) are one device to pcistub_init
    if len({_devices(s) for s in applied}) < 2:
        return
    winner = effective_hide(list(applied), builtin=builtin, classic_alias=False)
    assert winner is not None
    yield chk.finding(
        f"{len(applied)} different hide values; the one that wins is '{winner.value}' ({winner.label})",
        evidence=[s.evidence for s in applied],
    )


def _devices(source: HideSource) -> frozenset[tuple[int, int, int | None, int | None]] | str:
    if not source.spec.valid:
        return source.value  # a malformed value is its own (PB201 says why)
    return frozenset((e.domain, e.bus, e.slot, e.func) for e in source.spec.entries)


@check(
    "PB205",
    Severity.WARNING,
    "hide names a device that does not exist",
    """The device is not in sysfs. A typo in the bus/slot/function, a device that moved after a BIOS or slot
    change, or one that is powered down. The backend will hide nothing there.""",
)
def nonexistent(chk: Check, a: Analysis) -> Iterator[Finding]:
    if not a.system.sysfs:
        return
    known = {d.bdf for d in a.system.devices}
    for source in a.hides:
        for e in source.spec.entries:
            if e.slot is None or e.func is None:
                continue
            bdf = Bdf(e.domain, e.bus, e.slot, e.func)
            if bdf not in known:
                yield chk.finding(
                    f"{source.label} names {bdf}, which is not in sys/bus/pci/devices",
                    device=str(bdf),
                    evidence=[source.evidence],
                )


@check(
    "PB206",
    Severity.WARNING,
    "hide names a bridge",
    """pcistub_match() also matches a device whose parent bridge is listed, so hiding a bridge hands every
    device behind it to pciback - often more than intended (a USB or storage controller dom0 needs).""",
)
def bridge(chk: Check, a: Analysis) -> Iterator[Finding]:
    for source in a.hides:
        for e in source.spec.entries:
            for dev in a.system.devices:
                if dev.is_bridge and e.matches(dev.bdf.domain, dev.bdf.bus, dev.bdf.slot, dev.bdf.func):
                    behind = [str(d.bdf) for d in a.system.devices if d.parent == dev.bdf]
                    yield chk.finding(
                        f"{source.label} names the bridge {dev.bdf}; everything behind it becomes pciback's: {', '.join(behind) or 'nothing yet'}",
                        device=str(dev.bdf),
                        evidence=[source.evidence],
                    )


def _kernel_version(release: str | None) -> Version | None:
    if not release:
        return None
    head = release.split("-", 1)[0]
    try:
        return Version(head)
    except InvalidVersion:
        return None


@check(
    "PB207",
    Severity.WARNING,
    "Wildcard in hide on a kernel too old to accept it",
    """Wildcards ((BB:SS.*), (BB:*.*)) came with commit c3cb4709 in Linux 3.7. Older backends reject the entry
    as malformed and then hide nothing.""",
)
def old_wildcard(chk: Check, a: Analysis) -> Iterator[Finding]:
    version = _kernel_version(a.system.release)
    if version is None or version >= WILDCARD_SINCE:
        return
    for source in a.hides:
        if any(e.wildcard for e in source.spec.entries):
            yield chk.finding(
                f"{source.label} uses a wildcard, which kernel {a.system.release} rejects",
                evidence=[source.evidence],
            )
