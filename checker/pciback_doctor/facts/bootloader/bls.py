"""BLS type #1 entries (uapi-group Boot Loader Specification), as systemd-boot and GRUB's blscfg
read them, and systemd-boot's choice among them.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pciback_doctor.facts.bootloader.efivars import _EFI_LOADER, _efivar, _utf16z
from pciback_doctor.facts.bootloader.entry import BootEntry, _boot_path, _join, _Notes, release_in
from pciback_doctor.facts.root import Root
from pciback_doctor.model import Evidence

_BLS_DIRS = ("boot/loader/entries", "efi/loader/entries", "boot/efi/loader/entries")


_LOADER_CONFS = ("efi/loader/loader.conf", "boot/efi/loader/loader.conf", "boot/loader/loader.conf")


def _strverscmp(a: str, b: str) -> int:
    """systemd's strverscmp_improved(): what sd-boot and blscfg sort versions with."""
    i = j = 0
    ok = set("~-^.")

    def skip(s: str, k: int) -> int:
        while k < len(s) and not (s[k].isalnum() or s[k] in ok):
            k += 1
        return k

    while True:
        i, j = skip(a, i), skip(b, j)
        ca, cb = a[i : i + 1], b[j : j + 1]
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if not ca or not cb:
            return (ca > cb) - (ca < cb)
        for sep, before in (("-", 1), ("^", -1), (".", -1)):
            if ca == sep or cb == sep:
                if ca != sep:
                    return before
                if cb != sep:
                    return -before
                i, j = i + 1, j + 1
                break
        else:
            if ca.isdigit() or cb.isdigit():
                if not ca.isdigit():
                    return -1
                if not cb.isdigit():
                    return 1
                while i < len(a) and a[i] == "0":
                    i += 1
                while j < len(b) and b[j] == "0":
                    j += 1
                ei, ej = i, j
                while ei < len(a) and a[ei].isdigit():
                    ei += 1
                while ej < len(b) and b[ej].isdigit():
                    ej += 1
                na, nb = a[i:ei], b[j:ej]
                r = (len(na) > len(nb)) - (len(na) < len(nb)) or (na > nb) - (na < nb)
            else:
                if not ca.isalpha():
                    return -1
                if not cb.isalpha():
                    return 1
                ei, ej = i, j
                while ei < len(a) and a[ei].isalpha():
                    ei += 1
                while ej < len(b) and b[ej].isalpha():
                    ej += 1
                na, nb = a[i:ei], b[j:ej]
                r = (na > nb) - (na < nb)
            if r:
                return r
            i, j = ei, ej
        continue


@dataclass(frozen=True)
class _Bls:
    entry: BootEntry
    sort_key: str | None
    machine_id: str | None
    version: str | None
    spent: bool  # boot counting: no tries left


def _read_bls(
    root: Root, dirs: Sequence[str], notes: _Notes, env: dict[str, str] | None = None
) -> list[_Bls]:
    """BLS entries in the given directories. `env`: grub's variables when blscfg reads them."""
    found: list[_Bls] = []
    seen: set[str] = set()
    for directory in dict.fromkeys(dirs):
        partition = directory[: -len("loader/entries")]  # paths are relative to this partition
        for name in root.listdir(directory):
            path = f"{directory}/{name}"
            if not name.endswith(".conf") or path in seen:
                continue
            seen.add(path)
            text = root.read_text(path)
            if text is not None and (bls := _parse_bls(root, text, path, partition, notes, env)):
                found.append(bls)
    return found


_BLS_KNOWN = frozenset(
    {"architecture", "devicetree-overlay", "grub_users", "grub_arg", "grub_class", "uki", "profile"}
)


