"""Which dom0 platform a root is, and so which tools its fixes name: detected from `etc/os-release`
(os-release(5): `usr/lib/os-release` when `etc/os-release` is missing) and from the layout a platform
leaves behind when its os-release says little (XCP-ng/XenServer's `etc/xensource-inventory`, Qubes'
`etc/qubes-release`). Pure: a Root in, a frozen Platform out."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from pciback_doctor.facts.root import Root
from pciback_doctor.model import Evidence

OS_RELEASE = ("etc/os-release", "usr/lib/os-release")


@dataclass(frozen=True)
class Platform:
    id: str  # debian | ubuntu | qubes | xcp-ng | xenserver | fedora | rhel | alpine | arch | unknown
    name: str  # as the system names itself (PRETTY_NAME), for the output header
    family: str  # debian | fedora | xenserver | alpine | arch | unknown: whose tools the fixes name
    evidence: tuple[Evidence, ...] = ()
    # os-release NAME ("Debian GNU/Linux"; XenServer/XCP-ng: PRODUCT_BRAND): how boot menu titles
    # name the system, e.g. the entries xen-cmdline edits
    os_name: str = ""

    @property
    def domain_services(self) -> tuple[str, ...]:
        """The units that start the domains at boot, which a late binding must come before: xapi's
        xapi-domains.service (xapi-autostart-vms, after xapi.service) on XenServer/XCP-ng, where no
        xendomains exists; on Qubes OS qubesd.service, through which every qvm-start goes (the
        qubes-vm@ and qubes-netvm units run qvm-start); the xl toolstack's xendomains elsewhere."""
        if self.family == "xenserver":
            return ("xapi-domains.service", "xapi.service")
        if self.id == "qubes":
            return ("qubesd.service",)
        return ("xendomains.service", "xen-domains.service", "xendomains")

    @property
    def initramfs_systemd(self) -> bool | None:
        """Whether its initramfs runs systemd, when the platform decides it: the Fedora family
        (Fedora, RHEL, Qubes) builds with dracut and its systemd modules; elsewhere the image says."""
        return True if self.family == "fedora" else None

    def grub_update(self, grub_cfg: str | None) -> str:
        """The command that regenerates `grub_cfg` (root-relative) from etc/default/grub."""
        if self.family == "debian":
            return "update-grub"  # Debian's wrapper: grub-mkconfig -o /boot/grub/grub.cfg
        tool = "grub2-mkconfig" if self.family == "fedora" else "grub-mkconfig"
        default = "boot/grub2/grub.cfg" if self.family == "fedora" else "boot/grub/grub.cfg"
        return f"{tool} -o /{grub_cfg or default}"


UNKNOWN = Platform("unknown", "unknown", "unknown")

# os-release ID (or an ID_LIKE word) -> family; the first word of ID, then ID_LIKE, that is known wins
_FAMILIES = {
    "debian": "debian",
    "ubuntu": "debian",
    "qubes": "fedora",
    "fedora": "fedora",
    "rhel": "fedora",
    "centos": "fedora",
    "rocky": "fedora",
    "almalinux": "fedora",
    "xenenterprise": "xenserver",
    "xcp-ng": "xenserver",
    "alpine": "alpine",
    "arch": "arch",
}
# XenServer and XCP-ng alike: os-release ID is PRODUCT_NAME, `xenenterprise` for both (xcp-ng-release
# src/xenserver/etc/os-release, branding-xcp-ng branding/branding); the installer writes PRODUCT_BRAND
# ('XCP-ng', 'XenServer', 'Citrix Hypervisor') into etc/xensource-inventory as KEY='value' lines
# (host-installer backend.py writeInventory): the brand tells them apart.
INVENTORY = "etc/xensource-inventory"
_XENSERVER_IDS = ("xcp-ng", "xenenterprise", "xenserver")

# layouts that name the platform when os-release does not (or names only its base): file, the ids
# under which os-release already names it, the id and name to use otherwise, family
_LAYOUT = (("etc/qubes-release", ("qubes",), "qubes", "Qubes OS", "fedora"),)


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines as os-release(5) writes them: shell-quoted values, `#` comments."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or not key.isidentifier() or key.startswith("#"):
            continue
        try:
            words = shlex.split(value, comments=False, posix=True)
        except ValueError:  # unbalanced quote: take it as written
            words = [value.strip("\"'")]
        fields[key] = " ".join(words)
    return fields


def detect_platform(root: Root) -> Platform:
    found = next(((rel, text) for rel in OS_RELEASE if (text := root.read_text(rel)) is not None), None)
    fields = parse_os_release(found[1]) if found else {}
    evidence = (Evidence(found[0], None, f"ID={fields.get('ID', '')}"),) if found else ()
    os_id = fields.get("ID", "").lower()
    name = fields.get("PRETTY_NAME") or fields.get("NAME") or ""
    if os_id in _XENSERVER_IDS or root.exists(INVENTORY):
        return _xenserver(root, fields, evidence)
    for rel, names, layout_id, layout_name, family in _LAYOUT:
        if os_id not in names and root.exists(rel):
            # os-release names the base distribution (or nothing): the layout is more precise
            return Platform(
                layout_id,
                layout_name,
                family,
                (*evidence, Evidence(rel, None, "present")),
                fields.get("NAME", ""),
            )
    for word in [os_id, *fields.get("ID_LIKE", "").lower().split()]:
        if word in _FAMILIES:
            return Platform(os_id or word, name or os_id, _FAMILIES[word], evidence, fields.get("NAME", ""))
    return Platform(os_id or "unknown", name or "unknown", "unknown", evidence, fields.get("NAME", ""))


def _xenserver(root: Root, os_release: dict[str, str], evidence: tuple[Evidence, ...]) -> Platform:
    text = root.read_text(INVENTORY)
    inventory = parse_os_release(text) if text is not None else {}
    if text is not None:
        evidence = (
            *evidence,
            Evidence(INVENTORY, None, f"PRODUCT_BRAND={inventory.get('PRODUCT_BRAND', '')}"),
        )
    # os-release NAME is PRODUCT_BRAND too (the same template)
    brand = inventory.get("PRODUCT_BRAND") or os_release.get("NAME") or ""
    version = inventory.get("PRODUCT_VERSION") or os_release.get("VERSION_ID") or ""
    platform_id = "xcp-ng" if brand.lower().startswith("xcp") else "xenserver"
    name = os_release.get("PRETTY_NAME") or " ".join(w for w in (brand or "XenServer/XCP-ng", version) if w)
    return Platform(platform_id, name, "xenserver", evidence, brand)
