"""`pciback-doctor report`: the support file. Redaction leaves no identifier of the machine behind
and keeps what a diagnosis needs; the HTML is one self-contained, well-formed file that a browser
shows with the verdicts, findings and fixes, also on a phone."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from helpers import FIXTURES, unavailable
from pciback_doctor import support
from pciback_doctor.boot.analysis import analyse
from pciback_doctor.checks import run_checks
from pciback_doctor.facts.system import Options, collect
from pciback_doctor.fixes import EDITABLE
from pciback_doctor.outcome import build_report
from pciback_doctor.support import html as support_html
from pciback_doctor.support import markdown as support_markdown
from pciback_doctor.support.facts import SupportReport
from pciback_doctor.support.redact import Redactor

HOSTNAME = "xenhost-alice"
MACHINE_ID = "3f2a9c1be4d84f0a9b6c7d8e9f0a1b2c"
MAC = "00:16:3e:12:34:56"
IP = "192.168.1.20"
GATEWAY = "192.168.1.1"
USER = "alice"
RESUME_UUID = "9b8e7d6c-5a4b-4c3d-8e2f-1a2b3c4d5e6f"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def make_root(root: Path) -> Path:
    """Debian's GRUB-booted Xen dom0 (boot-debian-grub-xen) with the kernel config, module tree and
    NIC of module-modprobe-options, plus what a real machine carries: a host name, a machine id, a
    network configuration on the kernel command line and a PV domU whose kernel sits in a home."""
    shutil.copytree(FIXTURES / "boot-debian-grub-xen", root, symlinks=True)
    donor = FIXTURES / "module-modprobe-options"
    shutil.copytree(donor / "sys", root / "sys", symlinks=True)
    shutil.copytree(donor / "lib/modules/6.1.0-56-amd64", root / "lib/modules/6.1.0-17-amd64")
    shutil.copy(donor / "boot/config-6.1.0-56-amd64", root / "boot/config-6.1.0-17-amd64")
    (root / "etc/hostname").write_text(f"{HOSTNAME}\n")
    (root / "etc/machine-id").write_text(f"{MACHINE_ID}\n")
    (root / "etc/modprobe.d").mkdir()
    (root / "etc/modprobe.d/router-nic.conf").write_text(
        f"# the router's uplink, MAC {MAC}\nsoftdep e1000e pre: xen-pciback\n"
    )
    (root / "etc/xen").mkdir()
    (root / "etc/xen/router.cfg").write_text(
        'name = "router"\ntype = "pv"\n'
        f'kernel = "/home/{USER}/vmlinuz"\n'
        f"vif = ['mac={MAC},ip={IP}']\n"
        "pci = ['0000:05:00.0']\n"
    )
    # the default entry (3>0>2) boots with a static address and PXE's BOOTIF, as installers write
    grub = root / "boot/grub/grub.cfg"
    network = (
        f" resume=UUID={RESUME_UUID} ip={IP}::{GATEWAY}:255.255.255.0:{HOSTNAME}:eth0:none"
        f" BOOTIF=01-{MAC.replace(':', '-')}"
    )
    text = grub.read_text()
    old = "module2\t/boot/vmlinuz-6.1.0-17-amd64 placeholder root=UUID=4f1c2b7e-9a3d-4c11-8e2f-5b6a7c8d9e01 ro xen-pciback.hide=(0000:05:00.0) quiet"
    assert old in text
    grub.write_text(text.replace(old, old + network))
    return root


def identifiers(root: Path) -> dict[str, list[str]]:
    """Every identifier the root holds, read from its files: none may survive redaction."""
    grub = (root / "boot/grub/grub.cfg").read_text()
    xl = (root / "etc/xen/router.cfg").read_text()
    mac = re.search(r"mac=([0-9a-f:]+)", xl)
    ip = re.search(r"ip=([0-9.]+)", xl)
    user = re.search(r'"/home/([^/]+)/', xl)
    assert mac and ip and user
    return {
        "uuid": sorted({u.lower() for u in UUID.findall(grub)}),
        "host": [(root / "etc/hostname").read_text().strip()],
        "machine-id": [(root / "etc/machine-id").read_text().strip()],
        "mac": [mac.group(1), mac.group(1).replace(":", "-")],
        "ip": [ip.group(1), GATEWAY],
        "user": [user.group(1)],
    }


def support_report(root: Path, redact: bool) -> SupportReport:
    system = collect(Options(root=str(root)), EDITABLE)
    analysis = analyse(system)
    report = build_report(analysis, run_checks(analysis, frozenset({"dom0", "domu"})))
    return support.build(system, analysis, report, redact=redact)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_root(tmp_path_factory.mktemp("support") / "root")


@pytest.fixture(scope="module")
def redacted(root: Path) -> SupportReport:
    return support_report(root, redact=True)


@pytest.fixture(scope="module")
def plain(root: Path) -> SupportReport:
    return support_report(root, redact=False)


def rendered(sr: SupportReport) -> dict[str, str]:
    return {"html": support_html.render(sr), "markdown": support_markdown.render(sr)}


# -- redaction ----------------------------------------------------------------------------------


def test_no_identifier_of_the_root_survives_redaction(root: Path, redacted: SupportReport) -> None:
    found = identifiers(root)
    assert len(found["uuid"]) == 2  # the root filesystem's and the swap's
    for name, text in rendered(redacted).items():
        lowered = text.lower()
        for kind, values in found.items():
            for value in values:
                assert value.lower() not in lowered, f"{kind} {value!r} left in the {name} report"
        # what the diagnosis needs is all still there
        for kept in (
            "0000:05:00.0",
            "8086:10d3",
            "6.1.0-17-amd64",
            "e1000e",
            "xen-pciback.hide=(0000:05:00.0)",
        ):
            assert kept in text, f"{kept!r} lost from the {name} report"
        for token in ("uuid-1", "uuid-2", "host-1", "machine-id-1", "mac-1", "ip-1", "ip-2", "user-1"):
            assert token in text, f"no {token} in the {name} report"


def test_identifiers_are_there_without_redaction(root: Path, plain: SupportReport) -> None:
    found = identifiers(root)
    for name, text in rendered(plain).items():
        for kind, values in found.items():
            assert any(v in text for v in values), f"{kind} missing from the unredacted {name} report"
        assert "Not redacted" in text


def test_the_same_uuid_gets_the_same_pseudonym_everywhere(redacted: SupportReport) -> None:
    assert redacted.cmdline.dom0 is not None and redacted.boot is not None
    root_token = re.search(r"\broot=UUID=(uuid-\d+)", redacted.cmdline.dom0)
    resume_token = re.search(r"\bresume=UUID=(uuid-\d+)", redacted.cmdline.dom0)
    assert root_token and resume_token and root_token.group(1) != resume_token.group(1)
    # GRUB's menu entry id carries the root file system's UUID too
    assert redacted.boot.entry_id == f"xen-gnulinux-6.1.0-17-amd64-advanced-{root_token.group(1)}"
    assert "host-1:eth0" in redacted.cmdline.dom0 and redacted.host.hostname == "host-1"
    assert redacted.host.machine_id == "machine-id-1"
    domu = redacted.domu_configs[0]
    assert domu.kernel == "/home/user-1/vmlinuz"
    assert [k.path for k in redacted.domu_kernels] == ["home/user-1/vmlinuz"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # PCI addresses, ids, modaliases, kernel releases: never identifiers
        ("xen-pciback.hide=(0000:05:00.0)(06:00.*)", "xen-pciback.hide=(0000:05:00.0)(06:00.*)"),
        ("--device 0000:05:00.0=8086:10d3:020000", "--device 0000:05:00.0=8086:10d3:020000"),
        ("10de:1b80 at 0000:65:00.1 behind 0000:64:03.0", "10de:1b80 at 0000:65:00.1 behind 0000:64:03.0"),
        (
            "pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00",
            "pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00",
        ),
        (
            "vmlinuz-6.1.0-17-amd64 and 5.14.0-427.13.1.el9_4.x86_64",
            "vmlinuz-6.1.0-17-amd64 and 5.14.0-427.13.1.el9_4.x86_64",
        ),
        ('set default="3>0>2" at 12:34:56', 'set default="3>0>2" at 12:34:56'),
        # identifiers, each kind
        (
            "root=UUID=4F1C2B7E-9A3D-4C11-8E2F-5B6A7C8D9E01 and 4f1c2b7e-9a3d-4c11-8e2f-5b6a7c8d9e01",
            "root=UUID=uuid-1 and uuid-1",
        ),
        ("root=UUID=ABCD-1234 root=PARTUUID=0a1b2c3d-02", "root=UUID=uuid-1 root=PARTUUID=uuid-2"),
        ("hwaddr 00:16:3E:12:34:56, BOOTIF=01-00-16-3e-12-34-56", "hwaddr mac-1, BOOTIF=01-mac-1"),
        ("ip=10.1.2.3::10.1.2.1:255.255.255.0 dns 10.1.2.3.", "ip=ip-1::ip-2:255.255.255.0 dns ip-1."),
        ("addr fe80::216:3eff:fe12:3456%eth0 and 2001:db8::1/64", "addr ip-1%eth0 and ip-2/64"),
        ("serial=S3Z2NB0K123456A SerialNumber: WD-WCC4N1234567", "serial=serial-1 SerialNumber: serial-2"),
        (
            "root=/dev/disk/by-id/ata-Samsung_SSD_860_EVO_S3Z2NB0K123456A-part2",
            "root=/dev/disk/by-id/disk-1-part2",
        ),
        (
            "kernel = '/home/alice/vmlinuz' and /Users/bob/x and home/alice/y",
            "kernel = '/home/user-1/vmlinuz' and /Users/user-2/x and home/user-1/y",
        ),
    ],
)
def test_redactor_table(text: str, expected: str) -> None:
    assert Redactor(keep=["6.1.0-17-amd64"]).text(text) == expected


def test_host_names_are_matched_whole_and_spare_module_names() -> None:
    redactor = Redactor(hostnames=["xen.example.org"], keep=["e1000e"])
    text = "Xen 4.17 on xen.example.org (xen) boots boot/xen.gz with xen-pciback and CONFIG_XEN=y"
    assert (
        redactor.text(text)
        == "Xen 4.17 on host-1 (host-1) boots boot/xen.gz with xen-pciback and CONFIG_XEN=y"
    )
    assert Redactor(hostnames=["e1000e"], keep=["e1000e"]).text("e1000e binds") == "e1000e binds"
    assert Redactor(hostnames=["localhost"]).text("localhost") == "localhost"


@given(
    domain=st.integers(0, 0xFFFF),
    bus=st.integers(0, 0xFF),
    slot=st.integers(0, 31),
    func=st.integers(0, 7),
    vendor=st.integers(0, 0xFFFF),
    device=st.integers(0, 0xFFFF),
    klass=st.integers(0, 0xFFFFFF),
)
def test_pci_addresses_and_ids_are_never_taken_for_identifiers(
    domain: int, bus: int, slot: int, func: int, vendor: int, device: int, klass: int
) -> None:
    bdf = f"{domain:04x}:{bus:02x}:{slot:02x}.{func}"
    ident = f"{vendor:04x}:{device:04x}"
    text = f"{bdf} ({bus:02x}:{slot:02x}.{func}) {ident} {ident}:{klass:06x} hide=({bdf})({bdf[:-1]}*)"
    assert Redactor().text(text) == text
    assert Redactor().text(text.upper()) == text.upper()


# -- the HTML file ------------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class WellFormed(HTMLParser):
    """Every element closed in order: what a browser needs no error recovery for."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.doctype = False
        self.text: list[str] = []

    def handle_decl(self, decl: str) -> None:
        self.doctype = self.doctype or decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'} at {self.getpos()}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> WellFormed:
    parser = WellFormed()
    parser.feed(html)
    parser.close()
    return parser


