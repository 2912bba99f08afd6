"""The vocabulary shared by readers, checks and renderers: evidence, findings, predictions."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class Evidence:
    """Where a fact came from: a path relative to the root (`IMAGE!inner` inside an initramfs)."""

    path: str
    line: int | None = None
    text: str = ""

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.text}" if self.text else where


class Severity(enum.IntEnum):
    INFO = 1
    WARNING = 2
    ERROR = 3

    @property
    def label(self) -> str:
        return self.name.lower()


# the ways a fix can hand devices to pciback (SPEC §8), in the order they are preferred
STRATEGIES = ("modprobe", "cmdline", "dracut", "late-binding", "qubes")  # qubes: rd.qubes.hide_pci


@dataclass(frozen=True)
class FileChange:
    """A file a fix writes, relative to the root, with its whole new content."""

    path: str
    content: str
    executable: bool = False
    # shell variables the file sets when sourced, as the doctor's reader evaluates it, word by word:
    # `fix --write` proves them on the text before writing and on the bytes read back after
    sets: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Fix:
    strategy: str
    description: str
    files: tuple[FileChange, ...] = ()
    commands: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    id: str
    severity: Severity
    title: str
    message: str
    device: str | None = None
    evidence: tuple[Evidence, ...] = ()
    fixes: tuple[Fix, ...] = ()
    waiver: str | None = None  # the justification of the waiver that covers it (facts/waivers.py)


class Verdict(enum.StrEnum):
    CLAIMED = "claimed"
    NOT_CLAIMED = "not-claimed"
    UNKNOWN = "unknown"


class Phase(enum.StrEnum):
    KERNEL = "kernel"
    INITRAMFS = "initramfs"
    ROOTFS = "rootfs"
    DOMAIN_START = "domain-start"


@dataclass(frozen=True)
class Prediction:
    verdict: Verdict
    phase: Phase | None
    winner: str | None
    reason: str
    evidence: tuple[Evidence, ...] = ()


@dataclass(frozen=True)
class DeviceReport:
    bdf: str
    id: str | None
    wanted_by: tuple[str, ...]
    native_driver: str | None
    native_mode: str  # builtin | module | none | unknown
    prediction: Prediction


@dataclass(frozen=True)
class Target:
    root: str
    kernel: str | None
    config: str | None
    initramfs: str | None
    cmdline: str | None
    cmdline_source: str | None
    boot_entry: str | None = None
    xen_cmdline: str | None = None
    platform: str | None = None  # os-release id of the root (debian, qubes, xcp-ng, …)
    platform_name: str | None = None  # as the system names itself
    arch: str | None = None  # the target kernel's architecture (x86_64, arm64, ...), when known
    arch_evidence: Evidence | None = None  # what says so: the config line, a module's ELF header
    # systemd runs inside the initramfs (dracut's hooks then run from its units): from the image,
    # else from the platform profile; None when neither tells
    initramfs_systemd: bool | None = None


@dataclass(frozen=True)
class Backend:
    mode: str  # builtin | module | missing | unknown
    module: str
    evidence: tuple[Evidence, ...] = ()


@dataclass(frozen=True)
class Report:
    target: Target
    backend: Backend
    devices: tuple[DeviceReport, ...]
    findings: tuple[Finding, ...]
    exit_code: int = 0
    scope: str = "dom0"  # dom0 (check) | kernel (the CI gate) | domu: what the report is about

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity is severity)
