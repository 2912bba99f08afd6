"""Fix strategies (SPEC §8): concrete file contents and commands for the devices the next boot will
not hand to pciback, chosen to fit what the doctor found. Pure: they read only the analysis (and the
file contents the collector kept in `System.files`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pciback_doctor.model import FileChange, Fix, Verdict

if TYPE_CHECKING:  # annotations only: `--help` needs STRATEGIES without the whole boot model
    from pciback_doctor.boot.analysis import Analysis
    from pciback_doctor.boot.model import DevicePrediction
    from pciback_doctor.facts.pci import Bdf

STRATEGIES = ("modprobe", "cmdline", "dracut", "late-binding")

MODPROBE_FILE = "etc/modprobe.d/xen-pciback.conf"
DRACUT_CONF = "etc/dracut.conf.d/xen-pciback.conf"
DRACUT_MODULE_CONF = "etc/dracut.conf.d/90-xen-pciback-module.conf"
DEVICE_LIST = "etc/xen-pciback.conf"
TOOLS_MODULES = "etc/initramfs-tools/modules"
MKINITCPIO = "etc/mkinitcpio.conf"
DEFAULT_GRUB = "etc/default/grub"
BIND_SCRIPT = "usr/local/sbin/xen-pciback-bind"
BIND_UNIT = "etc/systemd/system/xen-pciback-bind.service"
# the files fixes may write: the collector keeps their current contents for diffs and --write
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
    if mode == "builtin":
        return ["cmdline", *(["dracut"] if dracut else []), "late-binding"]
    if dev.native.mode == "builtin":
        # a built-in native driver binds before any module: only unbinding it helps
        return [*(["dracut"] if dracut else []), "late-binding"]
    return ["modprobe", "cmdline", *(["dracut"] if dracut else []), "late-binding"]


def build(strategy: str, a: Analysis, devices: Sequence[DevicePrediction]) -> Fix | None:
    builders = {"modprobe": _modprobe, "cmdline": _cmdline, "dracut": _dracut, "late-binding": _late_binding}
    if not devices or any(strategy not in applicable(a, d) for d in devices):
        return None
    return builders[strategy](a, devices)


def device_fixes(a: Analysis, dev: DevicePrediction) -> list[Fix]:
    return [fix for s in applicable(a, dev) if (fix := build(s, a, [dev])) is not None]


# -- helpers ----------------------------------------------------------------------------------------


def _generator(a: Analysis) -> str:
    return a.image.generator if a.image is not None else "unknown"


def _hide_value(a: Analysis, devices: Sequence[DevicePrediction]) -> str:
    """Every device already hidden (valid entries of the value in force) plus the new ones, in the
    kernel's grammar: (DDDD:BB:SS.F) one after the other."""
    entries: list[str] = []
    for source in a.hides:
        if not source.classic:
            entries += [f"({e})" for e in source.spec.intended()]
    entries += [f"({d.bdf})" for d in devices]
    return "".join(dict.fromkeys(entries))


def _natives(devices: Sequence[DevicePrediction]) -> list[str]:
    return list(dict.fromkeys(d.native.name for d in devices if d.native.name and d.native.mode == "module"))


def _current(a: Analysis, path: str) -> str:
    return a.system.files.get(path) or ""


def _without(text: str, pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return [line for line in text.splitlines() if not regex.match(line)]


def _modprobe_file(a: Analysis, devices: Sequence[DevicePrediction], with_hide: bool) -> FileChange:
    natives = _natives(devices)
    owned = "|".join(
        [
            r"options\s+(xen[-_])?pciback\s",
            re.escape(HEADER),
            *(rf"softdep\s+{re.escape(n)}\s" for n in natives),
        ]
    )
    current = _current(a, MODPROBE_FILE)
    needed = [f"options xen-pciback hide={_hide_value(a, devices)}"] if with_hide else []
    needed += [f"softdep {n} pre: xen-pciback" for n in natives]

    def same(line: str) -> str:  # kmod: `-` and `_` are one; spacing is free
        return " ".join(line.replace("_", "-").split())

    have = {same(line) for line in current.splitlines()}
    if all(same(line) in have for line in needed):
        return FileChange(MODPROBE_FILE, current)  # already says it: leave the admin's file alone
    keep = _without(current, rf"\s*({owned})")
    header = f"{HEADER}: load xen-pciback before the native drivers of the passed-through devices."
    return FileChange(MODPROBE_FILE, "\n".join([*keep, header, *needed]) + "\n")


def rebuild_command(a: Analysis, generator: str | None = None) -> str:
    """How this system rebuilds the image of the target kernel, by the tool that built it."""
    release = a.system.release or "$(uname -r)"
    return {
        "dracut": f"dracut -f --kver {release}",
        "initramfs-tools": f"update-initramfs -u -k {release}",
        "mkinitcpio": "mkinitcpio -P",
    }.get(generator or _generator(a), f"rebuild the initramfs for {release} with your distribution's tool")


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
        if any(line.split()[:1] == ["xen-pciback"] for line in current.splitlines()):
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
            d.command in ("install", "softdep") and d.module in natives and re.search(r"\bpciback\b", d.args)
        )
        if classic_options or loads_pciback:
            dead.setdefault(path, set()).add(d.evidence.line)
    changes = []
    for path, numbers in sorted(dead.items()):
        lines = a.system.files[path].splitlines()
        for n in sorted(numbers):
            lines[n - 1] = f"# disabled by pciback-doctor (no module is called pciback): {lines[n - 1]}"
        changes.append(FileChange(path, "\n".join(lines) + "\n"))
    return changes


