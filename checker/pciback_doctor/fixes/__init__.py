"""Fix strategies (SPEC §8): concrete file contents and commands for the devices the next boot will
not hand to pciback, chosen to fit what the doctor found. Pure: they read only the analysis (and the
file contents the collector kept in `System.files`)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pciback_doctor.boot.analysis import Analysis
from pciback_doctor.boot.binders import binders_for
from pciback_doctor.boot.hide import HideSource, cmdline_hides, effective_hide, modprobe_hides
from pciback_doctor.boot.model import DevicePrediction, binder_context
from pciback_doctor.boot.qubes import HIDE_PCI, QubesPciback, getarg, lspci_slot
from pciback_doctor.facts.bootloader import grub_variables, shell_variables
from pciback_doctor.facts.cmdline import parse_cmdline
from pciback_doctor.facts.hide import HIDE_MAX, HideEntry
from pciback_doctor.facts.pci import Bdf, parse_bdf
from pciback_doctor.fixes import xen_cmdline
from pciback_doctor.fixes.shell_assignments import with_word, without_words
from pciback_doctor.fixes.simulate import Outcome, outcome, simulate
from pciback_doctor.model import STRATEGIES, FileChange, Fix, Verdict

MODPROBE_FILE = "etc/modprobe.d/xen-pciback.conf"
DRACUT_CONF = "etc/dracut.conf.d/xen-pciback.conf"
DRACUT_MODULE_CONF = "etc/dracut.conf.d/90-xen-pciback-module.conf"
DEVICE_LIST = "etc/xen-pciback.conf"
TOOLS_MODULES = "etc/initramfs-tools/modules"
MKINITCPIO = "etc/mkinitcpio.conf"
DEFAULT_GRUB = "etc/default/grub"
BIND_SCRIPT = "usr/local/sbin/xen-pciback-bind"
BIND_UNIT = "etc/systemd/system/xen-pciback-bind.service"
# the files fixes may write: the CLI asks collect() to keep their current contents (diffs, --write)
EDITABLE = (
    MODPROBE_FILE,
    DRACUT_CONF,
    DRACUT_MODULE_CONF,
    DEVICE_LIST,
    TOOLS_MODULES,
    MKINITCPIO,
    DEFAULT_GRUB,
    BIND_SCRIPT,
    BIND_UNIT,
)
HEADER = "# Written by pciback-doctor"


def failing(a: Analysis) -> list[DevicePrediction]:
    return [d for d in a.devices if d.prediction.verdict is not Verdict.CLAIMED]


def applicable(a: Analysis, dev: DevicePrediction) -> list[str]:
    """Strategies that can work for this device, best first."""
    mode = a.backend.backend.mode
    if mode in ("missing", "unknown"):
        return []
    dracut = _generator(a) == "dracut"
    if _qubes_binder(a) is not None and dev.bdf.domain == 0:
        # 90qubes-pciback unbinds whatever holds the device at cmdline hook 02, built-in or not
        return ["qubes", *applicable_generic(a, dev, dracut)]
    return applicable_generic(a, dev, dracut)


def applicable_generic(a: Analysis, dev: DevicePrediction, dracut: bool) -> list[str]:
    mode = a.backend.backend.mode
    if mode == "builtin":
        return ["cmdline", *(["dracut"] if dracut else []), "late-binding"]
    if dev.native.mode == "builtin":
        # a built-in native driver binds before any module: only unbinding it helps
        return [*(["dracut"] if dracut else []), "late-binding"]
    return ["modprobe", "cmdline", *(["dracut"] if dracut else []), "late-binding"]


def precondition(strategy: str, a: Analysis) -> str | None:
    """Why `strategy` cannot work on this system whatever the devices, or None when it can."""
    mode = a.backend.backend.mode
    if (bare := a.system.boots_without_xen) is not None:  # proven on a boot without Xen, a fix proves nothing
        return f"the next boot starts '{bare.title}', without Xen: make a Xen entry the default first (PB607)"
    if mode == "missing":
        arch = a.backend.arch
        if arch is not None and arch.backend_kind == "none":
            return f"the target kernel has no PCI backend: {arch.dom0_note}"
        # the architecture's own symbol (XEN_PCIDEV_BACKEND is x86-only, XEN_PCIDEV_STUB Arm's)
        symbol = (
            arch.backend
            if arch is not None
            else "CONFIG_XEN_PCIDEV_BACKEND (x86) or CONFIG_XEN_PCIDEV_STUB (Arm)"
        )
        return f"the target kernel has no PCI backend: build it with {symbol}=y or =m"
    if mode == "unknown":
        return "whether the kernel has the PCI backend is unknown: give --config or --modules-dir"
    if strategy == "modprobe":
        if mode == "builtin":
            return "the backend is built in: kmod never applies modprobe.d options to it"
        if any(s.origin == "cmdline" and not s.classic for s in a.hides):
            # kmod appends the command line's xen-pciback.hide= after the config's options: it wins
            return "the command line already sets xen-pciback.hide=, which overrides modprobe.d"
        if any(not s.classic for s in _pending(a)):
            return "etc/default/grub sets xen-pciback.hide= (not in grub.cfg yet), which would override modprobe.d"
    if strategy == "qubes" and _qubes_binder(a) is None:
        return "the initramfs has no Qubes OS 90qubes-pciback hook"
    if strategy == "dracut" and _generator(a) != "dracut":
        generator = _generator(a)
        return (
            "no initramfs built by dracut was found"
            if generator == "unknown"
            else f"the initramfs is built by {generator}, not dracut"
        )
    if strategy == "late-binding" and (why := _unregistrable(a)):
        return why
    return None


def _unregistrable(a: Analysis) -> str | None:
    """A malformed hide makes pcistub_init fail before the `pciback` driver registers
    (drivers/xen/xen-pciback/pci_stub.c): there is then nothing to bind a device to."""
    builtin = a.backend.backend.mode == "builtin"
    sources = [s for s in a.hides if s.origin == "cmdline" or not builtin]
    hide = effective_hide(sources, builtin=builtin, classic_alias=False)
    if hide is not None and not hide.spec.valid:
        return f"{hide.label} is malformed, so the pciback driver never registers; fix the hide value first"
    return None


def build(strategy: str, a: Analysis, devices: Sequence[DevicePrediction]) -> Fix | None:
    builders = {
        "qubes": _qubes,
        "modprobe": _modprobe,
        "cmdline": _cmdline,
        "dracut": _dracut,
        "late-binding": _late_binding,
    }
    if not devices or precondition(strategy, a) is not None:
        return None
    if any(strategy not in applicable(a, d) for d in devices):
        return None
    return builders[strategy](a, devices)


# -- helpers ----------------------------------------------------------------------------------------


def _generator(a: Analysis) -> str:
    return a.image.generator if a.image is not None else "unknown"


def _named(a: Analysis) -> list[HideEntry]:
    """Every device already named by a hide value anywhere (host modprobe.d, the command line,
    the image's modprobe.d, classic spellings too), normalised and without repeats: (04:00.0) and
    (0000:04:00.0) are one device (pcistub_init defaults the domain to 0; hex case is free)."""
    sources = [*a.hides, *(modprobe_hides(a.image.modprobe, "image") if a.image else [])]
    sources += _pending(a)  # written in etc/default/grub, not in grub.cfg yet: meant, so kept
    seen: dict[tuple[int, int, int | None, int | None], HideEntry] = {}
    for source in sources:
        for e in source.spec.intended():
            seen.setdefault((e.domain, e.bus, e.slot, e.func), e)
    return list(seen.values())


def _pending(a: Analysis) -> list[HideSource]:
    """Hide tokens etc/default/grub has and grub.cfg lacks: the next update-grub brings them."""
    found: list[HideSource] = []
    for stale in a.system.next_boot.stale if a.system.next_boot else ():
        if stale.kind in ("dom0-cmdline", "cmdline"):
            found += cmdline_hides(parse_cmdline(" ".join(stale.missing), DEFAULT_GRUB))
    return found


def hide_value(a: Analysis, devices: Sequence[DevicePrediction]) -> str:
    """ONE value: every device already named plus the new ones, in the kernel's grammar. `hide` is a
    charp (param_set_charp): the last value the backend is given replaces the others."""
    named = _named(a)
    entries = [f"({e})" for e in named]
    exact = {(e.domain, e.bus, e.slot, e.func) for e in named if not e.wildcard}
    wild = [e for e in named if e.wildcard]
    for d in devices:
        b = d.bdf
        if (b.domain, b.bus, b.slot, b.func) in exact or any(
            e.matches(b.domain, b.bus, b.slot, b.func) for e in wild
        ):
            continue
        exact.add((b.domain, b.bus, b.slot, b.func))
        entries.append(f"({b})")
    return "".join(entries)


def _natives(devices: Sequence[DevicePrediction]) -> list[str]:
    return list(dict.fromkeys(d.native.name for d in devices if d.native.name and d.native.mode == "module"))


def _current(a: Analysis, path: str) -> str:
    return a.system.files.get(path) or ""


def _lines(text: str) -> list[str]:
    # only "\n" ends a line for kmod and the shell; str.splitlines would also split at form feed,
    # VT, U+0085 and U+2028 and so change lines the fix does not touch
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n") if text else []


def _text(lines: Sequence[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


_OPTIONS = re.compile(r"^(\s*options\s+xen[-_]pciback)(\s.*)?$")
_HIDE_PARAM = re.compile(r'\s+hide=(?:"[^"]*"\S*|\S*)')


def _without_hide(line: str) -> str | None:
    """An `options xen-pciback …` line without its hide= (None when nothing else is left): the
    admin's other parameters (permissive=1, passthrough=1) stay."""
    m = _OPTIONS.match(line)
    if m is None:
        return line
    rest = _HIDE_PARAM.sub("", m.group(2) or "")
    return f"{m.group(1)}{rest}" if rest.strip() else None


def _losers(a: Analysis, skip: str = "", texts: Mapping[str, str] | None = None) -> list[FileChange]:
    """Rewrite the other `options xen-pciback hide=` lines in etc/modprobe.d (kmod applies every
    options line in file order, the last hide= wins): one value, in one place. `texts`: the files
    as an earlier edit of the same fix leaves them."""
    changes = []
    for path, text in sorted((texts or a.system.files).items()):
        if path == skip or not path.startswith("etc/modprobe.d/"):
            continue
        lines = _lines(text)
        new = []
        for line in lines:
            kept = _without_hide(line)
            new.append(f"# hide= moved by pciback-doctor: {line}" if kept is None else kept)
        if new != lines:
            changes.append(FileChange(path, _text(new) if text.endswith("\n") else _text(new)[:-1]))
    return changes


def _modprobe_file(a: Analysis, devices: Sequence[DevicePrediction], with_hide: bool) -> FileChange:
    """Our modprobe.d file: the softdeps, and (with_hide) the one hide value; the admin's other
    lines, other `options xen-pciback` parameters included, stay as they are."""
    natives = _natives(devices)
    current = _current(a, MODPROBE_FILE)
    needed = [f"options xen-pciback hide={hide_value(a, devices)}"] if with_hide else []
    needed += [f"softdep {n} pre: xen-pciback" for n in natives]

    def same(line: str) -> str:  # kmod: `-` and `_` are one; spacing is free
        return " ".join(line.replace("_", "-").split())

    lines = _lines(current)
    hides = [line for line in lines if _OPTIONS.match(line) and _HIDE_PARAM.search(line)]
    have = {same(line) for line in lines}
    if all(same(line) in have for line in needed) and len(hides) == (1 if with_hide else 0):
        return FileChange(MODPROBE_FILE, current)  # already says it: leave the admin's file alone
    owned = re.compile("|".join([re.escape(HEADER), *(rf"\s*softdep\s+{re.escape(n)}\s" for n in natives)]))
    keep = [kept for line in lines if not owned.match(line) and (kept := _without_hide(line)) is not None]
    header = f"{HEADER}: load xen-pciback before the native drivers of the passed-through devices."
    return FileChange(MODPROBE_FILE, _text([*keep, header, *needed]))


def grub_update(a: Analysis) -> str:
    """The platform's command that regenerates the grub.cfg the next boot reads."""
    entry = a.system.next_boot.entry if a.system.next_boot else None
    cfg = entry.evidence[0].path if entry is not None and entry.source == "grub" and entry.evidence else None
    return a.system.platform.grub_update(cfg)


# the image generator each platform family installs by default: what rebuilds the image when no
# image shows which tool built it (Debian: initramfs-tools; Fedora/RHEL/Qubes and XCP-ng: dracut;
# Arch: mkinitcpio; Alpine: mkinitfs, whose image the initramfs reader does not recognise)
PLATFORM_GENERATOR = {
    "debian": "initramfs-tools",
    "fedora": "dracut",
    "xenserver": "dracut",
    "arch": "mkinitcpio",
    "alpine": "mkinitfs",
}


def rebuild_command(a: Analysis, generator: str | None = None) -> str:
    """How this system rebuilds the image of the target kernel: by the tool that built it, else by
    the one its platform installs."""
    release = a.system.release or "$(uname -r)"
    tool = generator or _generator(a)
    if tool == "unknown":
        tool = PLATFORM_GENERATOR.get(a.system.platform.family, tool)
    return {
        "dracut": f"dracut -f --kver {release}",
        "initramfs-tools": f"update-initramfs -u -k {release}",
        "mkinitcpio": "mkinitcpio -P",  # every preset: mkinitcpio(8)
        # alpinelinux/mkinitfs mkinitfs.in: `mkinitfs [...] [kernelversion]`, writes boot/initramfs-FLAVOUR
        "mkinitfs": f"mkinitfs {release}",
    }.get(tool, f"rebuild the initramfs for {release} with your distribution's tool")


def _image_changes(a: Analysis) -> tuple[list[FileChange], list[str]]:
    """Put the backend and the modprobe.d file into the initramfs, for each generator."""
    release = a.system.release or "$(uname -r)"
    generator = _generator(a)
    if generator == "dracut" or (generator == "unknown" and a.system.root.exists("etc/dracut.conf.d")):
        # dracut copies /etc/modprobe.d only in hostonly mode; add_drivers is installed either way
        content = f'{HEADER}\nadd_drivers+=" xen-pciback "\ninstall_items+=" /{MODPROBE_FILE} "\n'
        return [FileChange(DRACUT_CONF, content)], [rebuild_command(a, "dracut")]
    if generator == "initramfs-tools" or a.system.root.exists("etc/initramfs-tools"):
        current = _current(a, TOOLS_MODULES)
        if any(line.split()[:1] == ["xen-pciback"] for line in _lines(current)):
            return [], [rebuild_command(a, "initramfs-tools")]
        return [
            FileChange(
                TOOLS_MODULES,
                current + ("" if current.endswith("\n") or not current else "\n") + "xen-pciback\n",
            )
        ], [rebuild_command(a, "initramfs-tools")]
    if generator == "mkinitcpio" or a.system.root.exists(MKINITCPIO):
        current = _current(a, MKINITCPIO)
        match = re.search(r"^MODULES=\((.*)\)", current, re.M)
        if match and "xen-pciback" not in match.group(1).split():
            new = (
                current[: match.start(1)]
                + " ".join([*match.group(1).split(), "xen-pciback"])
                + current[match.end(1) :]
            )
            return [FileChange(MKINITCPIO, new)], [rebuild_command(a, "mkinitcpio")]
        return [], [rebuild_command(a, "mkinitcpio")]
    return [], [f"rebuild the initramfs for {release} so it holds xen-pciback and /{MODPROBE_FILE}"]


# -- the four strategies ------------------------------------------------------------------------------


def _retired(a: Analysis, natives: Sequence[str]) -> list[FileChange]:
    """Comment out the lines that only look like they work: `options pciback` and install or
    softdep rules of these natives that load the module name `pciback`, which no kernel since
    3.1 has (kmod finds nothing by that name). Left in place they keep PB105/PB304 red."""
    dead: dict[str, set[int]] = {}
    for d in a.system.modprobe.directives:
        path = d.evidence.path
        if path == MODPROBE_FILE or path not in a.system.files or d.evidence.line is None:
            continue
        classic_options = d.command == "options" and d.module == "pciback"
        loads_pciback = (
            # `pciback` as a word of its own: xen-pciback's `-` is no boundary for kmod
            d.command in ("install", "softdep")
            and d.module in natives
            and re.search(r"(?<![\w-])pciback\b", d.args)
        )
        if classic_options or loads_pciback:
            dead.setdefault(path, set()).add(d.evidence.line)
    changes = []
    for path, numbers in sorted(dead.items()):
        text = a.system.files[path]
        lines = _lines(text)
        for n in sorted(numbers):
            if n <= len(lines):
                lines[n - 1] = f"# disabled by pciback-doctor (no module is called pciback): {lines[n - 1]}"
        changes.append(FileChange(path, _text(lines) if text.endswith("\n") else _text(lines)[:-1]))
    return changes


def _cleaned(a: Analysis, natives: Sequence[str]) -> list[FileChange]:
    """The admin's modprobe.d files with the dead classic lines retired and the other hide=
    values moved: both edits of one file in one change (each on top of the other)."""
    retired = {c.path: c for c in _retired(a, natives)}
    moved = {
        c.path: c
        for c in _losers(a, MODPROBE_FILE, {**a.system.files, **{p: c.content for p, c in retired.items()}})
    }
    return [moved.get(p) or retired[p] for p in sorted({*retired, *moved})]


def _modprobe(a: Analysis, devices: Sequence[DevicePrediction]) -> Fix:
    files, commands = _image_changes(a)
    files = [*_cleaned(a, _natives(devices)), *files]
    natives = ", ".join(_natives(devices)) or "their native drivers"
    return Fix(
        "modprobe",
        f"one options xen-pciback hide=… for {_count(a, devices)} device{'s' * (_count(a, devices) != 1)} and softdep "
        f"{natives} pre: xen-pciback in modprobe.d, and the backend with that file in the initramfs",
        (_modprobe_file(a, devices, with_hide=True), *files),
        tuple(commands),
    )


def _count(a: Analysis, devices: Sequence[DevicePrediction]) -> int:
    return hide_value(a, devices).count("(")


def cmdline_token(a: Analysis, devices: Sequence[DevicePrediction]) -> str:
    return f"xen-pciback.hide={hide_value(a, devices)}"


# the GRUB variables whose words end up on a Linux command line (10_linux, 20_linux_xen)
GRUB_LINUX_VARIABLES = (
    "GRUB_CMDLINE_LINUX",
    "GRUB_CMDLINE_LINUX_DEFAULT",
    "GRUB_CMDLINE_LINUX_XEN_REPLACE",
    "GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT",
)


def grub_variable(a: Analysis) -> tuple[str, str | None]:
    """(variable, seed): where in etc/default/grub the dom0 token goes. GRUB's 20_linux_xen uses
    GRUB_CMDLINE_LINUX_XEN_REPLACE(_DEFAULT), when set non-empty, instead of the Linux variable, for
    Xen entries only: the token goes there so the non-Xen entries never get it. When neither is set,
    XEN_REPLACE_DEFAULT is created holding GRUB_CMDLINE_LINUX_DEFAULT's words (it replaces them)."""
    entry = a.system.next_boot.entry if a.system.next_boot else None
    if entry is None or not entry.is_xen:
        return "GRUB_CMDLINE_LINUX_DEFAULT", None
    values = grub_variables(a.system.root)
    for name in ("GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT", "GRUB_CMDLINE_LINUX_XEN_REPLACE"):
        if values.get(name):
            return name, None
    # created (or filled, when set empty) with the words it will replace for the Xen entries
    return "GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT", values.get("GRUB_CMDLINE_LINUX_DEFAULT") or ""


def _cmdline(a: Analysis, devices: Sequence[DevicePrediction]) -> Fix:
    token = cmdline_token(a, devices)
    files: list[FileChange] = []
    commands: list[str] = []
    entry = a.system.next_boot.entry if a.system.next_boot else None
    # the token goes in by hand when no file or tool of the doctor's carries it: then the hide
    # values in modprobe.d stay (composed into one), or a forgotten step would lose every device
    by_hand = not (
        (entry is not None and entry.source == "bls")
        or _xenserver_grub(a)
        or (DEFAULT_GRUB in a.system.files and not (entry is not None and entry.source == "xen.cfg"))
    )
    if a.backend.backend.mode == "module":
        # the token only names the devices; the module must still load before the native driver
        files.append(_modprobe_file(a, devices, with_hide=by_hand))
        more_files, more_commands = _image_changes(a)
        cleaned = _retired(a, _natives(devices)) if by_hand else _cleaned(a, _natives(devices))
        files += [*cleaned, *more_files]
        commands += more_commands
    where = "the dom0 kernel command line (by hand, replacing any pciback.hide= there)"
    if entry is not None and entry.source == "bls":
        commands.append(f'grubby --update-kernel=ALL --args="{token}"')
        where = "every BLS entry (grubby replaces the old value)"
    elif entry is not None and entry.source == "xen.cfg":
        where = "the kernel= line of the default section of xen.cfg, replacing any hide= there"
    elif _xenserver_grub(a):
        # XenServer/XCP-ng edit grub.cfg with their own tool, never grub-mkconfig (fixes/xen_cmdline.py).
        # `xe pci-disable-dom0-access` (8.3, XenServer 8) ends in the same `xen-cmdline --set-dom0`, but
        # xapi (pciops.ml get_hidden_pcidevs) first parses the old value as (%04x:%02x:%02x.%01x)
        # entries and fails on anything else (82.0.0, a wildcard): xen-cmdline works from any state
        commands.append(xen_cmdline.set_dom0(token))
        brand = a.system.platform.os_name or a.system.platform.name
        where = f"the dom0 command line of the {brand} boot entries (xen-cmdline replaces the old value)"
    elif DEFAULT_GRUB in a.system.files:
        variable, seed = grub_variable(a)
        text = a.system.files[DEFAULT_GRUB]
        # the older hide tokens go, wherever they are: a second token would replace ours or lose
        for other in GRUB_LINUX_VARIABLES:
            if other != variable:
                text = _grub_with_token(text, "", other).content
        files.append(_grub_with_token(text, token, variable, seed))
        commands.append(grub_update(a))
        where = f"{variable} in etc/default/grub"
    if by_hand:
        commands.append(f"by hand: put {token} on {where.split(' (')[0]}, replacing any (xen-)pciback.hide=")
    return Fix("cmdline", f"{token} (one value, every device) on {where}", tuple(files), tuple(commands))


def _xenserver_grub(a: Analysis) -> bool:
    """The next boot is a XenServer/XCP-ng grub.cfg entry, which xen-cmdline edits."""
    entry = a.system.next_boot.entry if a.system.next_boot else None
    return a.system.platform.family == "xenserver" and entry is not None and entry.source == "grub"


# the words a new hide token replaces: the kernel keeps only the last `xen-pciback.hide=`
# (module_param_string), and `pciback.hide=` names no module since 3.1
_HIDE_WORD = re.compile(r"(?:xen[-_])?pciback\.hide=.*")


def _is_hide(word: str) -> bool:
    return _HIDE_WORD.fullmatch(word) is not None


def _grub_with_token(text: str, token: str, variable: str, seed: str | None = None) -> FileChange:
    """`variable` in etc/default/grub with every (xen-)pciback.hide= word taken out of each of its
    assignments and `token` (if any) added where the shell keeps it; a variable unset or empty is
    filled with `seed` and the token (an empty *_XEN_REPLACE* replaces nothing: 20_linux_xen tests
    for a non-empty value, so a filled one must still hold the words it replaces)."""
    if not token:
        return FileChange(DEFAULT_GRUB, without_words(text, variable, _is_hide))
    before = shell_variables(text).get(variable, "")
    kept = [w for w in (before or "").split() if not _is_hide(w)]
    word = token if kept or not seed else f"{seed} {token}"
    new = with_word(text, variable, word, replaces=_is_hide)
    if before is None:  # `$(…)` in the value: the reader cannot say what it holds, before or after
        return FileChange(DEFAULT_GRUB, new)
    return FileChange(DEFAULT_GRUB, new, sets=((variable, " ".join([*kept, *word.split()])),))


def _dracut(a: Analysis, devices: Sequence[DevicePrediction]) -> Fix:
    listed = [line for line in _lines(_current(a, DEVICE_LIST)) if line.strip()]
    have = {parse_bdf(line.split("#", 1)[0]) for line in listed}
    new = listed or [f"{HEADER}: devices the xen-pciback dracut module binds early, one per line"]
    new += [str(d.bdf) for d in devices if d.bdf not in have]
    return Fix(
        "dracut",
        "the pciback dracut module binds the devices at the cmdline hook, before udev loads any driver "
        "(works against built-in native drivers too)",
        (
            FileChange(DEVICE_LIST, "\n".join(new) + "\n"),
            FileChange(
                DRACUT_MODULE_CONF,
                f'{HEADER}\nadd_dracutmodules+=" xen-pciback "\ninstall_items+=" /{DEVICE_LIST} "\n',
            ),
        ),
        (
            "make -C dracut-module install   # from a pciback-doctor checkout: /usr/lib/dracut/modules.d/90xen-pciback",
            rebuild_command(a, "dracut"),
        ),
    )


def _late_binding(a: Analysis, devices: Sequence[DevicePrediction]) -> Fix:
    bdfs = sorted({d.bdf for d in devices} | _already_bound_late(a))
    script = f"""#!/bin/sh
{HEADER}: hand PCI devices to pciback before the Xen domains start.
# driver_override makes pciback the only driver allowed to bind; then the current driver lets go.
set -u
DEVICES="{" ".join(str(b) for b in bdfs)}"
modprobe xen-pciback 2>/dev/null
failed=0
for bdf in $DEVICES; do
    dev=/sys/bus/pci/devices/$bdf
    [ -e "$dev" ] || {{ echo "xen-pciback-bind: $bdf: no such device" >&2; failed=1; continue; }}
    echo pciback > "$dev/driver_override" || failed=1
    if [ -e "$dev/driver" ]; then
        echo "$bdf" > "$dev/driver/unbind" || failed=1
    fi
    echo "$bdf" > /sys/bus/pci/drivers_probe || true
    [ "$(basename "$(readlink "$dev/driver")")" = pciback ] || {{ echo "xen-pciback-bind: $bdf not bound to pciback" >&2; failed=1; }}
done
exit $failed
"""
    # the units that start domains on this platform (xapi's on XenServer/XCP-ng), and the xl
    # toolstack's dom0 set-up, which a device for a driver domain must not meet unbound either
    extra = () if a.system.platform.family == "xenserver" else XL_DOM0_SERVICES
    before = " ".join(dict.fromkeys(s for s in (*a.system.platform.domain_services, *extra) if "." in s))
    unit = f"""{HEADER}
[Unit]
Description=Hand PCI passthrough devices to xen-pciback
After=systemd-modules-load.service systemd-udev-settle.service
Before={before}
DefaultDependencies=no

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/{BIND_SCRIPT}

[Install]
WantedBy=multi-user.target
"""
    return Fix(
        "late-binding",
        "a script writes pciback to each device's driver_override and rebinds it, run by a systemd unit "
        "ordered before the Xen domain services",
        (FileChange(BIND_SCRIPT, script, executable=True), FileChange(BIND_UNIT, unit)),
        ("systemctl enable xen-pciback-bind.service",),
    )


XL_DOM0_SERVICES = ("xen-qemu-dom0-disk-backend.service", "xen-init-dom0.service")


def _already_bound_late(a: Analysis) -> set[Bdf]:
    return {late.bdf for late in a.system.late_bindings if late.evidence.path == BIND_SCRIPT}


# -- offers: one fix per strategy for the whole system, each proven on a model copy ------------------


@dataclass(frozen=True)
class Offer:
    strategy: str
    fix: Fix | None  # None: not offered
    outcome: Outcome | None  # the simulated next boot with the fix applied
    why_not: str | None = None  # why it is not offered

    @property
    def offered(self) -> bool:
        return self.fix is not None and self.why_not is None


def _regenerate(a: Analysis) -> list[Fix]:
    """Fixes made of commands only: regenerate grub.cfg from etc/default/grub, rebuild the image
    from the host's configuration; the smallest first."""
    nb = a.system.next_boot
    grub = [grub_update(a)] if nb is not None and any(s.kind != "default" for s in nb.stale) else []
    image = [rebuild_command(a)] if a.image is not None and _generator(a) != "unknown" else []
    candidates = [grub, image, grub + image] if grub and image else [grub or image]
    return [
        Fix(
            "regenerate",
            "the settings on disk are right; the generated files are older than them",
            commands=tuple(c),
        )
        for c in candidates
        if c
    ]


def offers(a: Analysis, only: str | None = None) -> list[Offer]:
    """Every strategy for the devices the next boot will not claim, each applied to a model copy of
    the system (fixes/simulate.py) and offered only when then every wanted device is claimed and no
    claimed device changes. Generated files older than their settings come first: when regenerating
    them is enough, that is the one offer; when it is not, it is kept as a step to do anyway."""
    devices = failing(a)
    if not devices:
        return []
    found: list[Offer] = []
    if only is None and a.system.boots_without_xen is None:
        due: list[str] = []
        for commands in _regenerate(a):
            result = outcome(a, simulate(a, commands))
            if result.passes:
                return [Offer(commands.strategy, _described(commands, result), result)]
            # due anyway: grub.cfg older than etc/default/grub (PB605), or an image whose rebuild
            # changes the prediction (it is older than the settings it copies)
            if len(commands.commands) == 1 and (
                grub_update(a) in commands.commands or _changes(a, result.after)
            ):
                due += commands.commands
        if due:
            steps = Fix("regenerate", "generated files older than their settings", commands=tuple(due))
            found.append(Offer(steps.strategy, steps, None, "not enough on its own, but due anyway"))
    for strategy in (only,) if only else strategies(a):
        why = precondition(strategy, a)
        if why is None:
            misfits = [d for d in devices if strategy not in applicable(a, d)]
            if misfits:
                why = f"does not fit {_bdfs(misfits)}: {misfits[0].prediction.reason}"
        if why is None and strategy in ("modprobe", "cmdline"):
            value = hide_value(a, devices)
            if len(value) > HIDE_MAX:  # param_set_charp refuses it: the backend would hide nothing
                why = f"one hide value for all these devices is {len(value)} characters; the kernel takes at most {HIDE_MAX}"
        fix = build(strategy, a, devices) if why is None else None
        if fix is None:
            found.append(Offer(strategy, None, None, why or "does not fit these devices"))
            continue
        token = (
            cmdline_token(a, devices)
            if strategy == "cmdline"
            else qubes_token(a, devices)
            if strategy == "qubes"
            else None
        )
        result = outcome(a, simulate(a, fix, token))
        if result.passes:
            found.append(Offer(strategy, _described(fix, result), result))
        else:
            found.append(Offer(strategy, fix, result, _failure(result)))
    return found


def strategies(a: Analysis) -> tuple[str, ...]:
    """The strategies worth trying here: Qubes OS's own first when its binder is in the image."""
    generic = tuple(s for s in STRATEGIES if s != "qubes")
    return ("qubes", *generic) if _qubes_binder(a) is not None else generic


# -- Qubes OS: rd.qubes.hide_pci in GRUB_CMDLINE_LINUX (boot/qubes.py) ------------------------------


def _qubes_binder(a: Analysis) -> QubesPciback | None:
    return next((b for b in binders_for(a.system, a.image) if isinstance(b, QubesPciback)), None)


def _is_qubes_hide(word: str) -> bool:
    return word.split("=", 1)[0] == HIDE_PCI


def qubes_token(a: Analysis, devices: Sequence[DevicePrediction]) -> str | None:
    """`rd.qubes.hide_pci=` holding the words in force now (as lspci prints them: the hook prepends
    0000: itself, so a domain written there goes) and the devices the hook does not select by
    class; None when a device sits outside PCI domain 0, which the hook cannot name."""
    binder = _qubes_binder(a)
    if binder is None:
        return None
    image = a.image if a.image is not None and not a.image.error else None
    ctx = binder_context(a.system, a.backend.backend.mode, image)
    sel = binder.selection(ctx)
    by_class = {w.intended for w in sel.words if w.origin != HIDE_PCI and w.binds and not w.skipped}
    current = getarg(ctx.cmdlines, HIDE_PCI)
    words: list[str] = []
    for word in (current[0] if current else "").replace(",", " ").split():
        bdf = parse_bdf(word)
        if bdf is not None and bdf.domain == 0:  # a bogus word would stop the boot: it goes
            words.append(lspci_slot(bdf))
    for dev in devices:
        if dev.bdf.domain != 0:
            return None
        if dev.bdf not in by_class:
            words.append(lspci_slot(dev.bdf))
    return f"{HIDE_PCI}={','.join(dict.fromkeys(words))}"


def _qubes(a: Analysis, devices: Sequence[DevicePrediction]) -> Fix | None:
    token = qubes_token(a, devices)
    if token is None:
        return None
    if DEFAULT_GRUB not in a.system.files:
        return Fix(
            "qubes",
            f"{token} on the dom0 kernel command line",
            commands=(
                f"by hand: put {token} on the dom0 kernel command line, replacing any rd.qubes.hide_pci=",
            ),
        )
    values = grub_variables(a.system.root)
    # 20_linux_xen: a non-empty GRUB_CMDLINE_LINUX_XEN_REPLACE replaces GRUB_CMDLINE_LINUX for Xen entries
    variable = (
        "GRUB_CMDLINE_LINUX_XEN_REPLACE"
        if values.get("GRUB_CMDLINE_LINUX_XEN_REPLACE")
        else "GRUB_CMDLINE_LINUX"
    )
    text = a.system.files[DEFAULT_GRUB]
    for other in GRUB_LINUX_VARIABLES:
        if other != variable:
            text = without_words(text, other, _is_qubes_hide)
    new = with_word(text, variable, token, replaces=_is_qubes_hide)
    change = FileChange(DEFAULT_GRUB, new)
    return Fix(
        "qubes",
        f"{token} in {variable} of etc/default/grub (read by 90qubes-pciback)",
        (change,),
        (grub_update(a),),
    )


def qubes_fix(a: Analysis) -> Fix | None:
    """The Qubes OS fix, proven by simulation, or None."""
    found = [o for o in offers(a, only="qubes") if o.offered]
    return found[0].fix if found else None


def _changes(before: Analysis, after: Analysis) -> bool:
    now = {d.bdf: (d.prediction.verdict, d.prediction.winner) for d in after.devices}
    return any(now.get(d.bdf) != (d.prediction.verdict, d.prediction.winner) for d in before.devices)


def _bdfs(devices: Sequence[DevicePrediction]) -> str:
    names = [str(d.bdf) for d in devices]
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _described(fix: Fix, result: Outcome) -> Fix:
    return Fix(fix.strategy, f"{fix.description} — {result.summary(fix.commands)}", fix.files, fix.commands)


def _failure(result: Outcome) -> str:
    if result.worse:
        bdf, reason = result.worse[0]
        return f"simulated: {bdf}, claimed now, would not be ({reason})"
    bdf, reason = result.unclaimed[0]
    more = f" (and {len(result.unclaimed) - 1} more)" if len(result.unclaimed) > 1 else ""
    return f"simulated: {result.claimed} of {result.total} claimed; {bdf} still not{more}: {reason}"


def advice(a: Analysis) -> list[Fix]:
    """What the findings offer: the proven fixes, or — when none passes — one entry saying why each
    strategy fails and what the admin has to decide (never a dead end)."""
    found = offers(a)
    proven = [o.fix for o in found if o.offered and o.fix is not None]
    if proven or not found:
        return proven
    return [decision(found)]


def decision(found: Sequence[Offer]) -> Fix:
    """No strategy passes: why each fails (the same reason said once), the regeneration steps that
    are due anyway, and what is left for the admin to decide."""
    by_reason: dict[str, list[str]] = {}
    steps: tuple[str, ...] = ()
    for o in found:
        if o.strategy == "regenerate" and o.fix is not None:
            steps = o.fix.commands
        elif o.why_not:
            by_reason.setdefault(o.why_not, []).append(o.strategy)
    reasons = "; ".join(f"{', '.join(names)}: {why}" for why, names in by_reason.items())
    first = (
        f"Run {' and '.join(f'`{c}`' for c in steps)} anyway (generated files are older than their settings). "
        if steps
        else ""
    )
    return Fix(
        "decide",
        f"no fix the doctor can prove works here — {reasons}. {first}Then decide what to change by hand "
        "(see `pciback-doctor explain PB308`), or apply one anyway with `fix --strategy NAME` and check again.",
        commands=steps,
    )
