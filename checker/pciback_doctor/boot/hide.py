"""Where `hide` is written, and which value the backend actually gets (SPEC §3).

A built-in backend reads `xen_pciback.hide` from the kernel command line only (parse_args,
`-` = `_`). A module gets its modprobe.d `options` first and the command line's
`xen-pciback.hide=` after them (kmod: libkmod-config.c kcmdline parsing); the last `hide=` the
kernel parses wins (param_set_charp). The classic XenLinux name `pciback` reaches the module only
when it is loaded under that name through `alias pciback xen_pciback` (kmod matches options by
module name or by the alias it was requested as).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from pciback_doctor.facts.cmdline import Cmdline, parse_cmdline
from pciback_doctor.facts.hide import HideSpec, parse_hide
from pciback_doctor.facts.modprobe import ModprobeConfig
from pciback_doctor.model import Evidence

BACKEND_NAMES = ("xen_pciback", "pciback")


@dataclass(frozen=True)
class HideSource:
    origin: str  # "cmdline" | "modprobe" (host) | "image" (the initramfs' modprobe.d)
    classic: bool  # spelled with the XenLinux module name `pciback`
    spec: HideSpec
    evidence: Evidence

    @property
    def value(self) -> str:
        return self.spec.value

    @property
    def label(self) -> str:
        name = "pciback" if self.classic else "xen-pciback"
        return (
            f"{name}.hide on the command line"
            if self.origin == "cmdline"
            else (f"options {name} hide= in {self.evidence.path}")
        )


def cmdline_hides(cmdline: Cmdline | None) -> list[HideSource]:
    return [] if cmdline is None else list(_cmdline_hides(cmdline))


def modprobe_hides(config: ModprobeConfig, origin: str) -> list[HideSource]:
    return list(_modprobe_hides(config, origin))


# the boot model asks once per device and phase: parse each configuration once (linear in devices)
@functools.lru_cache(maxsize=16)
def _cmdline_hides(cmdline: Cmdline) -> tuple[HideSource, ...]:
    return tuple(
        HideSource("cmdline", p.module == "pciback", parse_hide(p.value or ""), cmdline.evidence(p))
        for p in cmdline.params
        if p.module in BACKEND_NAMES and p.param == "hide"
    )


@functools.lru_cache(maxsize=16)
def _modprobe_hides(config: ModprobeConfig, origin: str) -> tuple[HideSource, ...]:
    out = []
    for d in config.directives:
        if d.command != "options" or d.module not in BACKEND_NAMES:
            continue
        # the options string reaches the kernel's parse_args: same tokenising as the command line
        for p in parse_cmdline(d.args, d.evidence.path).params:
            if p.key.replace("-", "_") == "hide":
                out.append(HideSource(origin, d.module == "pciback", parse_hide(p.value or ""), d.evidence))
    return tuple(out)


def effective_hide(sources: list[HideSource], builtin: bool, classic_alias: bool) -> HideSource | None:
    """The `hide` value the backend ends up with; `sources` in the order the kernel sees them."""
    applied = [
        s
        for s in sources
        if (s.origin == "cmdline" or not builtin) and (not s.classic or (classic_alias and not builtin))
    ]
    return applied[-1] if applied else None
