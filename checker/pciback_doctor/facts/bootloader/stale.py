"""Staleness: does the generated `grub.cfg` entry still carry what `etc/default/grub` says?"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pciback_doctor.facts.bootloader.entry import BootEntry, _Notes
from pciback_doctor.facts.bootloader.grub_defaults import _ShellDefaults
from pciback_doctor.facts.bootloader.grub_menu import _GrubMenu
from pciback_doctor.facts.bootloader.grub_script import _Item
from pciback_doctor.model import Evidence


@dataclass(frozen=True)
class Staleness:
    """`etc/default/grub` says one thing, the generated `grub.cfg` another: update-grub not run."""

    kind: str  # "dom0-cmdline" | "xen-cmdline" | "cmdline" (a non-Xen entry) | "default"
    message: str
    missing: tuple[str, ...]  # in etc/default/grub, absent from grub.cfg
    extra: tuple[str, ...]  # in grub.cfg, absent from etc/default/grub
    evidence: tuple[Evidence, ...]


# Words the grub.d scripts add themselves (10_linux, 20_linux_xen): not from the variables.
_GENERATED = frozenset({"ro", "rw", "single", "recovery", "nomodeset", "dis_ucode_ldr"})


_GENERATED_PREFIX = ("root=", "init=", "rootflags=", "vt.handoff=", "flask=")


def _own_words(words: Iterable[str]) -> set[str]:
    return {w for w in words if w not in _GENERATED and not w.startswith(_GENERATED_PREFIX)}


def _stale_cmdline(
    entry: BootEntry,
    item: _Item,
    defaults: _ShellDefaults,
    menu: _GrubMenu,
    notes: _Notes,
) -> list[Staleness]:
    if not item.section.endswith(("10_linux", "20_linux_xen")):
        return []  # a hand-written entry (40_custom…) never sees the variables
    recovery = "recovery" in (entry.id or "") or "single" in entry.cmdline.split()
    raw = item.raw
    out: list[Staleness] = []

    def names(pairs: Sequence[tuple[str, str]]) -> list[str]:
        # 20_linux_xen: a non-empty *_XEN_REPLACE* variable replaces its Linux counterpart.
        chosen = []
        for plain, replace in pairs:
            var = defaults.get(replace) if replace else None
            # Unknown value: keep the replacement, so the check below skips rather than guesses.
            unknown = var is not None and (var.value is None or not var.certain)
            chosen.append(replace if var is not None and (var.value or unknown) else plain)
        return chosen

    linux_vars = [("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_XEN_REPLACE" if entry.is_xen else "")]
    if not recovery:
        linux_vars.append(
            (
                "GRUB_CMDLINE_LINUX_DEFAULT",
                "GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT" if entry.is_xen else "",
            )
        )
    loader = item.lines
    checks = [("dom0-cmdline" if entry.is_xen else "cmdline", names(linux_vars), loader.get("kernel"))]
    if entry.is_xen:
        xen_vars = ["GRUB_CMDLINE_XEN"] + ([] if recovery else ["GRUB_CMDLINE_XEN_DEFAULT"])
        checks.append(("xen-cmdline", xen_vars, loader.get("hypervisor")))
    for kind, var_names, line in checks:
        expected: list[str] = []
        evidence: list[Evidence] = []
        unknown = False
        for name in var_names:
            var = defaults.get(name)
            if var is None:
                continue
            if var.value is None or not var.certain:
                notes.add(f"{name} not evaluable; staleness of it not checked", var.path, var.line)
                unknown = True
                continue
            expected.extend(var.value.split())
            evidence.append(Evidence(var.path, var.line, f'{name}="{var.value}"'))
        if unknown or line is None:
            continue
        actual = raw.get(line, "").split()
        if actual:
            actual = actual[1:]  # the image path
        actual = [w for w in actual if not w.startswith("--") and w != "placeholder"]
        want, have = _own_words(expected), _own_words(actual)
        missing = tuple(sorted(want - have))
        extra = tuple(sorted(have - want))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"etc/default/grub has {', '.join(missing)} but grub.cfg lacks it")
            if extra:
                parts.append(f"grub.cfg has {', '.join(extra)} that etc/default/grub no longer sets")
            label = {"xen-cmdline": "Xen", "dom0-cmdline": "dom0", "cmdline": "kernel"}[kind]
            out.append(
                Staleness(
                    kind=kind,
                    message=f"{menu.path} not regenerated ({label} command line): "
                    + "; ".join(parts)
                    + " — run update-grub / grub-mkconfig",
                    missing=missing,
                    extra=extra,
                    evidence=(*evidence, Evidence(menu.path, line, raw.get(line, ""))),
                )
            )
    return out


def _stale_default(defaults: _ShellDefaults, menu: _GrubMenu) -> list[Staleness]:
    var = defaults.get("GRUB_DEFAULT")
    setting = menu.script.default_set
    if var is None or var.value is None or not var.certain or setting is None:
        return []
    line, raw = setting
    if menu.script.section_of(line) != "00_header" or "next_entry" in raw:
        return []  # a one-shot (grub-reboot) or hand-made default: not what 00_header writes
    current = raw.split("=", 1)[-1].strip().strip("'\"")
    # 00_header: `saved` becomes `${saved_entry}`, anything else is written as is.
    wanted = "${saved_entry}" if var.value == "saved" else var.value
    if current == wanted or (var.value == "saved" and "saved_entry" in current):
        return []
    return [
        Staleness(
            kind="default",
            message=f"{menu.path} not regenerated: GRUB_DEFAULT={var.value} but grub.cfg sets "
            f"default={current} — run update-grub / grub-mkconfig",
            missing=(var.value,),
            extra=(current,),
            evidence=(
                Evidence(var.path, var.line, f"GRUB_DEFAULT={var.value}"),
                Evidence(menu.path, line, raw),
            ),
        )
    ]
