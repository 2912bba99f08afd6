"""What an initramfs image means for the boot: its modules, modprobe.d, cmdline.d, hooks.

Every lookup (modprobe.d listings and files, cmdline.d, the device list, the generators' configs,
modules) goes through the image's namespace as the kernel unpacked it (`Initramfs.resolve`, `read`,
`listdir`, `tree`): paths normalised, symlinks followed. Evidence paths are `IMAGE!inner/path`,
with the path as looked up (the link's name, not its target).
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike

from pciback_doctor.facts.cmdline import Cmdline, parse_cmdline
from pciback_doctor.facts.initramfs import Initramfs, open_initramfs
from pciback_doctor.facts.modprobe import CONFIG_DIRS, ModprobeConfig, config_files, parse_modprobe_file
from pciback_doctor.facts.services import MODULES_LOAD_DIRS, backend_loaders
from pciback_doctor.model import Evidence


@dataclass(frozen=True)
class PcibackHook:
    """The project's dracut module inside an image: its hook and the devices it will claim."""

    hook: Evidence
    config: tuple[tuple[str, Evidence], ...]  # BDF lines from etc/xen-pciback.conf in the image


@dataclass(frozen=True)
class ImageFacts:
    path: str  # as shown in evidence (relative to the root when inside it)
    generator: str  # dracut | initramfs-tools | mkinitcpio | unknown
    releases: tuple[str, ...]
    modules: frozenset[str]  # normalized names of the modules in the image
    modprobe: ModprobeConfig
    cmdline_d: tuple[Cmdline, ...]  # dracut's etc/cmdline.d/*.conf and etc/cmdline, one per file
    kernel_modules_code: bool  # dracut's kernel-modules hook: rd.driver.pre works
    early_modules: tuple[tuple[str, Evidence], ...]  # loaded by the generator's own init
    early_modules_before_udev: bool  # mkinitcpio: yes; initramfs-tools: after coldplug
    pciback_hook: PcibackHook | None
    hostonly: bool | None  # dracut's hostonly mode (None: not dracut, or not recorded)
    hooks: tuple[str, ...] = ()  # dracut hook scripts, in the order dracut runs them
    error: str | None = None
    # systemd is the image's /init (dracut's 00systemd links it there): dracut's hooks then run from
    # its systemd units, and systemd's own services (systemd-modules-load) run too
    systemd: bool = False
    wanted_units: frozenset[str] = frozenset()  # units a target in the image wants (`*.wants/` links)
    modules_load: tuple[Evidence, ...] = ()  # lines of the image's modules-load.d naming the backend
    shell: str | None = None  # what bin/sh leads to (basename): dracut's init and its hooks run in it

    def where(self, inner: str, line: int | None = None, text: str = "") -> Evidence:
        return Evidence(f"{self.path}!{inner}", line, text)


# --- from the initramfs reader's raw entries to ImageFacts ----------------------------------------

PCIBACK_HOOK = "xen-pciback-hide.sh"  # the project's dracut module (dracut-module/90xen-pciback)
PCIBACK_CONF = "etc/xen-pciback.conf"
DRACUT_HOOKS = ("usr/lib/dracut/hooks/", "lib/dracut/hooks/")


def parse_device_list(text: str, path: str) -> tuple[tuple[str, Evidence], ...]:
    """/etc/xen-pciback.conf exactly as the hook's `_xpb_collect` reads it.

    `IFS= read -r` splits at LF only (a CR, form feed or U+2028 stays in the entry, where the hook
    rejects it) and drops NUL bytes (dash and bash both do); `${v%%#*}` cuts the comment; only
    blanks and tabs are trimmed. An entry is returned as the hook passes it to `_xpb_norm`.
    """
    entries = []
    for number, line in enumerate(text.replace("\0", "").split("\n"), 1):
        if entry := line.split("#", 1)[0].strip(" \t"):
            entries.append((entry, Evidence(path, number, line.strip(" \t"))))
    return tuple(entries)


