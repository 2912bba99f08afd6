"""Platform profiles: which distribution a root is, from os-release and the layout it leaves."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback_doctor.facts.platform import detect_platform, parse_os_release
from pciback_doctor.facts.root import Root

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.mark.parametrize(
    ("files", "id_", "family", "grub_update"),
    [
        (
            {"etc/os-release": 'ID=debian\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'},
            "debian",
            "debian",
            "update-grub",
        ),
        ({"usr/lib/os-release": "ID=ubuntu\nID_LIKE=debian\n"}, "ubuntu", "debian", "update-grub"),
        (
            {"etc/os-release": "ID=fedora\n"},
            "fedora",
            "fedora",
            "grub2-mkconfig -o /boot/grub2/grub.cfg",
        ),
        ({"etc/os-release": 'ID="rocky"\nID_LIKE="rhel centos fedora"\n'}, "rocky", "fedora", None),
        # a Qubes dom0 that names only its base distribution: its release file says more
        (
            {"etc/os-release": "ID=fedora\n", "etc/qubes-release": "Qubes release 4.2.3 (R4.2)\n"},
            "qubes",
            "fedora",
            None,
        ),
        (
            {"etc/os-release": "ID=centos\n", "etc/xensource-inventory": "PRODUCT_BRAND='XCP-ng'\n"},
            "xcp-ng",
            "xenserver",
            None,
        ),
        # XCP-ng and XenServer both write ID=xenenterprise (PRODUCT_NAME): the brand tells them apart
        (
            {
                "etc/os-release": 'NAME="XCP-ng"\nID="xenenterprise"\nPRETTY_NAME="XCP-ng 8.3.0"\n',
                "etc/xensource-inventory": "PRODUCT_BRAND='XCP-ng'\nPRODUCT_NAME='xenenterprise'\n",
            },
            "xcp-ng",
            "xenserver",
            None,
        ),
        (
            {
                "etc/os-release": 'NAME="XenServer"\nID="xenenterprise"\n',
                "etc/xensource-inventory": "PRODUCT_BRAND='XenServer'\nPRODUCT_VERSION='8.4.0'\n",
            },
            "xenserver",
            "xenserver",
            None,
        ),
        (
            {"etc/os-release": 'NAME="Citrix Hypervisor"\nID="xenenterprise"\n'},
            "xenserver",
            "xenserver",
            None,
        ),
        ({"etc/os-release": "ID=arch\n"}, "arch", "arch", "grub-mkconfig -o /boot/grub/grub.cfg"),
        ({}, "unknown", "unknown", None),
        ({"etc/os-release": "ID='unbalanced\n"}, "unbalanced", "unknown", None),
    ],
)
def test_detect(
    tmp_path: Path, files: dict[str, str], id_: str, family: str, grub_update: str | None
) -> None:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    platform = detect_platform(Root(tmp_path))
    assert (platform.id, platform.family) == (id_, family)
    if grub_update is not None:
        assert platform.grub_update(None) == grub_update


def test_os_release_quoting() -> None:
    fields = parse_os_release("# comment\nNAME=\"Fedora Linux\"\nVERSION='39 (Server)'\nBAD LINE\n")
    assert fields == {"NAME": "Fedora Linux", "VERSION": "39 (Server)"}


def test_fedora_fix_regenerates_the_grub_cfg_it_boots(tmp_path: Path) -> None:
    platform = detect_platform(Root(FIXTURES / "boot-fedora-bls"))
    assert platform.name == "Fedora Linux 39 (Server Edition)"
    assert (
        platform.grub_update("boot/efi/EFI/fedora/grub.cfg")
        == "grub2-mkconfig -o /boot/efi/EFI/fedora/grub.cfg"
    )


def test_xcpng_fixture_is_xcpng_with_its_brand() -> None:
    platform = detect_platform(Root(FIXTURES / "xcpng-8.3-malformed-hide"))
    assert (platform.id, platform.name, platform.family, platform.os_name) == (
        "xcp-ng",
        "XCP-ng 8.3.0",
        "xenserver",
        "XCP-ng",
    )
    assert [e.path for e in platform.evidence] == ["etc/os-release", "etc/xensource-inventory"]


UNIT = """[Unit]
Before={before}
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo pciback > /sys/bus/pci/devices/0000:05:00.0/driver_override'
"""


@pytest.mark.parametrize(
    ("fixture", "counted", "not_counted"),
    [
        # xl's xendomains starts the domains on Debian and the like
        ("example", "xendomains.service", "qubesd.service"),
        # XCP-ng: xapi-domains.service (after xapi.service) runs xapi-autostart-vms; no xendomains
        ("xcpng-8.3-malformed-hide", "xapi-domains.service", "xendomains.service"),
        # Qubes OS: every qvm-start (qubes-vm@, qubes-netvm) goes through qubesd
        ("qubes-4.2-hide-pci-domain", "qubesd.service", "xendomains.service"),
    ],
)
def test_a_late_binding_counts_as_early_only_before_the_platforms_domain_start(
    tmp_path: Path, fixture: str, counted: str, not_counted: str
) -> None:
    from pciback_doctor.facts.system import read_late_bindings

    platform = detect_platform(Root(FIXTURES / fixture))
    for before, early in ((counted, True), (not_counted, False)):
        root = tmp_path / before
        (root / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
        (root / "etc/systemd/system/bind.service").write_text(UNIT.format(before=before))
        (root / "etc/systemd/system/multi-user.target.wants/bind.service").symlink_to("../bind.service")
        found = read_late_bindings(Root(root), platform.domain_services)
        assert [(str(b.bdf), b.before_domains) for b in found] == [("0000:05:00.0", early)], (fixture, before)
