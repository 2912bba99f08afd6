"""Qubes OS's early binder: dracut module `90qubes-pciback` (QubesOS/qubes-core-admin-linux,
dracut/modules.d/90qubes-pciback/qubes-pciback.sh), modelled from its source; the line numbers
below are those of that script.

What it does, in our words:
- module-setup.sh installs the script as cmdline hook 02, with lspci, grep and awk, and always puts
  xen-pciback into the image (`hostonly='' instmods`).
- Lines 21-31: with `rd.qubes.hide_all_usb` true (dracut getargbool, default false) it selects PCI
  class 02xx (network) and 0c03 (USB controllers); otherwise 02xx only, and it merely warns when
  `usbcore.authorized_default` is not false (getargbool, default true).
- Line 33: the selection is `lspci -mm -n` filtered by awk on the class field; lspci prints the
  slot without its domain for domain 0 (lspci.c show_slot_name) and with it otherwise.
- Lines 36-40: `rd.qubes.hide_pci=` is appended, commas turned into spaces; a character outside
  `[0-9a-f.:,]` only warns there, but line 44 calls `die` when the whole list holds a character
  outside `[0-9a-f.:]` and blanks: the boot stops.
- Lines 47-54: `rd.qubes.dom0_usb=` lists exceptions (a bogus one is dropped with a warning).
- Lines 56-71: per word, unless it equals an exception *as a string*, it writes `0000:WORD` to the
  current driver's unbind, to pciback's new_slot and bind: a word that already has a domain
  becomes `0000:0000:…`, which new_slot rejects (pci_stub.c str_to_slot) and bind cannot find.
- Lines 56-83: the loop runs in `( set -e … ) || …`. bash ignores `set -e` inside a command whose
  status a `||` list tests (bash manual, "The Set Builtin", -e), so a failed write does not stop
  the loop: the subshell's status is the last command's, the bind of the last word not skipped.
  Only if that one fails does line 79 call `die` (under Xen, /sys/hypervisor/type = xen).
A device it binds is pciback's from the cmdline hook on: a built-in driver is unbound first, and
udev has not started, so no module-backed driver competes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from pciback_doctor.boot.binders import BinderContext, BootStop, Take, hook_priority, hook_stage
from pciback_doctor.facts.cmdline import Cmdline
from pciback_doctor.facts.pci import Bdf, PciDevice, parse_bdf
from pciback_doctor.model import Evidence

QUBES_HOOK = "qubes-pciback.sh"  # inst_hook cmdline 02 → usr/lib/dracut/hooks/cmdline/02-qubes-pciback.sh
HIDE_PCI = "rd.qubes.hide_pci"
HIDE_ALL_USB = "rd.qubes.hide_all_usb"
DOM0_USB = "rd.qubes.dom0_usb"
USB_AUTHORIZED = "usbcore.authorized_default"
_LIST_CHARS = set("0123456789abcdef.:,")  # lines 38 and 48: `*[!0-9a-f.:,]*` is bogus
_WORD_CHARS = set("0123456789abcdef.:") | {" ", "\n"}  # line 44: `^[0-9a-f.:$ws]+$`
_SYSFS_NAME = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")  # the kernel's dev_name


def getarg(cmdlines: tuple[Cmdline, ...], key: str) -> tuple[str, Evidence] | None:
    """dracut-lib.sh getarg → dracut-getarg (dracut-util.c): the key exactly (no `-`/`_` folding),
    the last occurrence wins, a bare key gives an empty value."""
    found = None
    for cmd in cmdlines:
        for p in cmd.params:
            if p.key == key:
                found = (p.value or "", cmd.evidence(p))
    return found


def getargbool(cmdlines: tuple[Cmdline, ...], default: bool, key: str) -> bool:
    """dracut-lib.sh getargbool: absent → default; `0`, `no`, `off` → false; anything else
    (a bare key, an empty value, `2`) → true."""
    got = getarg(cmdlines, key)
    if got is None:
        return default
    return got[0] not in ("0", "no", "off")


@dataclass(frozen=True)
class Word:
    """One word of the hook's HIDE_PCI list and what its writes do."""

    text: str
    origin: str  # "class 02xx" | "rd.qubes.hide_pci"
    evidence: Evidence
    skipped: bool  # equal to a rd.qubes.dom0_usb word
    intended: Bdf | None  # the device the word names (as lspci would print it)
    binds: bool
    problem: str = ""