def _parse_bls(
    root: Root, text: str, path: str, partition: str, notes: _Notes, env: dict[str, str] | None
) -> _Bls | None:
    keys: dict[str, tuple[str, int]] = {}
    options: list[tuple[str, int]] = []
    initrds: list[tuple[str, int]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, value = [*line.split(None, 1), ""][:2]
        value = value.strip()
        if key == "options":
            options.append((value, number))
        elif key == "initrd":
            initrds.append((value, number))
        elif key in ("title", "version", "linux", "efi", "machine-id", "sort-key", "devicetree"):
            keys[key] = (value, number)
        elif key not in _BLS_KNOWN:
            notes.add(f"unknown BLS key '{key}'", path, number, line)
    # Boot counting: `NAME+LEFT-DONE.conf`; the id has no counter (systemd-boot, bootctl).
    stem = path.rsplit("/", 1)[-1][: -len(".conf")]
    tries = re.search(r"\+(\d+)(?:-\d+)?$", stem)
    ident = stem[: tries.start()] if tries else stem
    if "linux" not in keys:
        notes.add("BLS entry without 'linux' (not a Linux entry)", path)
        return None
    bases = (partition,)
    kernel_written, kernel_line = keys["linux"]
    kernel_path = _boot_path(root, kernel_written, bases)
    opts = " ".join(v for v, _ in options)
    if env is not None:  # grub's blscfg expands `$kernelopts` and friends from grubenv
        for var in sorted(set(re.findall(r"\$\{?([A-Za-z_]\w*)", opts)) - set(env)):
            notes.add(f"${var} is not set (grubenv): it expands to nothing", path, options[0][1])
        opts = re.sub(
            r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)",
            lambda m: env.get(m.group(1) or m.group(2), ""),
            opts,
        )
    version = keys.get("version", ("", 0))[0]
    release = release_in(root, kernel_path)
    if release is None and version[:1].isdigit():
        release = version
    evidence = [Evidence(path, kernel_line, f"linux {kernel_written}")]
    evidence.extend(Evidence(path, n, f"options {v}") for v, n in options)
    evidence.extend(Evidence(path, n, f"initrd {v}") for v, n in initrds)
    entry = BootEntry(
        source="bls",
        title=keys.get("title", (ident, 0))[0] or ident,
        id=ident,
        is_xen=False,
        kernel_path=kernel_path,
        kernel_release=release,
        cmdline=_join(opts.split()),
        xen_cmdline=None,
        initrd_paths=tuple(_boot_path(root, v, bases) for v, _ in initrds),
        evidence=tuple(evidence),
    )
    return _Bls(
        entry,
        keys["sort-key"][0] if "sort-key" in keys else None,
        keys["machine-id"][0] if "machine-id" in keys else None,
        version or None,
        bool(tries and tries.group(1) == "0"),
    )


def _bls_sorted(found: list[_Bls]) -> list[BootEntry]:
    """systemd-boot's order (src/boot/boot.c boot_entry_compare), newest first."""

    def compare(a: _Bls, b: _Bls) -> int:
        if a.spent != b.spent:  # entries with no tries left go last
            return 1 if a.spent else -1
        if (a.sort_key is None) != (b.sort_key is None):
            return 1 if a.sort_key is None else -1
        if a.sort_key is not None and b.sort_key is not None:
            if a.sort_key != b.sort_key:
                return -1 if a.sort_key < b.sort_key else 1
            if a.machine_id != b.machine_id:
                return -1 if (a.machine_id or "") < (b.machine_id or "") else 1
            r = -_strverscmp(a.version or "", b.version or "")
            if r:
                return r
        return -_strverscmp(a.entry.id or "", b.entry.id or "")

    return [b.entry for b in sorted(found, key=functools.cmp_to_key(compare))]


def _loader_conf_default(root: Root) -> tuple[str, Evidence] | None:
    for path in _LOADER_CONFS:
        text = root.read_text(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            key, _, value = line.strip().partition(" ")
            if key == "default" and value.strip():
                return value.strip(), Evidence(path, number, line.strip())
    return None


def _pick_bls(root: Root, ordered: list[BootEntry], notes: _Notes) -> tuple[BootEntry | None, str]:
    if not ordered:
        return None, "no BLS entries"
    efivars_dir = "sys/firmware/efi/efivars"
    for var, label in (("LoaderEntryOneShot", "one-shot"), ("LoaderEntryDefault", "default")):
        data = _efivar(root, var, _EFI_LOADER)
        if data:
            wanted = _utf16z(data)
            for e in ordered:
                if wanted in (e.id, f"{e.id}.conf"):
                    return e, f"EFI variable {var}='{wanted}' ({efivars_dir}) sets the {label} entry"
            notes.add(f"{var}='{wanted}' names no entry", f"{efivars_dir}/{var}-{_EFI_LOADER}")
    setting = _loader_conf_default(root)
    if setting is not None:
        pattern, evidence = setting
        if pattern == "@saved":
            data = _efivar(root, "LoaderEntryLastBooted", _EFI_LOADER)
            pattern = _utf16z(data) if data else ""
        for e in ordered:
            if pattern and any(fnmatch.fnmatchcase(x, pattern) for x in (e.id or "", f"{e.id}.conf")):
                return e, f"loader.conf default '{pattern}' ({evidence.path}:{evidence.line})"
        notes.add(f"loader.conf default '{pattern}' matches no entry", evidence.path, evidence.line)
    first = ordered[0]
    return first, "no default set: the first entry in systemd-boot's order (sort-key, then newest version)"
