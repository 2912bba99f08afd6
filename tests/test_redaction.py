"""Redaction that tests itself: identifiers of every kind planted in every file the support report
quotes, none of them left in its HTML or Markdown (issue 16, "redaction leaks")."""

from __future__ import annotations

import ipaddress
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from helpers import FIXTURES, doctor
from pciback_doctor.support.redact import Redactor
from test_support_report import make_root


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # dracut's ifname=<name>:<MAC>, and a MAC as the last field of ip=
        ("ifname=eth0:52:54:00:12:34:56 rd.neednet=1", "ifname=eth0:mac-1 rd.neednet=1"),
        ("ip=eth0:dhcp:1500:52:54:00:12:34:56", "ip=eth0:dhcp:1500:mac-1"),
        # a MAC without separators: udev's predictable name, and as a value
        ("net.ifnames=1 enx5254001234ab hwaddr=525400ABCDEF", "net.ifnames=1 enxmac-1 hwaddr=mac-2"),
        ("52:54:00:ab:cd:ef is 525400abcdef", "mac-1 is mac-1"),
        # FAT volume ids: udev link names, GRUB's search, fstab
        ("root=/dev/disk/by-uuid/1A2B-3C4D ro", "root=/dev/disk/by-uuid/uuid-1 ro"),
        ("search --fs-uuid --set=root 1a2b-3c4d", "search --fs-uuid --set=root uuid-1"),
        ("/dev/disk/by-partuuid/0a1b2c3d-02", "/dev/disk/by-partuuid/uuid-1"),
        # mdadm's array UUID
        ("rd.md.uuid=3f8a1b2c:4d5e6f70:81928374:a5b6c7d8", "rd.md.uuid=uuid-1"),
        # a machine id where etc/machine-id did not say it
        ("systemd.machine_id=3F2A9C1BE4D84F0A9B6C7D8E9F0A1B2C", "systemd.machine_id=machine-id-1"),
        (
            "loader/entries/3f2a9c1be4d84f0a9b6c7d8e9f0a1b2c-6.1.0-17-amd64.conf",
            "loader/entries/machine-id-1-6.1.0-17-amd64.conf",
        ),
        # ip=<client>:<peer>:<gateway>:<netmask>:<hostname>:<device>:<autoconf>
        (
            "ip=10.0.0.5::10.0.0.1:255.255.255.0:db-07:eth0:none",
            "ip=ip-1::ip-2:255.255.255.0:host-1:eth0:none",
        ),
        # e-mail addresses, iSCSI names
        ("# ask alice.smith+xen@example.org", "# ask email-1"),
        (
            "rd.iscsi.initiator=iqn.2004-10.com.ubuntu:01:4f2ab1c3d5e6 netroot=iscsi:10.0.0.9::::iqn.2001-04.com.example:storage.disk1",
            "rd.iscsi.initiator=iqn-1 netroot=iscsi:ip-1::::iqn-2",
        ),
        ("systemd.hostname=db-07.example.org HOSTNAME='db-07'", "systemd.hostname=host-1 HOSTNAME='host-1'"),
        # what must stay
        ("time 202311261234 and e1000e and 8086:10d3", "time 202311261234 and e1000e and 8086:10d3"),
        ("ip=dhcp ip=eth0:dhcp", "ip=dhcp ip=eth0:dhcp"),
    ],
)
def test_redactor_leaks_closed(text: str, expected: str) -> None:
    assert Redactor(keep=["6.1.0-17-amd64", "e1000e"]).text(text) == expected


def test_host_name_in_any_case_and_its_domain() -> None:
    redactor = Redactor(hostnames=["XenHost-Alice.Example.ORG"], keep=["e1000e"])
    text = "xenhost-alice XENHOST-ALICE XenHost-Alice.example.org mail.example.org example.org e1000e"
    assert redactor.text(text) == "host-1 host-1 host-1 mail.domain-1 domain-1 e1000e"
    # the installer's volume group named after the host, as LVM and device-mapper spell it
    assert (
        Redactor(hostnames=["db-07"]).text("rd.lvm.lv=fedora_db-07/root root=/dev/mapper/fedora_db--07-root")
        == "rd.lvm.lv=fedora_host-1/root root=/dev/mapper/fedora_host-1-root"
    )
    # a short plain word still only as written, in lower and in upper case
    assert Redactor(hostnames=["xen"]).text("Xen 4.17 on xen (XEN)") == "Xen 4.17 on host-1 (host-1)"


