"""`grub.cfg` as a menu: where it is, its entries as `BootEntry`s, and the one `default` picks."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pciback_doctor.facts.bootloader.bls import _BLS_DIRS, _bls_sorted, _read_bls
from pciback_doctor.facts.bootloader.entry import (
    _ESPS,
    BootEntry,
    _boot_path,
    _join,
    _Notes,
    release_in,
)
from pciback_doctor.facts.bootloader.grub_defaults import _read_grubenv
from pciback_doctor.facts.bootloader.grub_script import (
    _EntryRunner,
    _grub_lex,
    _GrubParser,
    _GrubScript,
    _Item,
    _Loader,
    _loader_lines,
)
from pciback_doctor.facts.limits import NESTING
from pciback_doctor.facts.root import Root
from pciback_doctor.model import Evidence

_GRUB_CFGS = ("boot/grub/grub.cfg", "boot/grub2/grub.cfg")


def _entry_from_loader(
    root: Root, item: _Item, loader: _Loader, path: str, notes: _Notes, menu_path: str
) -> BootEntry:
    evidence = [Evidence(path, item.line, f"menuentry '{item.title}'")]
    bases = ("boot/",)
    kernel_path = cmdline = xen_cmdline = xen_path = None
    initrds: list[str] = []
    is_xen = False
    if loader.hypervisor is not None:
        hv_path, hv_args, hv_line = loader.hypervisor
        xen_path = _boot_path(root, hv_path, bases)
        is_xen = xen_path.rsplit("/", 1)[-1].lower().startswith("xen")
        if not is_xen:
            notes.add("multiboot image is not Xen; treated as the kernel's loader", path, hv_line)
        xen_cmdline = _join(hv_args) if is_xen else None
        evidence.append(Evidence(path, hv_line, _join([hv_path, *hv_args])))
        mods = [m for m in loader.modules if not m[0].rsplit("/", 1)[-1].startswith("xenpolicy")]
        if mods:
            k_path, k_args, k_line = mods[0]
            kernel_path, cmdline = _boot_path(root, k_path, bases), _join(k_args)
            evidence.append(Evidence(path, k_line, _join([k_path, *k_args])))
            for m_path, _, m_line in mods[1:]:
                initrds.append(_boot_path(root, m_path, bases))
                evidence.append(Evidence(path, m_line, m_path))
        else:
            notes.add("Xen entry without a dom0 kernel module", path, hv_line)
    elif loader.kernel is not None:
        k_path, k_args, k_line = loader.kernel
        kernel_path, cmdline = _boot_path(root, k_path, bases), _join(k_args)
        evidence.append(Evidence(path, k_line, _join([k_path, *k_args])))
        for i_path, _ in loader.initrds:
            initrds.append(_boot_path(root, i_path, bases))
        if loader.initrds:
            evidence.append(Evidence(path, loader.initrds[0][1], "initrd"))
    return BootEntry(
        source="grub",
        title=item.title,
        id=item.id,
        is_xen=is_xen,
        kernel_path=kernel_path,
        kernel_release=release_in(root, kernel_path),
        cmdline=cmdline or "",
        xen_cmdline=xen_cmdline,
        initrd_paths=tuple(initrds),
        evidence=tuple(evidence),
        menu_path=menu_path,
        xen_path=xen_path,
    )


@dataclass
class _GrubMenu:
    path: str
    items: list[_Item]
    script: _GrubScript
    env_path: str | None
    grubenv: dict[str, tuple[str, int]]


def _read_grub(root: Root, path: str, notes: _Notes) -> _GrubMenu | None:
    text = root.read_text(path)
    if text is None:
        return None
    directory = path.rsplit("/", 1)[0]
    grubenv, env_path = _read_grubenv(root, f"{directory}/grubenv")
    env = {k: v for k, (v, _) in grubenv.items()}
    script = _GrubScript(root, path, env, notes)
    begin: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if m := re.match(r"### (BEGIN|END) (\S+) ###", line):
            if m.group(1) == "BEGIN":
                begin[m.group(2)] = number
            elif m.group(2) in begin:
                name = m.group(2).rsplit("/", 1)[-1]
                script.sections.append((begin.pop(m.group(2)), number, name))
    bls_notes = notes

    def bls() -> list[_Item]:
        found = _read_bls(root, ("boot/loader/entries", *_BLS_DIRS), bls_notes, script.env)
        return [_Item(e.title, e.id, 0, [], [], entry=e, section="blscfg") for e in _bls_sorted(found)]

    script.bls_hook = bls
    nodes, _ = _GrubParser(_grub_lex(text, path, notes), path, notes).parse(frozenset())
    items: list[_Item] = []
    script.run(nodes, items, script.env, True)

    # Entries run when chosen, with the environment grub.cfg left behind.
    def realise(menu: list[_Item], prefix: str, depth: int) -> None:
        for index, item in enumerate(menu):
            where = f"{prefix}{index}"
            if item.origin == path:
                item.section = item.section or script.section_of(item.line)
            if item.entry is not None:
                item.entry = _with_menu_path(item.entry, where)
                continue
            env = dict(script.env)
            env.update({str(k): a for k, a in enumerate(item.args, 1)})
            if item.submenu:
                if depth < NESTING.value:
                    script.path = item.origin
                    script.run(item.body, item.children, env, False)
                    script.path = path
                    realise(item.children, f"{where}>", depth + 1)
                continue
            runner = _EntryRunner(script)
            runner.path = item.origin
            runner.run(item.body, [], env, False)
            item.entry = _entry_from_loader(root, item, runner.loader, item.origin, notes, where)
            item.raw = runner.loader.raw
            item.lines = _loader_lines(runner.loader)

    realise(items, "", 0)
    return _GrubMenu(path, items, script, env_path, grubenv)


def _with_menu_path(entry: BootEntry, where: str) -> BootEntry:
    return BootEntry(**{**entry.__dict__, "menu_path": where})


def _flatten(items: list[_Item]) -> list[_Item]:
    out: list[_Item] = []
    for item in items:
        out.extend(_flatten(item.children) if item.submenu else [item])
    return out


def _split_default(value: str) -> list[str]:
    # grub-core/normal/menu.c menuentry_eq(): `>` separates submenu levels, `>>` is a literal `>`.
    parts, buf, i = [], [], 0
    while i < len(value):
        if value[i] == ">":
            if value[i + 1 : i + 2] == ">":
                buf.append(">")
                i += 2
                continue
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(value[i])
        i += 1
    parts.append("".join(buf))
    return parts


def _pick_grub(menu: _GrubMenu, notes: _Notes) -> tuple[_Item | None, str]:
    value = menu.script.env.get("default", "")
    items, trail = menu.items, []
    if not items:
        return None, "grub.cfg defines no menu entry"
    chosen: _Item | None = None
    parts = _split_default(value) if value else ["0"]
    for depth, part in enumerate(parts):
        found: _Item | None = None
        if not items:  # an empty submenu: GRUB shows an empty menu, nothing boots by itself
            notes.add(
                f"default '{value}' leads into an empty submenu", menu.path, chosen.line if chosen else None
            )
            trail.append("empty submenu")
            return None, "; ".join(trail)
        if re.fullmatch(r"\d+", part):
            if int(part) < len(items):
                found = items[int(part)]
        else:
            found = next((i for i in items if part in (i.title, i.id)), None)
        if found is None:
            line = menu.script.default_set[0] if menu.script.default_set else None
            notes.add(
                f"default '{value}' matches no menu entry"
                + (f" at level {depth + 1}" if depth else "")
                + "; GRUB falls back to the first entry",
                menu.path,
                line,
            )
            trail.append(f"'{part}' not found, first entry used")
            found = items[0]
        chosen = found
        if not found.submenu:
            if depth + 1 < len(parts):
                notes.add(f"default '{value}' goes past a menuentry", menu.path, found.line)
            break
        items = found.children
        if depth + 1 == len(parts):
            while chosen is not None and chosen.submenu:
                # A submenu as default opens it, with its own first entry as default.
                chosen = chosen.children[0] if chosen.children else None
            break
    return chosen, "; ".join(trail)


# XenServer/XCP-ng: a UEFI install writes its whole menu to the ESP, a BIOS one to boot/grub/grub.cfg
# (host-installer backend.py installBootLoader); xen-cmdline edits the ESP one first when it exists
# (python-libs xcp/bootloader.py Bootloader.loadExisting), so the doctor reads that one first too.
_XENSERVER_CFG = "boot/efi/EFI/xenserver/grub.cfg"


def _grub_cfg_path(root: Root, notes: _Notes) -> str | None:
    text = root.read_text(_XENSERVER_CFG)
    if text is not None and re.search(r"^\s*menuentry\b", text, re.M):
        return _XENSERVER_CFG
    for path in _GRUB_CFGS:
        if root.exists(path):
            return path
    for esp in _ESPS:
        for vendor in root.listdir(f"{esp}/EFI"):
            path = f"{esp}/EFI/{vendor}/grub.cfg"
            text = root.read_text(path)
            if text is None:
                continue
            if re.search(r"^\s*(menuentry|blscfg)\b", text, re.M):
                return path
            # The usual ESP stub: search for /boot, then `configfile $prefix/grub.cfg`.
            if "configfile" in text:
                notes.add("ESP grub.cfg chains to a grub.cfg not found in the root", path)
    return None
