"""Xen's EFI loader: xen.efi reads XEN.cfg next to itself (xen/common/efi/boot.c)."""

from __future__ import annotations

from pciback_doctor.facts.bootloader.entry import _ESPS, BootEntry, _join, _Notes, release_in
from pciback_doctor.facts.root import Root
from pciback_doctor.model import Evidence


def _xen_cfg_candidates(root: Root) -> list[str]:
    found: list[str] = []
    for esp in _ESPS:
        for vendor in root.listdir(f"{esp}/EFI"):
            directory = f"{esp}/EFI/{vendor}"
            names = root.listdir(directory)
            for name in names:
                lower = name.lower()
                if lower.startswith("xen") and lower.endswith(".efi"):
                    cfg = _cfg_for_efi(root, directory, name)
                    if cfg and cfg not in found:
                        found.append(cfg)
            for name in names:
                if name.lower().startswith("xen") and name.lower().endswith(".cfg"):
                    cfg = f"{directory}/{name}"
                    if cfg not in found:
                        found.append(cfg)
    return found


def _cfg_for_efi(root: Root, directory: str, efi_name: str) -> str | None:
    # boot.c: replace the tail after the last '.' / '-' by ".cfg", shortening until one exists:
    # xen-4.17.efi → xen-4.17.cfg, xen-4.cfg, xen.cfg.
    stem = efi_name
    while True:
        cut = max(stem.rfind("."), stem.rfind("-"))
        if cut <= 0:
            return None
        stem = stem[:cut]
        if root.exists(f"{directory}/{stem}.cfg"):
            return f"{directory}/{stem}.cfg"


def _read_xen_cfg(
    root: Root, path: str, notes: _Notes
) -> tuple[list[BootEntry], str | None, Evidence | None]:
    text = root.read_text(path) or ""
    directory = path.rsplit("/", 1)[0]
    sections: dict[str, dict[str, tuple[str, int]]] = {}
    order: list[str] = []
    current: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
            sections.setdefault(current, {})
            order.append(current)
        elif "=" in line and current is not None:
            key, _, value = line.partition("=")
            sections[current].setdefault(key.strip(), (value.strip(), number))
        else:
            notes.add("not a xen.cfg line", path, number, raw)
    default = sections.get("global", {}).get("default")
    if "chain" in sections.get("global", {}):
        notes.add("chained xen.cfg not followed", path, sections["global"]["chain"][1])
    entries: list[BootEntry] = []
    for name in order:
        values = sections[name]
        if name == "global" or "kernel" not in values:
            continue
        kernel, k_line = values["kernel"]
        k_file, _, k_args = kernel.partition(" ")
        options, o_line = values.get("options", ("", 0))
        evidence = [Evidence(path, k_line, f"kernel={kernel}")]
        if o_line:
            evidence.append(Evidence(path, o_line, f"options={options}"))
        ramdisks = []
        if "ramdisk" in values:
            r_file, r_line = values["ramdisk"]
            ramdisks.append(f"{directory}/{r_file.split()[0].lstrip('/')}" if r_file else "")
            evidence.append(Evidence(path, r_line, f"ramdisk={r_file}"))
        # Files are read from the directory xen.efi (and xen.cfg) is in.
        kernel_path = f"{directory}/{k_file.lstrip('/')}"
        entries.append(
            BootEntry(
                source="xen.cfg",
                title=name,
                id=name,
                is_xen=True,
                kernel_path=kernel_path,
                kernel_release=release_in(root, kernel_path),
                cmdline=_join(k_args.split()),
                xen_cmdline=_join(options.split()),
                initrd_paths=tuple(r for r in ramdisks if r),
                evidence=tuple(evidence),
                xen_path=path[: -len(".cfg")] + ".efi",
            )
        )
    if default is None:
        return entries, None, None
    return entries, default[0], Evidence(path, default[1], f"default={default[0]}")