def test_empty_hostname_and_machine_id_files_leak_nothing(tmp_path: Path) -> None:
    """etc/hostname and etc/machine-id empty: the host name is still in ip=, the machine id still in
    systemd.machine_id= and in the BLS entries' file names."""
    root = make_root(tmp_path / "grub")
    (root / "etc/hostname").write_text("")
    (root / "etc/machine-id").write_text("")
    grub = root / "boot/grub/grub.cfg"
    grub.write_text(
        grub.read_text().replace(" resume=", " systemd.machine_id=0123456789abcdef0123456789abcdef resume=")
    )
    (root / "etc/modprobe.d/router-nic.conf").write_text(
        "# uplink of xenhost-alice\nsoftdep e1000e pre: xen-pciback # xenhost-alice\n"
    )
    bls = tmp_path / "bls"
    shutil.copytree(FIXTURES / "boot-fedora-bls", bls, symlinks=True)
    (bls / "etc/machine-id").write_text("")
    for name, out in (("grub", "r.html"), ("grub", "r.md"), ("bls", "b.html"), ("bls", "b.md")):
        target = tmp_path / out
        doctor("report", "--root", str(tmp_path / name), "--output", str(target))
        text = target.read_text("utf-8").lower()
        for value in (
            "xenhost-alice",
            "0123456789abcdef0123456789abcdef",
            "8d3f0a6c5e4b4f2a9c1d7e6b5a4f3c2d",
        ):
            assert value not in text, (out, value)
    assert "machine-id-1-6.5.6-300.fc39.x86_64" in (tmp_path / "b.md").read_text("utf-8")


# -- the property --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planted:
    uuid: str
    fat: str
    md: str
    mac: str
    mac_bare: str
    ipv4: str
    ipv6: str
    host: str
    domain: str
    machine_id: str
    user: str
    serial: str
    iqn: str
    host_in_etc: bool  # etc/hostname names the host, or it is empty (the host only in ip=)
    id_in_etc: bool  # etc/machine-id holds the id, or it is empty

    def values(self) -> dict[str, list[str]]:
        v6 = ipaddress.IPv6Address(self.ipv6)
        return {
            "uuid": [self.uuid, self.fat, self.md],
            "mac": [self.mac, self.mac.replace(":", "-"), self.mac_bare],
            "ip": [self.ipv4, v6.compressed, v6.exploded],
            "host": [self.host],
            "domain": [self.domain],
            "machine-id": [self.machine_id],
            "user": [self.user, f"{self.user}@{self.domain}"],
            "iqn": [self.iqn],
            "serial": [self.serial],
        }


_hex = st.text("0123456789abcdef", min_size=1, max_size=1)


def _hexes(n: int) -> st.SearchStrategy[str]:
    return st.text("0123456789abcdef", min_size=n, max_size=n)


def _mixed_case(s: str, flips: list[bool]) -> str:
    return "".join(c.upper() if f else c for c, f in zip(s, flips, strict=False))


def _netmask_shaped(bits: int) -> bool:
    inverted = ~bits & 0xFFFFFFFF
    return bits >> 31 == 1 and inverted & (inverted + 1) == 0


@st.composite
def planted(draw: st.DrawFn) -> Planted:
    mac_bytes = draw(st.binary(min_size=6, max_size=6))
    bare = draw(_hexes(12).filter(lambda h: not h.isdigit()))
    v4 = draw(
        st.ip_addresses(v=4).filter(
            lambda a: (
                not (a.is_loopback or a.is_unspecified or a.is_multicast or a.is_reserved)
                and int(a) >> 24 not in (0, 255)
                and not _netmask_shaped(int(a))  # 192.0.0.0 is kept: a netmask is no address
            )
        )
    )
    v6 = draw(
        st.ip_addresses(v=6).filter(
            lambda a: (
                not (a.is_loopback or a.is_unspecified or a.ipv4_mapped or a.sixtofour)
                and a.exploded.count("0000") < 6
            )
        )
    )
    short = draw(st.from_regex(r"[a-z]{2,6}[0-9]{1,3}-[a-z]{2,6}", fullmatch=True))
    domain = draw(st.from_regex(r"[a-z]{4,9}\.(?:org|net|com|io)", fullmatch=True))
    flips = draw(st.lists(st.booleans(), min_size=len(short), max_size=len(short)))
    return Planted(
        uuid=str(draw(st.uuids())),
        fat=f"{draw(_hexes(4))}-{draw(_hexes(4))}".upper(),
        md=":".join(draw(_hexes(8)) for _ in range(4)),
        mac=":".join(f"{b:02x}" for b in mac_bytes),
        mac_bare=bare,
        ipv4=str(v4),
        ipv6=str(v6),
        host=_mixed_case(short, flips),
        domain=domain,
        machine_id=draw(_hexes(32)),
        user=draw(st.from_regex(r"[a-z]{3,8}[0-9]{0,2}", fullmatch=True)),
        serial=draw(st.from_regex(r"[A-Z]{2}[0-9]{6,10}[A-Z]", fullmatch=True)),
        iqn=f"iqn.2004-10.com.{draw(st.from_regex(r'[a-z]{4,8}', fullmatch=True))}:01:{draw(_hexes(12))}",
        host_in_etc=draw(st.booleans()),
        id_in_etc=draw(st.booleans()),
    )


