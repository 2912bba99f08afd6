"""Fix simulation (issue 11): before a fix is offered it is applied to a model copy of the system —
the files as `fix --write` leaves them, the image as the printed rebuild command makes it, grub.cfg
as `update-grub` regenerates it — and the boot model runs again. A fix is offered only when every
device meant for passthrough is then claimed and no device that was claimed changes.

The changed files are served from memory over the real root (`Overlay`), so the same readers
`collect()` uses read them; the image rebuild is a transformation of the image facts by the
generator's own rules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from pciback_doctor.boot.analysis import Analysis, analyse
from pciback_doctor.boot.native import NativeDriver, resolve_native
from pciback_doctor.boot.qubes import QUBES_HOOK
from pciback_doctor.facts.bootloader import NextBoot, find_next_boot
from pciback_doctor.facts.cmdline import Cmdline, parse_cmdline
from pciback_doctor.facts.dracutconf import DracutConfig
from pciback_doctor.facts.image import DRACUT_HOOKS, PCIBACK_CONF, ImageFacts, PcibackHook, parse_device_list
from pciback_doctor.facts.limits import TEXT_FILE, Limit
from pciback_doctor.facts.modprobe import CONFIG_DIRS, ModprobeConfig, parse_modprobe_file
from pciback_doctor.facts.modules import normalize
from pciback_doctor.facts.pci import Bdf
from pciback_doctor.facts.platform import Platform
from pciback_doctor.facts.root import Root
from pciback_doctor.facts.system import (
    read_dracut_conf,
    read_late_bindings,
    read_loaders,
    read_modprobe,
    read_modprobe_files,
)
from pciback_doctor.fixes import xen_cmdline
from pciback_doctor.model import Evidence, Fix, Verdict

GRUB_COMMANDS = ("update-grub", "grub-mkconfig", "grub2-mkconfig")
# the generators' rebuild commands, and the by-hand step printed when the generator is unknown
REBUILD_COMMANDS = ("dracut ", "update-initramfs ", "mkinitcpio ", "rebuild the initramfs")


class Overlay(Root):
    """The root with some files replaced or added, served from memory; the disk is not touched."""

    def __init__(self, base: Root, files: Mapping[str, str]) -> None:
        super().__init__(base.path)
        self.base = base
        self.files = {_norm(k): v.encode("utf-8", "surrogateescape") for k, v in files.items()}
        self.dirs: set[str] = set()
        for path in self.files:
            parts = path.split("/")
            self.dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))

    def read_bytes(self, rel: str, limit: Limit = TEXT_FILE, *, text: bool = False) -> bytes | None:
        found = self.files.get(_norm(rel))
        return found if found is not None else self.base.read_bytes(rel, limit, text=text)

    def exists(self, rel: str) -> bool:
        n = _norm(rel)
        return n in self.files or n in self.dirs or self.base.exists(rel)

    def is_dir(self, rel: str) -> bool:
        return _norm(rel) in self.dirs or self.base.is_dir(rel)

    def probe(self, rel: str) -> tuple[int, bytes] | None:
        return self.base.probe(rel)  # the base may be a snapshot, not a directory at self.path

    def listdir(self, rel: str) -> list[str]:
        n = _norm(rel)
        mine = {p[len(n) + 1 :].split("/", 1)[0] for p in (*self.files, *self.dirs) if p.startswith(f"{n}/")}
        return sorted(set(self.base.listdir(rel)) | mine)


def _norm(rel: str) -> str:
    return "/".join(c for c in rel.split("/") if c not in ("", "."))


@dataclass(frozen=True)
class Outcome:
    """What the boot model predicts once a fix (and its commands) are applied."""

    claimed: int
    total: int
    unclaimed: tuple[tuple[Bdf, str], ...]  # still not claimed, with the model's reason
    worse: tuple[tuple[Bdf, str], ...]  # was claimed, is not any more
    after: Analysis
    absent: tuple[Bdf, ...] = ()  # named, but not in sysfs: neither counted nor in the way

    @property
    def passes(self) -> bool:
        return not self.unclaimed and not self.worse

    def summary(self, commands: Sequence[str]) -> str:
        steps = [
            "the initramfs rebuild"
            if c.startswith("rebuild")
            else "the step by hand"
            if c.startswith("by hand")
            else f"`{c.split()[0]}`"
            for c in commands
            if not c.startswith(("make ", "systemctl "))
        ]
        after = f"after this fix and {', '.join(dict.fromkeys(steps))}" if steps else "after this fix"
        gone = f" ({', '.join(map(str, self.absent))} not in sysfs)" if self.absent else ""
        return f"{after}: {self.claimed} of {self.total} claimed{gone}"


def simulate(a: Analysis, fix: Fix, token: str | None = None) -> Analysis:
    """The analysis of the system as `fix` leaves it; `token` is the dom0 command-line token a
    cmdline fix puts there by a command or by hand (grubby, xen.cfg)."""
    system = a.system
    # `systemctl enable UNIT` links the unit into its target's .wants (WantedBy=multi-user.target)
    enabled = {
        f"etc/systemd/system/multi-user.target.wants/{c.split()[2]}": ""
        for c in fix.commands
        if c.split()[:2] == ["systemctl", "enable"] and len(c.split()) > 2
    }
    edited = _xen_cmdline_edits(a, fix)
    root = Overlay(system.root, {**{c.path: c.content for c in fix.files}, **enabled, **edited})
    modprobe_files = read_modprobe_files(root)
    modprobe = read_modprobe(root, system.modules, modprobe_files)
    cmdline, next_boot = _cmdline_after(a, fix, root, token)
    xen = _xen_line_after(a, next_boot) if edited else system.xen_cmdline
    dracut_conf = read_dracut_conf(root)
    image, problem = a.image, a.image_problem
    if any(c.startswith(REBUILD_COMMANDS) for c in fix.commands):
        installs = any("dracut-module install" in c for c in fix.commands)
        image, problem = _rebuilt(a, root, modprobe_files, dracut_conf, installs), None
    after = replace(
        system,
        root=root,
        modprobe=modprobe,
        cmdline=cmdline,
        next_boot=next_boot,
        xen_cmdline=xen,
        files={**system.files, **{c.path: c.content for c in fix.files}},
        dracut_conf=dracut_conf,
        image=image,
        image_problem=problem if image is None else None,
        loaders=tuple(read_loaders(root)),
        late_bindings=tuple(read_late_bindings(root, system.platform.domain_services)),
    )
    return analyse(after)


def outcome(before: Analysis, after: Analysis) -> Outcome:
    now = {d.bdf: d for d in after.devices}
    unclaimed: list[tuple[Bdf, str]] = []
    worse: list[tuple[Bdf, str]] = []
    # a device sysfs does not list is no one's, before or after: a fix is judged on the others
    absent = tuple(d.bdf for d in before.devices if d.device is None and before.system.sysfs)
    for d in before.devices:
        if d.bdf in absent:
            continue
        new = now.get(d.bdf)
        reason = new.prediction.reason if new else "no longer considered"
        if new is not None and new.prediction.verdict is Verdict.CLAIMED:
            continue
        if d.prediction.verdict is Verdict.CLAIMED:
            worse.append((d.bdf, reason))
        else:
            unclaimed.append((d.bdf, reason))
    total = len(before.devices) - len(absent)
    return Outcome(total - len(unclaimed) - len(worse), total, tuple(unclaimed), tuple(worse), after, absent)


# -- the command line after update-grub (or grubby, or an edit by hand) -----------------------------


def _cmdline_after(
    a: Analysis, fix: Fix, root: Overlay, token: str | None
) -> tuple[Cmdline | None, NextBoot | None]:
    system = a.system
    cmdline, next_boot = system.cmdline, system.next_boot
    regenerates = any(c.split()[:1] and c.split()[0] in GRUB_COMMANDS for c in fix.commands)
    entry = next_boot.entry if next_boot else None
    if regenerates and system.cmdline_kind == "boot-entry" and entry is not None and entry.source == "grub":
        # grub-mkconfig writes etc/default/grub's words into the entry: the words the staleness
        # check finds missing appear, the ones it finds extra go
        fresh = find_next_boot(root)
        stale = [s for s in fresh.stale if s.kind in ("dom0-cmdline", "cmdline")]
        if cmdline is not None and fresh.entry is not None:
            extra = {w for s in stale for w in s.extra}
            missing = [w for s in stale for w in s.missing]
            words = [w for w in cmdline.text.split() if w not in extra] + missing
            cmdline = parse_cmdline(" ".join(words), cmdline.source, cmdline.line)
            entry = replace(fresh.entry, cmdline=cmdline.text)
        kept = tuple(s for s in fresh.stale if s.kind not in ("dom0-cmdline", "cmdline", "xen-cmdline"))
        return cmdline, replace(fresh, entry=entry, stale=kept)
    if any(xen_cmdline.operations(c) for c in fix.commands) and system.cmdline_kind == "boot-entry":
        # XenServer/XCP-ng: xen-cmdline rewrote the dom0 arguments in grub.cfg (the Overlay holds
        # its result): the next boot is read again from it
        fresh = find_next_boot(root)
        if fresh.entry is not None and fresh.entry.kernel_path:
            name = fresh.entry.kernel_path.rsplit("/", 1)[-1]
            where = next((e for e in fresh.entry.evidence if name in e.text), fresh.entry.evidence[0])
            cmdline = parse_cmdline(fresh.entry.cmdline, where.path, where.line)
        return cmdline, fresh
    if token is not None and not regenerates:
        # grubby --args replaces a key's value; by hand (xen.cfg, --cmdline) the old one goes too
        base = cmdline.text if cmdline is not None else ""
        words = [w for w in base.split() if not _is_hide(w)] + [token]
        source = cmdline.source if cmdline is not None else "--cmdline"
        cmdline = parse_cmdline(" ".join(words), source, cmdline.line if cmdline else None)
    return cmdline, next_boot


def _xen_cmdline_edits(a: Analysis, fix: Fix) -> dict[str, str]:
    """grub.cfg as the fix's xen-cmdline commands leave it (fixes/xen_cmdline.py)."""
    ops = [op for c in fix.commands for op in xen_cmdline.operations(c)]
    path = xen_cmdline.target(a.system.root) if ops else None
    text = a.system.root.read_text(path) if path else None
    if path is None or text is None:
        return {}
    return {path: xen_cmdline.edited(text, a.system.platform.os_name, ops)}