@dataclass(frozen=True)
class Selection:
    """The hook's run on one command line and one set of devices."""

    hide_all_usb: bool
    usb_restricted: bool  # hide_all_usb, or usbcore.authorized_default false (USBguard)
    words: tuple[Word, ...]
    exceptions: tuple[tuple[str, Evidence], ...]  # rd.qubes.dom0_usb words
    warnings: tuple[tuple[str, Evidence | None], ...]  # what the hook warns about, with its source
    unknown_class: tuple[Bdf, ...]  # devices whose class (so whether lspci selects them) is unknown
    stop: BootStop | None


def lspci_slot(bdf: Bdf) -> str:
    """`lspci -mm -n`'s first field: the domain only when it is not 0 (lspci.c show_slot_name)."""
    slot = f"{bdf.bus:02x}:{bdf.slot:02x}.{bdf.func:x}"
    return slot if bdf.domain == 0 else f"{bdf.domain:04x}:{slot}"


def selected_by_class(device: PciDevice, hide_all_usb: bool) -> bool:
    """awk `/^[^ ]* "02/` or `/^[^ ]* "0(2|c03)/` on lspci's 4-digit class field."""
    cls = device.pci_class
    assert cls is not None
    return (cls >> 16) == 0x02 or (hide_all_usb and (cls >> 8) == 0x0C03)


def run_hook(hook: Evidence, ctx: BinderContext) -> Selection:
    sel = _run_hook(hook, ctx)
    if ctx.shell is not None and ctx.shell.text == "dash":
        # dracut sources hooks in its init shell, whatever their #!: under dash line 33's
        # `set -o pipefail` is an illegal option, $(…) fails and the hook dies (seen in the boot lab)
        reason = (
            "the image's /bin/sh is dash, not bash (dracut's bash module is missing): `set -o pipefail` "
            "fails and the hook calls die ('Cannot obtain list of PCI devices to unbind.')"
        )
        return replace(sel, stop=BootStop(reason, (hook, ctx.shell)))
    return sel


def _run_hook(hook: Evidence, ctx: BinderContext) -> Selection:
    cmds = ctx.cmdlines
    warnings: list[tuple[str, Evidence | None]] = []
    hide_all_usb = getargbool(cmds, False, HIDE_ALL_USB)
    usb_restricted = hide_all_usb or not getargbool(cmds, True, USB_AUTHORIZED)
    if not usb_restricted:
        warnings.append(
            (
                "USB in dom0 is not restricted (no rd.qubes.hide_all_usb, no usbcore.authorized_default=0)",
                None,
            )
        )
    class_label = "class 02xx/0c03" if hide_all_usb else "class 02xx"
    raw: list[tuple[str, str, Evidence]] = []
    unknown: list[Bdf] = []
    for device in sorted(ctx.devices, key=lambda d: d.bdf):  # lspci sorts by domain, bus, slot, func
        if device.pci_class is None:
            unknown.append(device.bdf)
        elif selected_by_class(device, hide_all_usb):
            raw.append((lspci_slot(device.bdf), class_label, hook))
    manual = getarg(cmds, HIDE_PCI)
    text = "\n".join(w for w, _, _ in raw) + " "
    if manual is not None:
        value, evidence = manual
        if set(value) - _LIST_CHARS:
            warnings.append(("Bogus rd.qubes.hide_pci option", evidence))
        spaced = value.replace(",", " ")
        text += spaced
        raw += [(w, HIDE_PCI, evidence) for w in spaced.split()]
    exceptions: list[tuple[str, Evidence]] = []
    dom0_usb = getarg(cmds, DOM0_USB)
    if dom0_usb is not None and dom0_usb[0]:
        if set(dom0_usb[0]) - _LIST_CHARS:
            warnings.append(("Bogus rd.qubes.dom0_usb option: the hook ignores it", dom0_usb[1]))
        else:
            exceptions = [(w, dom0_usb[1]) for w in dom0_usb[0].replace(",", " ").split()]
            usb_restricted = True
    if set(text) - _WORD_CHARS:
        bad = "".join(sorted(set(text) - _WORD_CHARS))
        reason = f"rd.qubes.hide_pci holds characters outside [0-9a-f.:,] ({bad!r}): 'Bogus PCI device list'"
        bogus = BootStop(reason, (hook, *((manual[1],) if manual else ())))
        return Selection(
            hide_all_usb, usb_restricted, (), tuple(exceptions), tuple(warnings), tuple(unknown), bogus
        )
    known = {d.bdf for d in ctx.devices}
    names = {e for e, _ in exceptions}
    words = []
    for text_word, origin, evidence in raw:
        target = f"0000:{text_word}"
        intended = parse_bdf(text_word) if re.fullmatch(r"[0-9a-f.:]+", text_word) else None
        problem = ""
        if not ctx.backend_up:
            problem = ctx.backend_problem
        elif not _SYSFS_NAME.fullmatch(target):
            problem = f"it writes '{target}' to pciback's new_slot and bind, which name no device"
        elif known and intended not in known:
            problem = f"no device {target} exists: bind fails"
        skipped = text_word in names
        words.append(Word(text_word, origin, evidence, skipped, intended, not problem, problem))
    stop: BootStop | None = None
    # the loop's status is its last command's: the last word's bind, or `continue` (0) when the
    # last word is a dom0_usb exception
    last = words[-1] if words else None
    if last is not None and not last.skipped and not last.binds:
        stop = BootStop(
            # the message names no device: $dev was set in the subshell (seen in the boot lab)
            f"the last device in its list, '{last.text}', fails ({last.problem}), and the hook calls die "
            "('Cannot unbind  PCI devices.')",
            (hook, last.evidence),
        )
    return Selection(
        hide_all_usb, usb_restricted, tuple(words), tuple(exceptions), tuple(warnings), tuple(unknown), stop
    )