def plant(root: Path, p: Planted) -> None:
    """Every identifier into every file the report quotes: the next boot's command line (grub.cfg),
    the modprobe.d directives, the xl config, etc/hostname and etc/machine-id, etc/default/grub."""
    (root / "etc/hostname").write_text(f"{p.host}.{p.domain}\n" if p.host_in_etc else "")
    (root / "etc/machine-id").write_text(f"{p.machine_id}\n" if p.id_in_etc else "")
    (root / "etc/modprobe.d/router-nic.conf").write_text(
        f"softdep e1000e pre: xen-pciback # {p.host} {p.mac} {p.ipv4} /home/{p.user}/ serial={p.serial}"
        f" {p.user}@{p.domain}\n"
    )
    (root / "etc/xen/router.cfg").write_text(
        f'name = "{p.host.lower()}"\ntype = "pv"\n'
        f'kernel = "/home/{p.user}/vmlinuz"\n'
        f"vif = ['mac={p.mac.replace(':', '-')},ip={p.ipv4}']\n"
        "pci = ['0000:05:00.0']\n"
    )
    grub = root / "boot/grub/grub.cfg"
    cmdline = (
        f" systemd.machine_id={p.machine_id} rd.md.uuid={p.md} resume=/dev/disk/by-uuid/{p.fat}"
        f" rd.luks.uuid=luks-{p.uuid} ifname=eth1:{p.mac} ip={p.ipv4}::{p.ipv4}:255.255.255.0:"
        f"{p.host.lower()}.{p.domain}:eth0:none ip=[{p.ipv6}]:::64::eth2:none net.ifnames=1 enx{p.mac_bare}"
        f" rd.lvm.lv=fedora_{p.host}/root rd.iscsi.initiator={p.iqn}"
    )
    text = grub.read_text()
    anchor = "xen-pciback.hide=(0000:05:00.0) quiet"
    assert anchor in text
    grub.write_text(text.replace(anchor, anchor + cmdline))


_SCRATCH = Path(tempfile.mkdtemp(prefix="pciback-redaction-"))
_TEMPLATE = make_root(_SCRATCH / "template")


def _reports(root: Path, redact: bool) -> dict[str, str]:
    args = ["report", "--root", str(root)] + ([] if redact else ["--no-redact"])
    doctor(*args, "--output", str(root.parent / "r.html"))
    doctor(*args, "--output", str(root.parent / "r.md"))
    return {
        "html": (root.parent / "r.html").read_text("utf-8"),
        "markdown": (root.parent / "r.md").read_text("utf-8"),
    }


_BASELINE = " ".join(_reports(_TEMPLATE, redact=True).values()).lower()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=planted())
def test_no_planted_identifier_survives_redaction(p: Planted) -> None:
    values = p.values()
    # a value the report holds anyway (a word of its own text) proves nothing either way
    assume(not any(v.lower() in _BASELINE for vs in values.values() for v in vs))
    with tempfile.TemporaryDirectory(dir=_SCRATCH) as scratch:
        root = Path(scratch) / "root"
        shutil.copytree(_TEMPLATE, root, symlinks=True)
        plant(root, p)
        plain = " ".join(_reports(root, redact=False).values()).lower()
        for kind, vs in values.items():  # every kind is quoted somewhere: the property has teeth
            assert any(v.lower() in plain for v in vs), f"no {kind} in the unredacted report"
        for name, text in _reports(root, redact=True).items():
            lowered = text.lower()
            for kind, vs in values.items():
                for v in vs:
                    assert v.lower() not in lowered, f"{kind} {v!r} left in the {name} report"
            assert not re.search(r"[0-9a-f]{32}", lowered), f"a machine id left in the {name} report"
