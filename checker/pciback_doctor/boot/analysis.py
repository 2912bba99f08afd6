"""Put the facts through the boot model: backend, hide sources, wanted devices, predictions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pciback_doctor.boot.backend import BackendVerdict, backend_state
from pciback_doctor.boot.binders import binders_for
from pciback_doctor.boot.hide import HideSource, cmdline_hides, modprobe_hides
from pciback_doctor.boot.model import BootInputs, DevicePrediction, binder_context, predict_device
from pciback_doctor.facts.cmdline import parse_cmdline
from pciback_doctor.facts.pci import Bdf, PciDevice
from pciback_doctor.facts.target import System

if TYPE_CHECKING:  # annotations only: `kernel`/`domu` start without the image readers
    from pciback_doctor.facts.image import ImageFacts
    from pciback_doctor.facts.xl import PciSpec, XlConfig


@dataclass(frozen=True)
class Analysis:
    system: System
    backend: BackendVerdict
    hides: tuple[HideSource, ...]  # host modprobe.d first, then the command line: kernel order
    image: ImageFacts | None
    image_problem: str | None
    devices: tuple[DevicePrediction, ...]

    @property
    def domu_configs(self) -> tuple[XlConfig, ...]:
        return self.system.domu_configs

    def device(self, bdf: Bdf) -> PciDevice | None:
        return next((d for d in self.system.devices if d.bdf == bdf), None)


def wanted_devices(
    system: System, hides: list[HideSource], image: ImageFacts | None, backend_mode: str = "unknown"
) -> dict[Bdf, list[str]]:
    """Devices meant for passthrough: hide values anywhere, `--device`, the early binders' lists."""
    wanted: dict[Bdf, list[str]] = {}

    def want(bdf: Bdf, why: str) -> None:
        reasons = wanted.setdefault(bdf, [])
        if why not in reasons:
            reasons.append(why)

    known = [d.bdf for d in system.devices]
    for source in hides:
        why = "cmdline" if source.origin == "cmdline" else f"{source.origin}:{source.evidence.path}"
        for e in source.spec.intended():
            if e.slot is not None and e.func is not None:
                want(Bdf(e.domain, e.bus, e.slot, e.func), why)
            else:  # a wildcard names whatever exists at that address
                for bdf in known:
                    if e.matches(bdf.domain, bdf.bus, bdf.slot, bdf.func):
                        want(bdf, why)
    for device in system.offline_devices:
        want(device.bdf, "--device")
    # a hide token written in etc/default/grub but not yet in grub.cfg: meant, not yet in force
    for stale in system.next_boot.stale if system.next_boot else ():
        pending = parse_cmdline(
            " ".join(stale.missing), stale.evidence[0].path if stale.evidence else "etc/default/grub"
        )
        for source in cmdline_hides(pending):
            for e in source.spec.intended():
                if e.slot is not None and e.func is not None:
                    want(Bdf(e.domain, e.bus, e.slot, e.func), f"{pending.source} (not in grub.cfg yet)")
    for config in system.domu_configs:
        for spec in config.pci:
            for bdf in spec_devices(spec, known):
                want(bdf, f"xl:{config.path}")
    binders = binders_for(system, image)
    if binders:
        ctx = binder_context(system, backend_mode, image if image is not None and not image.error else None)
        for binder in binders:
            for bdf, take in binder.takes(ctx).items():
                if take.certain:
                    path = take.evidence.path
                    want(bdf, "cmdline" if path == system.cmdline_source else f"initramfs:{path}")
    return wanted


def spec_devices(spec: PciSpec, known: list[Bdf]) -> list[Bdf]:
    """The devices an xl `pci=` entry names; `F = *` means every function present."""
    if spec.domain is None or spec.bus is None or spec.slot is None:
        return []  # a `name=` entry: resolved by xl from its assignable list, not by address
    if spec.func is not None:
        return [Bdf(spec.domain, spec.bus, spec.slot, spec.func)]
    return [b for b in known if (b.domain, b.bus, b.slot) == (spec.domain, spec.bus, spec.slot)]


def seized(system: System) -> frozenset[Bdf]:
    known = [d.bdf for d in system.devices]
    return frozenset(b for c in system.domu_configs for s in c.pci if s.seize for b in spec_devices(s, known))


def analyse(system: System) -> Analysis:
    backend = backend_state(system)
    image, image_problem = system.image, system.image_problem
    hides = modprobe_hides(system.modprobe, "modprobe") + cmdline_hides(system.cmdline)
    image_hides = modprobe_hides(image.modprobe, "image") if image else []
    wanted = wanted_devices(system, hides + image_hides, image, backend.backend.mode)
    inputs = BootInputs(backend.backend.mode, image, None if image else image_problem, seized(system))
    by_bdf = {d.bdf: d for d in system.devices}
    for d in system.offline_devices:
        by_bdf.setdefault(d.bdf, d)
    devices = tuple(
        predict_device(system, inputs, bdf, by_bdf.get(bdf), tuple(reasons))
        for bdf, reasons in sorted(wanted.items())
    )
    return Analysis(system, backend, tuple(hides), image, image_problem, devices)