# the hook's run, kept for the context it was made for (the model asks once per device)
_RUNS: dict[int, tuple[BinderContext, Evidence, Selection]] = {}
_TAKES: dict[int, tuple[Selection, dict[Bdf, Take]]] = {}


@dataclass(frozen=True)
class QubesPciback:
    """Qubes OS's `90qubes-pciback` found in an image (its hook `cmdline/02-qubes-pciback.sh`)."""

    hook: Evidence
    name: str = "Qubes OS's 90qubes-pciback"
    failure: str = "boot stops"  # when the last device fails; an earlier one is skipped silently
    claim_reason: str = (
        "Qubes OS's 90qubes-pciback binds it at the cmdline hook (02), before udev starts, "
        "unbinding any built-in driver first"
    )

    @property
    def stage(self) -> str:
        return hook_stage(self.hook.path)

    @property
    def priority(self) -> int:
        return hook_priority(self.hook.path)

    def selection(self, ctx: BinderContext) -> Selection:
        found = _RUNS.get(id(ctx))
        if found is None or found[0] is not ctx or found[1] != self.hook:
            _RUNS.clear()
            found = _RUNS[id(ctx)] = (ctx, self.hook, run_hook(self.hook, ctx))
        return found[2]

    def takes(self, ctx: BinderContext) -> dict[Bdf, Take]:
        sel = self.selection(ctx)
        found = _TAKES.get(id(sel))
        if found is None or found[0] is not sel:
            _TAKES.clear()
            found = _TAKES[id(sel)] = (sel, self._takes(sel))
        return found[1]

    def _takes(self, sel: Selection) -> dict[Bdf, Take]:
        found: dict[Bdf, Take] = {}
        for word in sel.words:
            if word.intended is None or word.skipped:
                continue
            before = found.get(word.intended)
            if before is None or (word.binds and not before.binds):
                found[word.intended] = Take(word.intended, word.evidence, word.binds, word.problem)
        for bdf in sel.unknown_class:
            found.setdefault(
                bdf,
                Take(
                    bdf,
                    self.hook,
                    False,
                    "its PCI class is unknown: the hook takes it if it is 02xx"
                    + (" or 0c03" if sel.hide_all_usb else ""),
                    certain=False,
                ),
            )
        return found

    def stops(self, ctx: BinderContext) -> BootStop | None:
        return self.selection(ctx).stop
