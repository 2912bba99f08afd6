"""EFI variables (only on a live root or a root with a copy of /sys): which loader the firmware
starts next, and systemd-boot's own variables.
"""

from __future__ import annotations

import struct

from pciback_doctor.facts.root import Root

_EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"


_EFI_LOADER = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"  # systemd-boot's vendor GUID


_DEVPATH_FILE = (4, 4)  # media device path, file path node


def _efivar(root: Root, name: str, guid: str) -> bytes | None:
    data = root.read_bytes(f"sys/firmware/efi/efivars/{name}-{guid}")
    return None if data is None or len(data) < 4 else data[4:]  # 4 bytes of attributes first


def _utf16z(data: bytes) -> str:
    text = data.decode("utf-16-le", "replace")
    return text.split("\0", 1)[0]


def _efi_next_loader(root: Root) -> tuple[str, str] | None:
    """(Boot#### name, file path of its loader) that the firmware starts next, when known."""
    nxt = _efivar(root, "BootNext", _EFI_GLOBAL)
    order = _efivar(root, "BootOrder", _EFI_GLOBAL)
    numbers: list[int] = []
    if nxt and len(nxt) >= 2:
        numbers.append(struct.unpack_from("<H", nxt)[0])
    if order:
        numbers.extend(struct.unpack_from(f"<{len(order) // 2}H", order))
    for number in numbers:
        name = f"Boot{number:04X}"
        option = _efivar(root, name, _EFI_GLOBAL)
        if option is None or len(option) < 6:
            continue
        attributes, list_len = struct.unpack_from("<IH", option)
        if not attributes & 1:  # LOAD_OPTION_ACTIVE: the firmware skips inactive entries
            continue
        end = 6
        while end + 1 < len(option) and option[end : end + 2] != b"\0\0":
            end += 2
        pos, stop = end + 2, min(end + 2 + list_len, len(option))
        while pos + 4 <= stop:
            kind, sub, length = struct.unpack_from("<BBH", option, pos)
            if length < 4 or kind == 0x7F:
                break
            if (kind, sub) == _DEVPATH_FILE:
                return name, _utf16z(option[pos + 4 : pos + length]).replace("\\", "/")
            pos += length
        return name, ""
    return None


def _efi_kind(loader_path: str) -> str:
    base = loader_path.rsplit("/", 1)[-1].lower()
    if base.startswith("xen"):
        return "xen.efi"
    if base.startswith(("shim", "grub")):
        return "grub"
    if base.startswith("systemd-boot"):
        return "systemd-boot"
    return ""