def _xen_line_after(a: Analysis, next_boot: NextBoot | None) -> Cmdline | None:
    """Xen's own command line once xen-cmdline (--set-xen / --delete-xen) has edited grub.cfg."""
    xen = a.system.xen_cmdline
    entry = next_boot.entry if next_boot else None
    if xen is None or xen.source == "--xen-cmdline" or entry is None or entry.xen_cmdline is None:
        return xen
    return parse_cmdline(entry.xen_cmdline, xen.source, xen.line)


def _is_hide(word: str) -> bool:
    key = word.split("=", 1)[0].replace("-", "_")
    return key in ("xen_pciback.hide", "pciback.hide")


# -- the image as the generator rebuilds it ---------------------------------------------------------


DRACUT_MODULE_DIRS = ("usr/lib/dracut/modules.d", "lib/dracut/modules.d")


def _rebuilt(
    a: Analysis,
    root: Root,
    modprobe_files: Mapping[str, bytes],
    conf: DracutConfig,
    module_installed: bool,
) -> ImageFacts:
    """The image after `dracut -f` / `update-initramfs -u` / `mkinitcpio -P`, from the host's config:
    - dracut: etc/modprobe.d only in hostonly mode (90kernel-modules), lib/modprobe.d always,
      install_items verbatim; add_drivers/force_drivers add modules; add_dracutmodules
      xen-pciback adds the project's hook with etc/xen-pciback.conf;
    - initramfs-tools: etc/ and lib/modprobe.d always (hook-functions), etc/initramfs-tools/modules
      as conf/modules, loaded after udev coldplug (init-top/udev runs first);
    - mkinitcpio: modprobe.d through the modconf hook, MODULES loaded before the udev hook."""
    old = a.image
    generator = old.generator if old is not None else _guess_generator(root, a.system.platform)
    path = old.path if old is not None else f"boot/initrd.img-{a.system.release or 'new'}"
    # an image made anew may hold the native drivers of the devices present (udev loads them
    # there): assume it does, for every device, wanted or not
    if old is not None and not old.error:
        modules = set(old.modules)
    else:
        modules = {normalize(n.name) for n in _natives(a) if n.name and n.mode == "module"}
    hostonly = old.hostonly if old is not None else None
    if hostonly is None and old is not None and generator == "dracut":
        # not recorded: the image itself says whether dracut copied the host's etc/modprobe.d
        hostonly = any("!etc/modprobe.d/" in d.evidence.path for d in old.modprobe.directives)
    copied: dict[str, bytes] = {}
    for rel, data in modprobe_files.items():
        if generator != "dracut" or hostonly is not False or not rel.startswith("etc/"):
            copied[rel] = data
    early: list[tuple[str, Evidence]] = []
    hook: PcibackHook | None = old.pciback_hook if old is not None else None
    hooks = old.hooks if old is not None else ()
    if generator == "dracut":
        for item in conf.words("install_items"):
            rel = item.lstrip("/")
            head = rel.rpartition("/")[0]
            if head in CONFIG_DIRS and (listed := root.read_bytes(rel)) is not None:
                copied[rel] = listed
        for setting in ("add_drivers", "force_drivers"):
            modules |= {normalize(w) for w in conf.words(setting)}
        # the project's module (dracut-module/90xen-pciback/module-setup.sh): included when asked
        # for or when etc/xen-pciback.conf exists (check()), it installs the hook, that file and
        # the backend module (installkernel(), hostonly or not)
        present = module_installed or any(root.is_dir(f"{d}/90xen-pciback") for d in DRACUT_MODULE_DIRS)
        wanted = "xen-pciback" in conf.words("add_dracutmodules") or root.exists(PCIBACK_CONF)
        if present and wanted:
            text = (root.read_bytes(PCIBACK_CONF) or b"").decode("utf-8", "replace")
            where = Evidence(f"{path}!usr/lib/dracut/hooks/cmdline/00-xen-pciback-hide.sh")
            hook = PcibackHook(where, parse_device_list(text, f"{path}!{PCIBACK_CONF}"))
            modules.add(normalize("xen-pciback"))
        # Qubes OS's 90qubes-pciback has no check(): installed, dracut takes it into every image,
        # with its hook and (installkernel) xen-pciback; Qubes installs it on every dom0
        if a.system.platform.id == "qubes" or any(
            root.is_dir(f"{d}/90qubes-pciback") for d in DRACUT_MODULE_DIRS
        ):
            qubes_hook = f"{DRACUT_HOOKS[0]}cmdline/02-{QUBES_HOOK}"
            hooks = (*hooks, *(() if qubes_hook in hooks else (qubes_hook,)))
            modules.add(normalize("xen-pciback"))
    elif generator == "initramfs-tools":
        text = (root.read_bytes("etc/initramfs-tools/modules") or b"").decode("utf-8", "replace")
        early = list(_module_lines(text, f"{path}!conf/modules"))
    elif generator == "mkinitcpio":
        text = (root.read_bytes("etc/mkinitcpio.conf") or b"").decode("utf-8", "replace")
        for number, line in enumerate(text.split("\n"), 1):
            key, eq, value = line.partition("=")
            if eq and key.strip() == "MODULES":
                for word in value.strip("()\"' ").replace('"', " ").split():
                    early.append((word.rstrip("?"), Evidence(f"{path}!config", number, line.strip())))
    modules |= {normalize(name) for name, _ in early}
    if generator == "unknown":
        modules.add(normalize("xen-pciback"))  # what the by-hand step asks the image to hold
    modprobe = ModprobeConfig(())
    for rel in sorted(copied, key=lambda r: r.rsplit("/", 1)[-1]):
        text = copied[rel].decode("utf-8", "replace")
        modprobe = modprobe.merged(parse_modprobe_file(text, f"{path}!{rel}"))
    base = old if old is not None else _blank(path, generator)
    return replace(
        base,
        modules=frozenset(modules),
        modprobe=modprobe,
        early_modules=tuple(early) if generator in ("initramfs-tools", "mkinitcpio") else base.early_modules,
        early_modules_before_udev=generator == "mkinitcpio",
        pciback_hook=hook,
        hooks=hooks,
        error=None,
    )