BUILD_PARAMETERS = "usr/lib/dracut/build-parameter.txt"
# systemd's system unit search path inside an initrd (systemd.unit(5)), highest priority first
UNIT_DIRS = ("etc/systemd/system", "run/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")
SYSTEMD_BINARIES = ("usr/lib/systemd/systemd", "lib/systemd/systemd")
SINGLE_FILES = (PCIBACK_CONF, "conf/modules", "config", BUILD_PARAMETERS, "etc/cmdline")


def wanted_file(name: str) -> bool:
    """The files whose contents the boot model reads, by where they land; the rest is skipped unread.

    Files reached only through a symlink are found by `needed_files` (a second pass if need be).
    """
    head, _, base = name.rpartition("/")
    return (
        (head in CONFIG_DIRS and base.endswith(".conf"))
        or (head in MODULES_LOAD_DIRS and base.endswith(".conf"))
        or (head == "etc/cmdline.d" and base.endswith(".conf"))
        or name in SINGLE_FILES
        or (name.startswith(DRACUT_HOOKS) and base.endswith(PCIBACK_HOOK))
    )


def _regular(raw: Initramfs, path: str) -> bool:
    entry = raw.entry(path)
    return entry is not None and stat.S_ISREG(entry.mode)


def _conf_listing(raw: Initramfs) -> dict[str, list[str]]:
    """kmod's readdir of each modprobe.d directory: names that lead to a regular file (it skips
    directories, libkmod-config.c conf_files_filter_out; a dangling link cannot be opened)."""
    return {d: [n for n in raw.listdir(d) if _regular(raw, f"{d}/{n}")] for d in CONFIG_DIRS}


def _modules_load_listing(raw: Initramfs) -> dict[str, list[str]]:
    """systemd-modules-load's readdir of each modules-load.d directory (conf_files_list: regular
    files only, same as kmod's)."""
    return {d: [n for n in raw.listdir(d) if _regular(raw, f"{d}/{n}")] for d in MODULES_LOAD_DIRS}


def _runs_systemd(raw: Initramfs) -> bool:
    """The kernel execs /init (init/main.c ramdisk_execute_command); dracut's 00systemd/module-setup.sh
    makes it a link to systemd (`ln_r $systemdutildir/systemd /init`), its 99base installs init.sh."""
    target = raw.resolve("init")
    return target is not None and any(raw.resolve(b) == target for b in SYSTEMD_BINARIES)


def _wanted_units(raw: Initramfs) -> frozenset[str]:
    """The units some target wants through a `TARGET.wants/UNIT` link (`systemctl enable` and
    `add-wants` make them); a dangling link starts nothing."""
    return frozenset(
        unit
        for d in UNIT_DIRS
        for wants in raw.listdir(d)
        if wants.endswith(".wants")
        for unit in raw.listdir(f"{d}/{wants}")
        if raw.entry(f"{d}/{wants}/{unit}") is not None
    )


def _cmdline_d(raw: Initramfs) -> list[str]:
    """dracut-lib.sh `getcmdline`: `for _i in /etc/cmdline.d/*.conf; do [ -e "$_i" ] || continue`."""
    return [
        f"etc/cmdline.d/{n}"
        for n in raw.listdir("etc/cmdline.d")
        if n.endswith(".conf") and not n.startswith(".") and _regular(raw, f"etc/cmdline.d/{n}")
    ]


def needed_files(raw: Initramfs, listing: dict[str, list[str]] | None = None) -> Iterator[str]:
    """Every path `image_facts` reads, looked up through the image's symlinks."""
    yield from config_files(_conf_listing(raw) if listing is None else listing)
    yield from config_files(_modules_load_listing(raw), MODULES_LOAD_DIRS)
    yield from _cmdline_d(raw)
    yield from SINGLE_FILES


def open_image(path: str | PathLike[str], *, list_only: bool = False) -> Initramfs:
    """An image with the files the boot model reads (none with `list_only`)."""
    if list_only:
        return open_initramfs(path, lambda name: False)
    return open_initramfs(path, wanted_file, needed_files)