def test_html_is_one_well_formed_self_contained_file(redacted: SupportReport, plain: SupportReport) -> None:
    for sr in (redacted, plain):
        html = support_html.render(sr)
        parser = parse(html)
        assert parser.doctype and not parser.errors and parser.stack == []
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
        for remote in (
            "http://",
            "https://",
            "<link",
            "<script",
            "<img",
            "<iframe",
            "src=",
            "url(",
            "@import",
        ):
            assert remote not in html.lower(), remote
        # the verdict comes first, as text and not only as colour
        text = "".join(parser.text)
        device = sr.devices[0]
        assert text.index(device.bdf) < text.index("Findings") < text.index("Facts behind the verdicts")
        assert {"claimed": "CLAIMED", "not-claimed": "NOT CLAIMED", "unknown": "UNKNOWN"}[
            device.verdict
        ] in text


def test_every_value_is_escaped(redacted: SupportReport) -> None:
    hostile = "</code><script>alert(1)</script> | `x` [a](http://evil) *b* # c"
    sr = dataclasses.replace(redacted, image=None, image_problem=hostile, root=hostile)
    html = support_html.render(sr)
    assert "<script>" not in html and "&lt;script&gt;" in html
    parser = parse(html)
    assert not parser.errors and hostile in "".join(parser.text)
    # as a Markdown viewer shows it (markdown-it-py, which rich already brings): no tag, no link
    shown = MarkdownIt("commonmark").enable("table").render(support_markdown.render(sr))
    assert "<script>" not in shown and "<a " not in shown and "<em>" not in shown
    assert hostile in "".join(parse(shown).text)


