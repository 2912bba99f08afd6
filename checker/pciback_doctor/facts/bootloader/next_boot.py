"""The next boot: which loader the machine runs and which of its entries it starts."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pciback_doctor.facts.bootloader.bls import _BLS_DIRS, _bls_sorted, _pick_bls, _read_bls
from pciback_doctor.facts.bootloader.efivars import _efi_kind, _efi_next_loader
from pciback_doctor.facts.bootloader.entry import BootEntry, BootProblem, _Notes
from pciback_doctor.facts.bootloader.grub_defaults import _ShellDefaults
from pciback_doctor.facts.bootloader.grub_menu import (
    _flatten,
    _grub_cfg_path,
    _GrubMenu,
    _pick_grub,
    _read_grub,
)
from pciback_doctor.facts.bootloader.stale import Staleness, _stale_cmdline, _stale_default
from pciback_doctor.facts.bootloader.xen_cfg import _read_xen_cfg, _xen_cfg_candidates
from pciback_doctor.facts.root import Root
from pciback_doctor.model import Evidence


@dataclass(frozen=True)
class NextBoot:
    entry: BootEntry | None
    why: str
    entries: tuple[BootEntry, ...]
    stale: tuple[Staleness, ...] = ()
    problems: tuple[BootProblem, ...] = ()
    bootloader: str | None = None  # "grub" | "systemd-boot" | "xen.efi"

    @property
    def without_xen(self) -> BootEntry | None:
        """The next boot's entry when it starts a Linux kernel itself, with no hypervisor under it,
        while the menu has Xen entries: Xen is installed but not what boots next."""
        entry = self.entry
        if entry is None or entry.is_xen or entry.xen_path is not None or entry.kernel_path is None:
            return None
        return entry if any(e.is_xen for e in self.entries) else None


def find_next_boot(root: Root) -> NextBoot:
    """The entry the boot loader starts next, every entry seen, and why that one."""
    notes = _Notes()
    try:
        return _find_next_boot(root, notes)
    except (RecursionError, ValueError, struct.error) as exc:  # pragma: no cover - last resort
        notes.add(f"boot configuration not understood: {exc}", "")
        return NextBoot(None, "boot configuration not understood", (), (), tuple(notes.items))


def _find_next_boot(root: Root, notes: _Notes) -> NextBoot:
    grub_path = _grub_cfg_path(root, notes)
    grub = _read_grub(root, grub_path, notes) if grub_path else None
    uses_blscfg = grub is not None and grub.script.blscfg_line is not None
    sd_entries: list[BootEntry] = []
    if not uses_blscfg:
        sd_entries = _bls_sorted(_read_bls(root, _BLS_DIRS, notes))
    xen_cfgs = _xen_cfg_candidates(root)
    xen_entries: dict[str, tuple[list[BootEntry], str | None, Evidence | None]] = {
        p: _read_xen_cfg(root, p, notes) for p in xen_cfgs
    }
    all_entries: list[BootEntry] = []
    if grub is not None:
        all_entries.extend(i.entry for i in _flatten(grub.items) if i.entry is not None)
    all_entries.extend(sd_entries)
    for found in xen_entries.values():
        all_entries.extend(found[0])

    available = [
        kind
        for kind, present in (
            ("grub", grub is not None),
            ("systemd-boot", bool(sd_entries)),
            ("xen.efi", bool(xen_cfgs)),
        )
        if present
    ]
    # Which loader runs: the firmware's BootNext/BootOrder when /sys is there to say; else GRUB
    # (it is what Debian, Fedora and SUSE install), then systemd-boot, then xen.efi directly.
    chosen_kind, prefix, efi_xen_dir = "", "", ""
    efi = _efi_next_loader(root)
    if efi is not None:
        boot_name, loader_path = efi
        kind = _efi_kind(loader_path)
        if kind in available:
            chosen_kind = kind
            prefix = f"EFI {boot_name} starts {loader_path}; "
            efi_xen_dir = loader_path.rsplit("/", 1)[0].lstrip("/").lower()
    if not chosen_kind and available:
        chosen_kind = available[0]
        if len(available) > 1:
            notes.add(
                f"several boot loaders configured ({', '.join(available)}) and the EFI boot "
                f"order is unknown; assumed {chosen_kind}",
                "sys/firmware/efi/efivars",
            )
            prefix = f"assumed {chosen_kind} (EFI boot order unknown, also found "
            prefix += ", ".join(a for a in available if a != chosen_kind) + "); "

    stale: list[Staleness] = []
    if chosen_kind == "grub" and grub is not None:
        defaults = _ShellDefaults(root, notes)
        item, trail = _pick_grub(grub, notes)
        entry = item.entry if item is not None else None
        why = prefix + _grub_why(grub, defaults, entry, trail)
        if item is not None and entry is not None and entry.source == "grub":
            stale.extend(_stale_cmdline(entry, item, defaults, grub, notes))
        stale.extend(_stale_default(defaults, grub))
    elif chosen_kind == "systemd-boot":
        entry, reason = _pick_bls(root, sd_entries, notes)
        why = prefix + "systemd-boot: " + reason
    elif chosen_kind == "xen.efi":
        path = next((p for p in xen_cfgs if efi_xen_dir and p.lower().find(efi_xen_dir) >= 0), xen_cfgs[0])
        if len(xen_cfgs) > 1 and not efi_xen_dir:
            notes.add(f"several xen.cfg files; used {path}", path)
        entries, default, evidence = xen_entries[path]
        entry = next((e for e in entries if e.id == default), None)
        if default is None:
            # boot.c with no section looks `kernel=` up outside any section: nothing to boot.
            why = prefix + f"xen.efi: {path} has no [global] default="
            notes.add("xen.cfg has no [global] default=; xen.efi needs one", path)
            entry = entries[0] if entries else None
            if entry is not None:
                why += f"; assumed first section [{entry.id}]"
        elif entry is None:
            why = prefix + f"xen.efi: default={default} names no section with kernel="
            notes.add(why, path, evidence.line if evidence else None)
        else:
            line = evidence.line if evidence else None
            why = prefix + f"xen.efi: [global] default={default} ({path}:{line})"
    else:
        entry, why = None, "no boot loader configuration found (grub.cfg, BLS entries, xen.cfg)"
    return NextBoot(
        entry=entry,
        why=why,
        entries=tuple(all_entries),
        stale=tuple(stale),
        problems=tuple(notes.items),
        bootloader=chosen_kind or None,
    )


def _grub_why(grub: _GrubMenu, defaults: _ShellDefaults, entry: BootEntry | None, trail: str) -> str:
    parts: list[str] = []
    setting = grub.script.default_set
    value = grub.script.env.get("default", "")
    if setting is None:
        parts.append(f"{grub.path} sets no default: GRUB boots the first entry")
    else:
        line, raw = setting
        parts.append(f"{grub.path}:{line} `{raw}`")
        for var, what in (("next_entry", "one-shot next_entry (grub-reboot)"), ("saved_entry", "")):
            if var in raw and var in grub.grubenv:
                val, env_line = grub.grubenv[var]
                label = what or var
                parts.append(f"grubenv {label}='{val}' ({grub.env_path}:{env_line})")
                break
            if var in raw and var == "saved_entry":
                parts.append(f"no saved_entry in grubenv ({grub.env_path or 'absent'})")
        parts.append(f"default='{value}'")
    grub_default = defaults.get("GRUB_DEFAULT")
    if grub_default is not None:
        shown = grub_default.value if grub_default.value is not None else "(not evaluable)"
        parts.append(f"GRUB_DEFAULT={shown} ({grub_default.path}:{grub_default.line})")
    if trail:
        parts.append(trail)
    if entry is not None:
        parts.append(f"→ '{entry.title}' (menu {entry.menu_path or '?'})")
    return "GRUB: " + ", ".join(parts)
