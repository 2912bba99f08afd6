"""Simulate the next boot phase by phase and predict, per device, who owns it (SPEC §3).

Each phase either settles the device (claimed by pciback, or bound by a native driver that a later
module load never steals: the driver core only probes unbound devices) or hands it to the next
phase. What the model saw on the way is recorded as `Observation`s; the PB3xx/PB4xx checks turn
those into findings, so the rules live here once and the checks stay small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pciback_doctor.boot.binders import BinderContext, binders_for
from pciback_doctor.boot.hide import HideSource, cmdline_hides, effective_hide, modprobe_hides
from pciback_doctor.boot.native import PCIBACK_DRIVER, NativeDriver, cmdline_blacklist, resolve_native
from pciback_doctor.facts.cmdline import Cmdline
from pciback_doctor.facts.modprobe import ModprobeConfig, install_commands
from pciback_doctor.facts.modules import ModuleTree, normalize
from pciback_doctor.facts.pci import Bdf, PciDevice, parse_bdf
from pciback_doctor.facts.services import LateBinding
from pciback_doctor.facts.target import BACKEND, System
from pciback_doctor.model import Evidence, Phase, Prediction, Verdict

if TYPE_CHECKING:  # annotations only: `kernel`/`domu` start without the image readers
    from pciback_doctor.facts.builtin_pci import BuiltinPciDrivers
    from pciback_doctor.facts.image import ImageFacts


@dataclass(frozen=True)
class Observation:
    """Something the model relied on or ran into, keyed for the checks (`kind`)."""

    kind: str
    message: str
    evidence: tuple[Evidence, ...] = ()


@dataclass(frozen=True)
class Ordering:
    """A way the backend gets loaded before the native driver (or at all) in one phase."""

    mechanism: str  # softdep | install | rd.driver.pre | early-modules | modules-load.d | modules_load
    loaded_as: str  # the name modprobe is asked for (kmod applies options of that alias too)
    evidence: tuple[Evidence, ...]
    works: bool
    problem: str = ""
    before_udev: bool = True  # initramfs-tools loads its module list only after udev coldplug
    race: bool = False  # runs with no ordering against udev coldplug (systemd-modules-load)


@dataclass(frozen=True)
class DevicePrediction:
    bdf: Bdf
    device: PciDevice | None
    wanted_by: tuple[str, ...]
    native: NativeDriver
    prediction: Prediction
    observations: tuple[Observation, ...] = field(default=())


def _resolves_to_backend(name: str, config: ModprobeConfig) -> bool:
    name = normalize(name)
    if name == BACKEND:
        return True
    return any(normalize(d.args) == BACKEND for d in config.aliases_for(name))


def orderings_for(native: str, config: ModprobeConfig) -> list[Ordering]:
    """softdep / install rules that load the backend when `native` is requested (kmod:
    softdep beats install for the same module; only the first matching line of each counts)."""
    found: list[Ordering] = []
    soft = config.softdep(native)
    if soft is not None:
        names = [n for n in soft.pre if n in (BACKEND, "pciback") or _resolves_to_backend(n, config)]
        if names:
            works = _resolves_to_backend(names[0], config)
            problem = "" if works else f"softdep loads '{names[0]}', but no module of that name exists"
            found.append(Ordering("softdep", names[0], (soft.directive.evidence,), works, problem))
    install = config.install(native)
    if install is not None:
        found.append(_install_ordering(native, install.args, install.evidence, config))
    return found


def _install_ordering(native: str, command: str, evidence: Evidence, config: ModprobeConfig) -> Ordering:
    loads_backend: str | None = None
    loads_native = recursion = False
    for words in install_commands(command):
        prog = words[0].rsplit("/", 1)[-1]
        if prog == "modprobe":
            targets = [w for w in words[1:] if not w.startswith("-")]
            flags = [w for w in words[1:] if w.startswith("-")]
            for t in targets:
                t = normalize(t.replace("$CMDLINE_OPTS", ""))
                if t == normalize(native):
                    if any(f in ("--ignore-install", "-i") for f in flags):
                        loads_native = True
                    else:
                        recursion = True
                elif t in (BACKEND, "pciback") or _resolves_to_backend(t, config):
                    loads_backend = loads_backend or t
        elif prog == "insmod" and any(normalize(native) in normalize(w) for w in words[1:]):
            loads_native = True
    if loads_backend is None:
        return Ordering("install", "", (evidence,), False, "the install rule never loads xen-pciback")
    if not _resolves_to_backend(loads_backend, config):
        problem = f"the install rule loads '{loads_backend}', but no module of that name exists any more"
        return Ordering("install", loads_backend, (evidence,), False, problem)
    if recursion:
        problem = f"the install rule runs 'modprobe {native}' without --ignore-install: it calls itself"
        return Ordering("install", loads_backend, (evidence,), False, problem)
    if not loads_native:
        problem = f"the install rule never loads {native} itself (no 'modprobe --ignore-install {native}')"
        return Ordering("install", loads_backend, (evidence,), True, problem)
    return Ordering("install", loads_backend, (evidence,), True)


MODULES_LOAD_UNIT = "systemd-modules-load.service"
PRE_UDEV_UNIT = "dracut-pre-udev.service"
_DRIVER_PRE_MISSING = {
    False: "rd.driver.pre needs dracut's kernel-modules code in the image, and it is missing",
    True: "rd.driver.pre needs dracut-pre-udev.service (dracut's dracut-systemd module) in the image, "
    "and it is missing or does not run",
}


def _pre_udev_runs(image: ImageFacts, kernel_cmdline: Cmdline | None) -> bool:
    """Whether dracut-pre-udev.service runs, the unit that loads rd.driver.pre in an image with
    systemd (90kernel-modules/module-setup.sh installs parse-kernel.sh only without systemd;
    98dracut-systemd/dracut-pre-udev.sh modprobes each rd.driver.pre). Its conditions
    (dracut-pre-udev.service): any of an rd.driver.pre/.blacklist/.post or rd.break=pre-udev key on
    the kernel's own command line (systemd reads /proc/cmdline, not dracut's cmdline.d), an
    etc/cmdline.d/*.conf in the image, or a non-empty pre-udev hook directory."""
    if PRE_UDEV_UNIT not in image.wanted_units:
        return False
    keys = ("rd.driver.pre", "rd.driver.blacklist", "rd.driver.post")
    on_kernel_cmdline = kernel_cmdline is not None and (
        any(kernel_cmdline.get(k) for k in keys)
        or any(p.value == "pre-udev" for p in kernel_cmdline.get("rd.break"))
    )
    conf_d = any("!etc/cmdline.d/" in c.source for c in image.cmdline_d)
    hooks = any("/hooks/pre-udev/" in h for h in image.hooks)
    return on_kernel_cmdline or conf_d or hooks


def _covers(source: HideSource | None, bdf: Bdf, parents: Sequence[Bdf]) -> bool:
    # pcistub_match(): a listed bridge makes every device behind it match
    if source is None or not source.spec.valid:
        return False
    return any(source.spec.matches(b.domain, b.bus, b.slot, b.func) for b in (bdf, *parents))


@dataclass(frozen=True)
class BootInputs:
    """Everything the model needs besides the system facts."""

    backend_mode: str  # builtin | module | missing | unknown
    image: ImageFacts | None
    image_problem: str | None  # why there is no image to look at
    seize: frozenset[Bdf] = frozenset()


class _Device:
    """The simulation for one device; methods are the phases."""

    def __init__(self, system: System, inputs: BootInputs, bdf: Bdf, device: PciDevice | None) -> None:
        self.system, self.inputs, self.bdf, self.device = system, inputs, bdf, device
        self.obs: list[Observation] = []
        self.parents = _parents(system, device)
        self.native = _native(
            device,
            system.modules,
            system.modprobe,
            system.root.is_live and system.release == system.running_release,
            system.builtin_pci(),
        )

    def observe(self, kind: str, message: str, *evidence: Evidence) -> None:
        self.obs.append(Observation(kind, message, tuple(evidence)))

    # -- results -------------------------------------------------------------------------------
    def claimed(self, phase: Phase, reason: str, *evidence: Evidence) -> Prediction:
        return Prediction(Verdict.CLAIMED, phase, PCIBACK_DRIVER, reason, tuple(evidence))

    def lost(self, phase: Phase | None, reason: str, *evidence: Evidence) -> Prediction:
        # before giving up on the device, the stealers that unbind it later still get their turn
        stolen = self.stealers(after=phase or Phase.KERNEL)
        if stolen is not None:
            return stolen
        winner = self.native.name or "none"
        return Prediction(Verdict.NOT_CLAIMED, phase, winner, reason, tuple(evidence))

    def unknown(self, phase: Phase | None, reason: str, *evidence: Evidence) -> Prediction:
        stolen = self.stealers(after=phase or Phase.KERNEL)
        if stolen is not None and stolen.verdict is Verdict.CLAIMED:
            return stolen
        return Prediction(Verdict.UNKNOWN, phase, None, reason, tuple(evidence))

    # -- the phases ----------------------------------------------------------------------------
    def predict(self) -> Prediction:
        mode = self.inputs.backend_mode
        cmd = self.system.cmdline
        if mode == "missing":
            return self.lost(Phase.KERNEL, "the target kernel has no PCI backend (xen-pciback)")
        if mode == "unknown" and (broken := self.system.backend_module_problem) is not None:
            return self.unknown(None, f"the backend module cannot be used ({broken.text})", broken)
        if mode == "unknown":
            return self.unknown(
                None, "whether the kernel has the PCI backend is unknown (no config, no module tree)"
            )
        if self.device is None and self.system.sysfs:
            # sysfs was there to look at and lists no such device (PB205, PB508): nothing binds
            # what is not there; whether it will be there at the next boot is not known
            return Prediction(
                Verdict.UNKNOWN,
                None,
                None,
                "not in sysfs: no driver takes a device that is not there (a typo, or a card that "
                "moved); give --device BDF=VVVV:DDDD:CCCCCC if it will be there at the next boot",
            )
        bare = self.system.boots_without_xen
        if bare is not None and mode == "module":
            # xen_pcibk_init returns -ENODEV unless xen_initial_domain(): outside dom0 the module
            # never loads, so no pciback driver exists for a hook or a unit to bind to either
            # (a built-in backend is another matter: pcistub_init runs at fs_initcall either way)
            return Prediction(
                Verdict.NOT_CLAIMED,
                Phase.KERNEL,
                self.native.name or "none",
                f"the next boot starts '{bare.title}', Linux without Xen: xen-pciback refuses to "
                "load outside dom0 (xen_pcibk_init returns -ENODEV)",
                bare.evidence[:1],
            )
        if self.system.cmdline is None:
            self.observe("no-cmdline", "no kernel command line for the next boot")
        if mode == "builtin":
            hide = effective_hide(cmdline_hides(cmd), builtin=True, classic_alias=False)
            if hide is not None and not hide.spec.valid:
                self.observe("hide-refused", "the built-in backend refuses to register", hide.evidence)
                return self.lost(
                    Phase.KERNEL if self.native.mode == "builtin" else None,
                    "the hide value is malformed, so the built-in backend fails to initialise "
                    "(pcistub_init returns -EINVAL) and never claims anything",
                    hide.evidence,
                )
            if _covers(hide, self.bdf, self.parents):
                assert hide is not None
                return self.claimed(
                    Phase.KERNEL,
                    "the built-in backend reads xen-pciback.hide at fs_initcall, before any device driver",
                    hide.evidence,
                )
        # built-in drivers bind at their device initcall; the driver core never hands a bound
        # device to a driver registered later (drivers/base/dd.c only probes unbound devices)
        if self.native.mode == "builtin":
            if mode == "module":
                self.observe(
                    "native-builtin",
                    f"{self.native.name} is built into the kernel and binds at boot, before any module loads",
                    *self.native.evidence,
                )
            return self.lost(
                Phase.KERNEL,
                f"{self.native.name} is built in and binds the device during kernel init",
                *self.native.evidence,
            )
        outcome = self.initramfs()
        if self.native.builtin_unknown and outcome.verdict is Verdict.CLAIMED:
            # a built-in driver the doctor cannot see may bind at its device initcall, before any
            # module loads; only a binder that unbinds whatever holds the device is still sure
            stolen = self.stealers(after=Phase.KERNEL)
            if stolen is None or stolen.verdict is not Verdict.CLAIMED:
                return Prediction(
                    Verdict.UNKNOWN,
                    Phase.KERNEL,
                    None,
                    f"{self.native.note}; if none does: {outcome.reason}",
                    outcome.evidence,
                )
        return outcome

    def initramfs(self) -> Prediction:
        image = self.inputs.image
        if image is None:
            # no image to read, but one the platform always puts a binder into (Qubes OS)
            hook = self.early_binders(None)
            if hook is not None:
                return hook
            if self.inputs.backend_mode == "module" and self.native.mode in ("module", "unknown"):
                problem = self.inputs.image_problem or "no initramfs"
                # Whatever the image holds, a native driver that nothing orders wins either there or
                # from the real root: that verdict does not depend on the image.
                later = self.rootfs()
                if (
                    later.verdict is Verdict.NOT_CLAIMED
                    and later.winner == self.native.name
                    and self.native.name
                ):
                    return Prediction(
                        Verdict.NOT_CLAIMED,
                        None,
                        later.winner,
                        f"{later.reason} (from the initramfs if it holds {self.native.name}, else from the real root)",
                        later.evidence,
                    )
                self.obs = [o for o in self.obs if o.kind != "unordered"]
                self.observe("no-image", problem)
                return self.unknown(
                    Phase.INITRAMFS,
                    f"{problem}: whether {self.native.name or 'a native driver'} loads there before xen-pciback cannot be told",
                )
            return self.rootfs()
        if image.error:
            return self.unknown(Phase.INITRAMFS, f"the initramfs cannot be read: {image.error}")
        # dracut's init runs the cmdline hooks before pre-udev and udevd: early binders come first.
        # With systemd as /init the same holds: dracut-cmdline.service is Before=dracut-pre-udev.service,
        # which is Before=systemd-udevd.service (98dracut-systemd/*.service; seen in the lab)
        hook = self.early_binders(image)
        if hook is not None:
            return hook
        native = self.native.name
        native_in_image = native is not None and self.native.mode == "module" and native in image.modules
        backend_in_image = self.inputs.backend_mode == "builtin" or BACKEND in image.modules
        sources = modprobe_hides(image.modprobe, "image") + cmdline_hides(self.system.cmdline)
        early = self.image_orderings(image, backend_in_image)
        if native_in_image:
            assert native is not None
            blacklisted = image.modprobe.is_blacklisted(native)
            cmd_black = cmdline_blacklist(self.system.cmdline, native)
            if blacklisted is not None or cmd_black is not None:
                self.observe(
                    "native-blacklisted",
                    f"{native} is blacklisted",
                    *(e for e in (blacklisted.evidence if blacklisted else None, cmd_black) if e),
                )
                return self.after_native_blocked(Phase.INITRAMFS, image, sources, early)
            # udev coldplug (udevadm trigger → kmod builtin, by MODALIAS) loads the native driver;
            # kmod loads a softdep's `pre:` modules first (libkmod-module.c, probe_insert_module)
            ordered = [o for o in early if o.works and o.before_udev and not o.race] + [
                o for o in orderings_for(native, image.modprobe) if o.works
            ]
            for o in orderings_for(native, image.modprobe):
                if not o.works or o.problem:
                    self.observe("broken-rule", o.problem, *o.evidence)
            if not ordered and backend_in_image and (raced := self.raced(image, early, sources)):
                return raced
            if not ordered:
                if not backend_in_image:
                    self.observe(
                        "image-lacks-backend",
                        f"{native} is in the initramfs but xen-pciback is not",
                        image.where("lib/modules"),
                    )
                else:
                    self.observe(
                        "image-unordered",
                        f"{native} and xen-pciback are both in the initramfs with nothing loading the backend first",
                    )
                return self.lost(
                    Phase.INITRAMFS,
                    f"udev coldplug in the initramfs loads {native} by modalias and nothing loads xen-pciback first",
                )
            if not backend_in_image:
                self.observe(
                    "image-lacks-backend",
                    f"a rule orders xen-pciback before {native}, but the image lacks it",
                    *ordered[0].evidence,
                )
                return self.lost(
                    Phase.INITRAMFS,
                    f"the initramfs orders xen-pciback before {native} but does not contain it",
                )
            return self.backend_loads(Phase.INITRAMFS, ordered[0], sources, image.modprobe)
        # the native driver cannot load in the initramfs: only an early backend load matters here
        for o in early:
            if o.works:
                hide = effective_hide(sources, builtin=False, classic_alias=o.loaded_as == "pciback")
                if _covers(hide, self.bdf, self.parents):
                    assert hide is not None
                    return self.claimed(
                        Phase.INITRAMFS,
                        f"the initramfs loads xen-pciback ({o.mechanism}) with hide covering the device",
                        *o.evidence,
                        hide.evidence,
                    )
        return self.rootfs()

    def raced(self, image: ImageFacts, early: list[Ordering], sources: list[HideSource]) -> Prediction | None:
        """The backend loaded by systemd-modules-load in the initramfs while udev coldplug loads the
        native driver: whoever comes first binds (SPEC §3: a race is `unknown`). Only a load whose
        hide names the device makes it a race; otherwise the native driver wins either way."""
        native = self.native.name
        for o in early:
            if not (o.works and o.race):
                continue
            hide = effective_hide(sources, builtin=False, classic_alias=False)
            if not _covers(hide, self.bdf, self.parents):
                continue
            assert hide is not None
            self.observe(
                "race",
                f"systemd-modules-load loads xen-pciback in the initramfs ({o.mechanism}) with no "
                f"ordering against udev coldplug, which loads {native}",
                *o.evidence,
            )
            return self.unknown(
                Phase.INITRAMFS,
                f"in the initramfs systemd-modules-load loads xen-pciback ({o.mechanism}) while udev "
                f"coldplug loads {native}: a race",
                *o.evidence,
                hide.evidence,
            )
        return None

    def image_orderings(self, image: ImageFacts, backend_in_image: bool) -> list[Ordering]:
        """Loads of the backend the initramfs makes before udev coldplug (or racing it)."""
        found: list[Ordering] = []
        cmdlines = [c for c in (self.system.cmdline, *image.cmdline_d) if c is not None]
        for cmd in cmdlines:
            for p in cmd.get("rd.driver.pre") + cmd.get("rdloaddriver"):
                names = [normalize(n) for n in (p.value or "").split(",")]
                if BACKEND in names or "pciback" in names:
                    runs = image.kernel_modules_code or (
                        image.systemd and _pre_udev_runs(image, self.system.cmdline)
                    )
                    works = runs and backend_in_image
                    problem = (
                        ""
                        if works
                        else (
                            _DRIVER_PRE_MISSING[image.systemd]
                            if not runs
                            else "xen-pciback is not in the image"
                        )
                    )
                    if problem:
                        self.observe("broken-rule", f"{p.key}={p.value}: {problem}", cmd.evidence(p))
                    name = BACKEND if BACKEND in names else "pciback"
                    found.append(Ordering("rd.driver.pre", name, (cmd.evidence(p),), works, problem))
        for name, evidence in image.early_modules:
            if normalize(name) == BACKEND:
                # mkinitcpio's init modprobes MODULES before the udev hook; initramfs-tools'
                # init runs scripts/init-top/udev (coldplug + settle) and only then load_modules
                before = image.early_modules_before_udev
                found.append(Ordering("early-modules", BACKEND, (evidence,), True, before_udev=before))
        if image.systemd and MODULES_LOAD_UNIT in image.wanted_units:
            # systemd-modules-load.service: DefaultDependencies=no, Before=sysinit.target only; nothing
            # orders it against systemd-udevd or systemd-udev-trigger (units/systemd-modules-load.service.in)
            for evidence in image.modules_load:
                found.append(Ordering("modules-load.d", BACKEND, (evidence,), True, race=True))
            # it reads modules_load= from /proc/cmdline only, rd.-prefixed too inside the initrd
            # (src/modules-load/modules-load.c: PROC_CMDLINE_STRIP_RD_PREFIX); not dracut's cmdline.d
            kernel = self.system.cmdline
            for p in (kernel.get("modules_load") + kernel.get("rd.modules_load")) if kernel else []:
                if BACKEND in [normalize(n) for n in (p.value or "").split(",")]:
                    assert kernel is not None
                    found.append(Ordering("modules_load", BACKEND, (kernel.evidence(p),), True, race=True))
        return found

    def backend_loads(
        self, phase: Phase, o: Ordering, sources: list[HideSource], config: ModprobeConfig
    ) -> Prediction:
        classic = o.loaded_as == "pciback" and _resolves_to_backend("pciback", config)
        hide = effective_hide(sources, builtin=False, classic_alias=classic)
        native = self.native.name
        if hide is None:
            self.observe("no-hide", "xen-pciback loads first but no hide value reaches it", *o.evidence)
            return self.lost(
                phase,
                f"xen-pciback loads before {native} ({o.mechanism}) but gets no hide value",
                *o.evidence,
            )
        if not hide.spec.valid:
            return self.lost(
                phase,
                f"xen-pciback's hide value is malformed: the module refuses to load and {native} binds",
                hide.evidence,
            )
        if not _covers(hide, self.bdf, self.parents):
            return self.lost(
                phase, f"xen-pciback loads first but its hide value does not name {self.bdf}", hide.evidence
            )
        return self.claimed(
            phase,
            f"{o.mechanism} loads xen-pciback before {native}, with hide naming the device",
            *o.evidence,
            hide.evidence,
        )

    def after_native_blocked(
        self, phase: Phase, image: ImageFacts | None, sources: list[HideSource], early: list[Ordering]
    ) -> Prediction:
        for o in early:
            if o.works:
                return self.backend_loads(
                    phase, o, sources, image.modprobe if image else self.system.modprobe
                )
        return self.rootfs()

    def rootfs(self) -> Prediction:
        system = self.system
        native = self.native.name
        sources = modprobe_hides(system.modprobe, "modprobe") + cmdline_hides(system.cmdline)
        if self.inputs.backend_mode == "builtin":
            # nothing more loads the backend: only the stealers can still claim the device
            if self.native.mode == "module":
                return self.lost(
                    Phase.ROOTFS,
                    f"udev loads {native} and the built-in backend's hide (command line) does not name the device",
                )
            return self.lost(
                Phase.ROOTFS, "the built-in backend's hide (command line) does not name the device"
            )
        blocked = None
        if native is not None and self.native.mode == "module":
            blocked = system.modprobe.is_blacklisted(native)
            cmd_black = cmdline_blacklist(system.cmdline, native)
            if blocked is not None or cmd_black is not None:
                self.observe(
                    "native-blacklisted",
                    f"{native} is blacklisted: udev will not load it",
                    *(e for e in (blocked.evidence if blocked else None, cmd_black) if e),
                )
            else:
                ordered = orderings_for(native, system.modprobe)
                for o in ordered:
                    if not o.works or o.problem:
                        self.observe("broken-rule", o.problem, *o.evidence)
                working = [o for o in ordered if o.works]
                if working:
                    return self.backend_loads(Phase.ROOTFS, working[0], sources, system.modprobe)
                if system.loaders:
                    self.observe(
                        "race",
                        "xen-pciback is loaded with no ordering against udev",
                        *(loader.evidence for loader in system.loaders),
                    )
                    return self.unknown(
                        Phase.ROOTFS,
                        f"xen-pciback is loaded by {system.loaders[0].kind} while udev loads {native}: a race",
                        *(loader.evidence for loader in system.loaders),
                    )
                self.observe("unordered", f"nothing orders xen-pciback before {native}")
                return self.lost(
                    Phase.ROOTFS,
                    f"systemd-udevd loads {native} by modalias and nothing loads xen-pciback before it",
                )
        if self.native.mode == "unknown" and not system.loaders:
            return self.unknown(Phase.ROOTFS, self.native.note or "the native driver is unknown")
        # no native driver will bind: any load of the backend with hide naming the device claims it
        hide = effective_hide(sources, builtin=False, classic_alias=False)
        if system.loaders and _covers(hide, self.bdf, self.parents):
            assert hide is not None
            if self.native.mode == "unknown":
                return self.unknown(
                    Phase.ROOTFS, self.native.note, *(loader.evidence for loader in system.loaders)
                )
            return self.claimed(
                Phase.ROOTFS,
                f"{system.loaders[0].kind} loads xen-pciback with hide naming the device and no native driver competes",
                system.loaders[0].evidence,
                hide.evidence,
            )
        return self.lost(Phase.ROOTFS, "nothing loads xen-pciback with a hide value naming the device")

    # -- what takes a device even after another driver bound it ---------------------------------
    def early_binders(self, image: ImageFacts | None) -> Prediction | None:
        """The early binders in the image (boot/binders.py; without one, those the platform puts in
        every image), in hook order: one that stops the boot ends it for every device; the first
        that binds the device claims it before udev."""
        binders = binders_for(self.system, image)
        if not binders:
            return None
        ctx = binder_context(self.system, self.inputs.backend_mode, image)
        for binder in binders:
            stop = binder.stops(ctx)
            if stop is not None:
                self.observe("boot-stops", f"{binder.name} stops the boot: {stop.reason}", *stop.evidence)
                return Prediction(
                    Verdict.NOT_CLAIMED,
                    Phase.INITRAMFS,
                    "none",
                    f"{binder.name} stops the boot in the initramfs: {stop.reason}",
                    stop.evidence,
                )
        for binder in binders:
            take = binder.takes(ctx).get(self.bdf)
            if take is None:
                continue
            if take.binds:
                return self.claimed(Phase.INITRAMFS, binder.claim_reason, binder.hook, take.evidence)
            if take.stranded:
                return Prediction(
                    Verdict.NOT_CLAIMED, Phase.INITRAMFS, "none", take.problem, (binder.hook, take.evidence)
                )
            if not take.certain:
                return Prediction(
                    Verdict.UNKNOWN, Phase.INITRAMFS, None, f"{binder.name}: {take.problem}", (binder.hook,)
                )
            message = (
                take.problem
                if take.kind != "binder-skips"
                else f"{binder.name} does not bind {self.bdf}: {take.problem}"
            )
            self.observe(take.kind, message, binder.hook, take.evidence)
        return None

    def refused_hide(self) -> HideSource | None:
        """The malformed hide value the backend gets when it comes up in the real root, if any."""
        builtin = self.inputs.backend_mode == "builtin"
        sources = cmdline_hides(self.system.cmdline)
        if not builtin:
            sources = modprobe_hides(self.system.modprobe, "modprobe") + sources
        hide = effective_hide(sources, builtin=builtin, classic_alias=False)
        return hide if hide is not None and not hide.spec.valid else None

    def stealers(self, after: Phase) -> Prediction | None:
        if after is Phase.KERNEL and self.inputs.image is not None and not self.inputs.image.error:
            hook = self.early_binders(self.inputs.image)
            if hook is not None:
                return hook
        if after in (Phase.KERNEL, Phase.INITRAMFS, Phase.ROOTFS):
            for late in _late_by_bdf(self.system.late_bindings).get(self.bdf, ()):
                if late.bdf == self.bdf:
                    if self.inputs.backend_mode == "missing":
                        break
                    if (refused := self.refused_hide()) is not None:
                        # pcistub_init failed before registering the `pciback` driver: a
                        # driver_override naming it binds nothing (drivers/xen/xen-pciback/pci_stub.c)
                        return Prediction(
                            Verdict.NOT_CLAIMED,
                            Phase.ROOTFS,
                            "none",
                            "a late-binding script hands the device to pciback, but the malformed hide "
                            "value keeps the pciback driver from registering, so nothing binds it",
                            (late.evidence, refused.evidence),
                        )
                    if late.before_domains:
                        return self.claimed(
                            Phase.ROOTFS,
                            "a late-binding unit ordered before the Xen domain services hands the device to pciback",
                            late.evidence,
                        )
                    return Prediction(
                        Verdict.UNKNOWN,
                        Phase.ROOTFS,
                        None,
                        "a late-binding script hands the device to pciback, but nothing orders it before the Xen domain services",
                        (late.evidence,),
                    )
        if self.bdf in self.inputs.seize and self.inputs.backend_mode != "missing":
            return self.claimed(Phase.DOMAIN_START, "xl takes the device at domain start (seize=1)")
        return None


_CONTEXT: dict[tuple[int, str, int], tuple[System, ImageFacts | None, BinderContext]] = {}


def binder_context(system: System, backend_mode: str, image: ImageFacts | None) -> BinderContext:
    """What an early binder's hook sees, made once per system and image (asked per device)."""
    key = (id(system), backend_mode, id(image))
    found = _CONTEXT.get(key)
    if found is None or found[0] is not system or found[1] is not image:
        _CONTEXT.clear()
        found = _CONTEXT[key] = (system, image, _binder_context(system, backend_mode, image))
    return found[2]


def _binder_context(system: System, backend_mode: str, image: ImageFacts | None) -> BinderContext:
    """dracut's getcmdline order (etc/cmdline.d/*.conf, etc/cmdline, the kernel's), the known
    devices, and whether pciback registers in the initramfs. Without an image (a binder the
    platform always installs, boot/binders.binders_for): the image that binder's own installkernel
    makes, which takes xen-pciback whenever the kernel has it as a module."""
    builtin = backend_mode == "builtin"
    if image is None:
        in_image = builtin or (system.modules is not None and system.modules.has_file(BACKEND))
    else:
        in_image = builtin or BACKEND in image.modules
    # the hide value the backend gets: a built-in one reads the command line only, a module
    # the image's modprobe.d options and then the command line (kmod)
    sources = cmdline_hides(system.cmdline)
    if not builtin and image is not None:
        sources = modprobe_hides(image.modprobe, "image") + sources
    hide = effective_hide(sources, builtin=builtin, classic_alias=False)
    malformed = hide.evidence if hide is not None and not hide.spec.valid else None
    problem = ""
    if not in_image:
        problem = "xen-pciback is not in the image: pciback's new_slot and bind do not exist"
    elif malformed is not None:
        problem = "the malformed hide value keeps pciback from registering (pcistub_init returns -EINVAL)"
    cmds = tuple(c for c in (*(image.cmdline_d if image else ()), system.cmdline) if c is not None)
    # the devices lspci would list: sysfs, and those given with --device
    known = {d.bdf: d for d in system.offline_devices} | {d.bdf: d for d in system.devices}
    shell = image.where("bin/sh", None, image.shell) if image is not None and image.shell else None
    return BinderContext(cmds, tuple(known.values()), not problem, problem, in_image, malformed, shell)


def hook_devices(
    cmdlines: list[Cmdline], config: tuple[tuple[str, Evidence], ...], known: Sequence[Bdf] = ()
) -> dict[Bdf, Evidence]:
    """The devices the project's dracut module will claim (SPEC §9: rd.xen_pciback.hide=,
    the xen-pciback.hide= token, and etc/xen-pciback.conf in the image); like the hook, a
    wildcard entry of the token stands for the devices present at that address."""

    found: dict[Bdf, Evidence] = {}
    for cmd in cmdlines:
        for p in cmd.get("rd.xen_pciback.hide"):
            for item in (p.value or "").split(","):
                bdf = parse_bdf(item)
                if bdf is not None:
                    found.setdefault(bdf, cmd.evidence(p))
        for source in cmdline_hides(cmd):
            if source.classic:
                continue
            for e in source.spec.entries:
                if e.slot is not None and e.func is not None:
                    found.setdefault(Bdf(e.domain, e.bus, e.slot, e.func), source.evidence)
                for b in known:
                    if e.wildcard and e.matches(b.domain, b.bus, b.slot, b.func):
                        found.setdefault(b, source.evidence)
    for text, evidence in config:
        bdf = parse_bdf(text)
        if bdf is not None:
            found.setdefault(bdf, evidence)
    return found


def malformed_hook_entries(
    cmdlines: list[Cmdline], config: tuple[tuple[str, Evidence], ...]
) -> list[tuple[str, Evidence]]:
    """Entries the dracut module will log as malformed (and count as failures)."""
    bad: list[tuple[str, Evidence]] = []
    for cmd in cmdlines:
        for p in cmd.get("rd.xen_pciback.hide"):
            bad += [
                (item, cmd.evidence(p))
                for item in (p.value or "").split(",")
                if item and parse_bdf(item) is None
            ]
    bad += [(text, evidence) for text, evidence in config if parse_bdf(text) is None]
    return bad


_NATIVE: dict[tuple[object, ...], tuple[ModuleTree | None, BuiltinPciDrivers | None, NativeDriver]] = {}


def _native(
    device: PciDevice | None,
    tree: ModuleTree | None,
    modprobe: ModprobeConfig,
    live: bool,
    builtin_pci: BuiltinPciDrivers | None,
) -> NativeDriver:
    """resolve_native, remembered across the analyses of one run (a fix simulation analyses the
    same devices again with the same module tree; matching modules.alias is the costly part)."""
    # only modprobe.d's alias lines take part (kmod: they come before modules.alias)
    aliases = tuple(d for d in modprobe.directives if d.command == "alias")
    key = (device, id(tree), aliases, live, id(builtin_pci))
    found = _NATIVE.get(key)
    if found is not None and found[0] is tree and found[1] is builtin_pci:
        return found[2]
    if len(_NATIVE) > 65536:
        _NATIVE.clear()
    native = resolve_native(device, tree, modprobe, live, builtin_pci)
    _NATIVE[key] = (tree, builtin_pci, native)
    return native


_LATE: dict[int, tuple[tuple[LateBinding, ...], dict[Bdf, list[LateBinding]]]] = {}


def _late_by_bdf(bindings: tuple[LateBinding, ...]) -> dict[Bdf, list[LateBinding]]:
    """Late bindings per device, built once per system: a script naming 1,000 devices is
    otherwise scanned once per device."""
    found = _LATE.get(id(bindings))
    if found is None or found[0] is not bindings:
        index: dict[Bdf, list[LateBinding]] = {}
        for late in bindings:
            index.setdefault(late.bdf, []).append(late)
        _LATE.clear()
        found = _LATE[id(bindings)] = (bindings, index)
    return found[1]


_BY_BDF: dict[int, tuple[tuple[PciDevice, ...], dict[Bdf, PciDevice]]] = {}


def _by_bdf(devices: tuple[PciDevice, ...]) -> dict[Bdf, PciDevice]:
    """The device table, built once per system rather than once per device (keyed by identity:
    hashing the whole tuple per device would be quadratic again)."""
    found = _BY_BDF.get(id(devices))
    if found is None or found[0] is not devices:
        _BY_BDF.clear()
        found = _BY_BDF[id(devices)] = (devices, {d.bdf: d for d in devices})
    return found[1]


def _parents(system: System, device: PciDevice | None) -> list[Bdf]:
    by_bdf = _by_bdf(system.devices) if device is not None and device.parent is not None else {}
    out: list[Bdf] = []
    while device is not None and device.parent is not None and device.parent not in out:
        out.append(device.parent)
        device = by_bdf.get(device.parent)
    return out


def predict_device(
    system: System, inputs: BootInputs, bdf: Bdf, device: PciDevice | None, wanted_by: tuple[str, ...]
) -> DevicePrediction:
    sim = _Device(system, inputs, bdf, device)
    prediction = sim.predict()
    return DevicePrediction(bdf, device, wanted_by, sim.native, prediction, tuple(sim.obs))
