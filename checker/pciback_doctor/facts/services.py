"""What loads the backend or binds devices once the real root is up (SPEC §3, phase 3):
modules-load.d, Debian's /etc/modules, xencommons, and late-binding units or rc.local scripts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pciback_doctor.facts.pci import Bdf, parse_bdf
from pciback_doctor.model import Evidence

BACKEND_WORD = re.compile(r"\b(xen[-_]pciback)\b")
_BDF_WORD = re.compile(r"\b((?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])\b")
# What a late-binding script does with a BDF: pciback's new_slot/bind, driver_override, or xl.
_BINDS = re.compile(r"pciback/(new_slot|bind)|driver_override|pci-assignable-add")
# systemd-modules-load's search path (modules-load.d(5)), highest priority first
MODULES_LOAD_DIRS = (
    "etc/modules-load.d",
    "run/modules-load.d",
    "usr/local/lib/modules-load.d",
    "usr/lib/modules-load.d",
    "lib/modules-load.d",
)


@dataclass(frozen=True)
class BackendLoader:
    kind: str  # modules-load.d | etc/modules | xencommons
    evidence: Evidence


@dataclass(frozen=True)
class LateBinding:
    bdf: Bdf
    before_domains: bool  # ordered before the Xen domain services
    evidence: Evidence


_LOOP = re.compile(r"\bfor\s+([A-Za-z_]\w*)\s+in\s+\"?\$\{?([A-Za-z_]\w*)\}?")
_ASSIGN = re.compile(r"^\s*(?:export\s+)?([A-Za-z_]\w*)=(.*)$")


def backend_loaders(
    kind: str, path: str, text: str, settings: Sequence[tuple[str, str]] = ()
) -> list[BackendLoader]:
    """Lines that load the backend: `xen-pciback` in modules-load.d/etc/modules, modprobe in scripts
    (also through a loop over a module list, as xencommons does with BACKEND_MODULES; `settings`
    are the (path, text) files the script sources after its own defaults, e.g. etc/default/xencommons)."""
    found = _loop_loaders(path, text, settings) if kind == "xencommons" else []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if kind == "xencommons" and "modprobe" not in stripped:
            continue
        if BACKEND_WORD.search(stripped):
            found.append(BackendLoader(kind, Evidence(path, number, stripped)))
    return found


def _loop_loaders(path: str, text: str, settings: Sequence[tuple[str, str]]) -> list[BackendLoader]:
    """`for mod in $BACKEND_MODULES; do modprobe "$mod"; done` (xencommons.in): a loader when the
    list's value in force (the script's default, then the sourced settings: last one wins) names
    the backend."""
    lines = text.split("\n")
    lists = set()
    for number, line in enumerate(lines):
        m = _LOOP.search(line)
        body = " ".join(lines[number : number + 4])
        if m and "modprobe" in body and f"${m.group(1)}" in body.replace("${", "$").replace("}", ""):
            lists.add(m.group(2))
    if not lists:
        return []
    value: dict[str, tuple[str, Evidence]] = {}
    for where, content in ((path, text), *settings):
        for number, line in enumerate(content.split("\n"), 1):
            m = _ASSIGN.match(line)
            if m and m.group(1) in lists:
                value[m.group(1)] = (m.group(2), Evidence(where, number, line.strip()))
    return [
        BackendLoader("xencommons", evidence)
        for words, evidence in value.values()
        if BACKEND_WORD.search(words) and not words.lstrip().startswith("#")
    ]


def late_bindings(path: str, text: str, before_domains: bool) -> list[LateBinding]:
    """BDFs a script hands to pciback: a BDF on a line that writes new_slot/bind/driver_override
    or runs `xl pci-assignable-add` (a BDF held in a variable is found on its assignment line
    when the script also has such a write)."""
    lines = text.splitlines()
    if not any(_BINDS.search(line) for line in lines):
        return []
    found = []
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("#"):
            continue
        for match in _BDF_WORD.finditer(line):
            bdf = parse_bdf(match.group(1))
            if bdf is not None:
                found.append(LateBinding(bdf, before_domains, Evidence(path, number, line.strip())))
    return found


@dataclass(frozen=True)
class Unit:
    path: str
    exec_paths: tuple[str, ...]
    before_domains: bool
    inline: str  # the ExecStart command lines themselves


def parse_unit(path: str, text: str, domain_services: Sequence[str]) -> Unit:
    """`domain_services`: the units that start the domains on this platform (Platform.domain_services)."""
    execs: list[str] = []
    commands: list[str] = []
    before = False
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        key = key.strip()
        if not eq:
            continue
        if key in ("ExecStart", "ExecStartPre", "ExecStartPost"):
            command = value.strip().lstrip("-@:+!")
            commands.append(command)
            words = command.split()
            for word in words[:3]:
                if word.startswith("/") and not word.startswith("/sys"):
                    execs.append(word)
                    break
        elif key == "Before" and any(s in value.split() for s in domain_services):
            before = True
    return Unit(path, tuple(execs), before, "\n".join(commands))