def visible(html: str) -> str:
    return " ".join(" ".join(parse(html).text).split())


def test_markdown_shows_the_same_content_in_the_same_order(redacted: SupportReport) -> None:
    from_md = visible(MarkdownIt("commonmark").enable("table").render(support_markdown.render(redacted)))
    from_html = visible(support_html.render(redacted))
    for shown in (from_md, from_html):
        order = [
            shown.index(h) for h in ("Devices after the next boot", "Findings", "Facts behind the verdicts")
        ]
        assert order == sorted(order)
        for finding in redacted.findings:
            assert f"{finding.id} {finding.title}" in shown
            for e in finding.evidence:
                assert " ".join(e.text.split()) in shown
            for fix in finding.fixes:
                assert " ".join(fix.description.split()) in shown
        for d in redacted.devices:
            assert d.reason in shown
        assert redacted.cmdline.dom0 and redacted.cmdline.dom0 in shown
        for line in redacted.kernel.config_lines:
            assert line.text in shown


# -- in a real browser --------------------------------------------------------------------------


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    unavailable("no chromium (Debian: apt-get install -y chromium)")
    raise AssertionError("unreachable")


def _run_chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    env = {**os.environ, "HOME": str(profile)}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)


@pytest.mark.realworld
def test_chromium_shows_verdict_finding_and_fix_also_on_a_phone(
    redacted: SupportReport, tmp_path: Path
) -> None:
    browser = _chromium()
    page = tmp_path / "support.html"
    page.write_text(support_html.render(redacted))
    url = page.as_uri()

    dom = _run_chromium(browser, tmp_path / "profile", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    shown = parse(dom.stdout)
    text = " ".join(" ".join(shown.text).split())
    device = redacted.devices[0]
    label = {"claimed": "CLAIMED", "not-claimed": "NOT CLAIMED", "unknown": "UNKNOWN"}[device.verdict]
    assert f"{label} {device.bdf}" in text
    with_fix = next(f for f in redacted.findings if f.fixes)
    assert with_fix.id in text and " ".join(with_fix.fixes[0].description.split()) in text

    png = tmp_path / "phone.png"
    shot = _run_chromium(browser, tmp_path / "profile", f"--screenshot={png}", "--window-size=390,844", url)
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert (width, height) == (390, 844)
    keep = os.environ.get("PCIBACK_DOCTOR_KEEP_SCREENSHOT")
    if keep:  # to look at it: PCIBACK_DOCTOR_KEEP_SCREENSHOT=/tmp/phone.png pytest -m realworld ...
        shutil.copy(png, keep)