def _modprobe(a: Analysis, devices: Sequence[DevicePrediction]) -> Fix:
    files, commands = _image_changes(a)
    files = [*_retired(a, _natives(devices)), *files]
    natives = ", ".join(_natives(devices)) or "their native drivers"
    return Fix(
        "modprobe",
        f"options xen-pciback hide=… and softdep {natives} pre: xen-pciback in modprobe.d, "
        "and the backend with that file in the initramfs",
        (_modprobe_file(a, devices, with_hide=True), *files),
        tuple(commands),
    )


def _cmdline(a: Analysis, devices: Sequence[DevicePrediction]) -> Fix:
    token = f"xen-pciback.hide={_hide_value(a, devices)}"
    files: list[FileChange] = []
    commands: list[str] = []
    if a.backend.backend.mode == "module":
        # the token only names the devices; the module must still load before the native driver
        files.append(_modprobe_file(a, devices, with_hide=False))
        more_files, more_commands = _image_changes(a)
        files += more_files
        commands += more_commands
    entry = a.system.next_boot.entry if a.system.next_boot else None
    where = "the dom0 kernel command line"
    if entry is not None and entry.source == "bls":
        commands.append(f'grubby --update-kernel=ALL --args="{token}"')
        where = "every BLS entry (grubby)"
    elif entry is not None and entry.source == "xen.cfg":
        where = "the kernel= line of the default section of xen.cfg"
    elif DEFAULT_GRUB in a.system.files:
        files.append(
            _grub_with_token(a.system.files[DEFAULT_GRUB], token, entry is not None and entry.is_xen)
        )
        commands.append("update-grub")
        where = "etc/default/grub"
    return Fix("cmdline", f"add {token} to {where}", tuple(files), tuple(commands))


_HIDE_TOKEN = re.compile(r"\s*\b(?:xen[-_])?pciback\.hide=\S*")


def _grub_with_token(text: str, token: str, xen: bool) -> FileChange:
    """Put the token into the variable GRUB's scripts use for the dom0 line: Debian's
    *_XEN_REPLACE_DEFAULT replaces the Linux one for Xen entries when it is set (20_linux_xen)."""
    names = ["GRUB_CMDLINE_LINUX_DEFAULT"]
    if xen and re.search(r"^GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT=", text, re.M):
        names = ["GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT"]
    name = names[0]
    pattern = re.compile(rf'^({name}=)(["\']?)(.*?)\2\s*$', re.M)
    match = pattern.search(text)
    if match is None:
        new = text + ("" if text.endswith("\n") or not text else "\n") + f'{name}="{token}"\n'
    else:
        value = _HIDE_TOKEN.sub("", match.group(3)).strip()
        value = f"{value} {token}".strip()
        new = text[: match.start()] + f'{name}="{value}"' + text[match.end() :]
    return FileChange(DEFAULT_GRUB, new)


def _dracut(a: Analysis, devices: Sequence[DevicePrediction]) -> Fix:
    listed = [line for line in _current(a, DEVICE_LIST).splitlines() if line.strip()]
    have = {line.split("#", 1)[0].strip() for line in listed}
    new = listed or [f"{HEADER}: devices the xen-pciback dracut module binds early, one per line"]
    new += [str(d.bdf) for d in devices if str(d.bdf) not in have]
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
    unit = f"""{HEADER}
[Unit]
Description=Hand PCI passthrough devices to xen-pciback
After=systemd-modules-load.service systemd-udev-settle.service
Before=xendomains.service xen-qemu-dom0-disk-backend.service xen-init-dom0.service
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


def _already_bound_late(a: Analysis) -> set[Bdf]:
    return {late.bdf for late in a.system.late_bindings if late.evidence.path == BIND_SCRIPT}