def _natives(a: Analysis) -> list[NativeDriver]:
    system = a.system
    live = system.root.is_live and system.release == system.running_release
    return [
        resolve_native(d, system.modules, system.modprobe, live)
        for d in (*system.devices, *system.offline_devices)
    ]


def _module_lines(text: str, where: str) -> Iterable[tuple[str, Evidence]]:
    for number, line in enumerate(text.split("\n"), 1):
        words = line.split()
        if words and not words[0].startswith("#"):
            yield words[0], Evidence(where, number, line.strip())


def _guess_generator(root: Root, platform: Platform) -> str:
    # the Fedora family (Qubes included) and XenServer/XCP-ng build their images with dracut
    if (
        root.exists("etc/dracut.conf.d")
        or root.exists("etc/dracut.conf")
        or platform.family in ("fedora", "xenserver")
    ):
        return "dracut"
    if root.exists("etc/initramfs-tools"):
        return "initramfs-tools"
    if root.exists("etc/mkinitcpio.conf"):
        return "mkinitcpio"
    return "unknown"


def _blank(path: str, generator: str) -> ImageFacts:
    return ImageFacts(
        path=path,
        generator=generator,
        releases=(),
        modules=frozenset(),
        modprobe=ModprobeConfig(()),
        cmdline_d=(),
        kernel_modules_code=generator == "dracut",
        early_modules=(),
        early_modules_before_udev=generator == "mkinitcpio",
        pciback_hook=None,
        hostonly=None,
    )