def _text(raw: Initramfs, path: str) -> str | None:
    data = raw.read(path)
    return None if data is None else data.decode("utf-8", "replace")


def image_facts(raw: Initramfs, path: str) -> ImageFacts:
    def where(inner: str, line: int | None = None, text: str = "") -> Evidence:
        return Evidence(f"{path}!{inner}", line, text)

    listing = _conf_listing(raw)
    files = {n: t for n in needed_files(raw, listing) if (t := _text(raw, n)) is not None}
    names = [e.name for e in raw.live()]

    modprobe = ModprobeConfig(())
    for rel in config_files(listing):
        if rel in files:
            modprobe = modprobe.merged(parse_modprobe_file(files[rel], f"{path}!{rel}"))

    # dracut-lib.sh getcmdline: etc/cmdline.d/*.conf, then etc/cmdline, then the kernel's; the
    # words are split by dracut-getarg(s) (dracut-util.c), a copy of the kernel's next_arg
    cmdline_d = tuple(
        parse_cmdline(" ".join(files[n].split()), f"{path}!{n}")
        for n in [*_cmdline_d(raw), "etc/cmdline"]
        if n in files
    )
    generator = raw.generator()
    systemd = _runs_systemd(raw)
    early: list[tuple[str, Evidence]] = []
    if "conf/modules" in files:  # initramfs-tools: /etc/initramfs-tools/modules, loaded after udev
        for number, line in enumerate(files["conf/modules"].splitlines(), 1):
            words = line.split()
            if words and not words[0].startswith("#"):
                early.append((words[0], where("conf/modules", number, line.strip())))
    # MODULES, loaded before the udev hook by mkinitcpio's own init; with its systemd hook, systemd
    # is /init and that loop never runs (what systemd-modules-load loads is read below)
    if generator == "mkinitcpio" and "config" in files and not systemd:
        for number, line in enumerate(files["config"].splitlines(), 1):
            key, eq, value = line.partition("=")
            if eq and key.strip() == "MODULES":
                for word in value.strip("()\"' ").replace('"', " ").split():
                    early.append((word.rstrip("?"), where("config", number, line.strip())))

    hook = next((n for n in names if n.startswith(DRACUT_HOOKS) and n.endswith(PCIBACK_HOOK)), None)
    pciback_hook = None
    if hook is not None:
        config = parse_device_list(files.get(PCIBACK_CONF, ""), f"{path}!{PCIBACK_CONF}")
        pciback_hook = PcibackHook(where(hook), config)
    params = files.get(BUILD_PARAMETERS, "")
    hostonly: bool | None = None
    if generator == "dracut":
        words = params.replace("'", " ").split()
        hostonly = (
            True
            if ("--hostonly" in words or "-H" in words)
            else False
            if ("--no-hostonly" in words or "-N" in words)
            else None
        )
    modules_load: list[Evidence] = []
    for rel in config_files(_modules_load_listing(raw), MODULES_LOAD_DIRS):
        loaders = backend_loaders("modules-load.d", f"{path}!{rel}", files.get(rel, ""))
        modules_load += [loader.evidence for loader in loaders]
    return ImageFacts(
        path=path,
        generator=generator,
        releases=raw.kernel_releases(),
        modules=raw.modules(),
        modprobe=modprobe,
        cmdline_d=cmdline_d,
        kernel_modules_code=any(n.startswith(DRACUT_HOOKS) and n.endswith("parse-kernel.sh") for n in names),
        early_modules=tuple(early),
        early_modules_before_udev=generator == "mkinitcpio",
        pciback_hook=pciback_hook,
        hostonly=hostonly,
        hooks=tuple(n for n in names if n.startswith(DRACUT_HOOKS) and n.endswith(".sh")),
        error=raw.error,
        systemd=systemd,
        wanted_units=_wanted_units(raw) if systemd else frozenset(),
        modules_load=tuple(modules_load),
        shell=(sh := raw.resolve("bin/sh")) and sh.rsplit("/", 1)[-1],
    )
