"""Boot lab, issue 11: a hide already exists and the doctor's fix adds a device. After `fix --write`
and a rebuild of the image by the real dracut from the host's files, a real Xen boot shows every
device — the one hidden before and the new one — owned by pciback (a second hide= would have
dropped the first: `hide` is a charp, the last value wins)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from harness import Scenario, boot, build_image, describe, dom0_kernel
from scenarios import E1000E, E1000E_DEV

from helpers import Run, devices, doctor
from pciback_doctor.facts.root import Root
from pciback_doctor.facts.system import read_dracut_conf

pytestmark = pytest.mark.lab

SECOND = "0000:00:06.0"
SECOND_DEV = "e1000e,addr=06.0"
NIC = "8086:10d3:020000"


def _doctor(command: str, host: Path, scenario: Scenario, image: Path, *more: str) -> Run:
    tree, _, release = dom0_kernel()
    return doctor(
        *([command] if command else []), "--root", str(host), "--kernel", release,
        "--config", str(tree / "boot" / f"config-{release}"), "--modules-dir", str(tree / "lib/modules" / release),
        "--initramfs", str(image), "--cmdline", scenario.cmdline(),
        "--kernel-image", str(tree / "boot" / f"vmlinuz-{release}"),
        "--device", f"{E1000E}={NIC}", "--device", f"{SECOND}={NIC}", *more,
    )  # fmt: skip


def _rebuilt(before: Scenario, host: Path, name: str, dom0_args: str) -> Scenario:
    """The scenario as the printed `dracut -f` makes it from the host after the fix."""
    conf = read_dracut_conf(Root(host))
    modprobe_d = {p.name: p.read_text() for p in sorted((host / "etc/modprobe.d").glob("*.conf"))}
    return replace(
        before,
        name=name,
        dom0_args=dom0_args,
        modprobe_d=modprobe_d,
        add_drivers=tuple(dict.fromkeys(("e1000e", *conf.words("add_drivers")))),
    )


def _boot_and_check(after: Scenario, host: Path, tmp_path: Path) -> None:
    image = build_image(after, tmp_path)
    predicted = devices(_doctor("", host, after, image, "--format", "json"))
    assert predicted[E1000E]["prediction"] == predicted[SECOND]["prediction"] == "claimed", predicted
    result = boot(after, image)
    assert result.completed, describe(result)
    owners = {bdf: result.owners.get(bdf) for bdf in (E1000E, SECOND)}
    assert owners == {E1000E: "pciback", SECOND: "pciback"}, describe(result, [E1000E, SECOND])


def test_lab_compose_cmdline_hide(tmp_path: Path) -> None:
    """xen-pciback.hide=(E1000E) on the command line and a softdep in the image; the fix adds SECOND:
    one token naming both, replacing the old one."""
    before = Scenario(
        "compose-cmdline-before",
        dom0_args=f"xen-pciback.hide=({E1000E})",
        modprobe_d={"xen-pciback.conf": "softdep e1000e pre: xen-pciback\n"},
        devices=(E1000E_DEV, SECOND_DEV),
    )
    host = tmp_path / "host"
    (host / "etc/dracut.conf.d").mkdir(parents=True)
    (host / "etc/modprobe.d").mkdir(parents=True)
    (host / "etc/modprobe.d/xen-pciback.conf").write_text("softdep e1000e pre: xen-pciback\n")
    image = build_image(before, tmp_path)
    fix = _doctor("fix", host, before, image, "--write")
    assert fix.code == 0, fix.out + fix.err
    token = re.search(r"# cmdline: (xen-pciback\.hide=\S+)", fix.out)
    assert token is not None, fix.out
    assert token.group(1) == f"xen-pciback.hide=({E1000E})({SECOND})"
    _boot_and_check(_rebuilt(before, host, "compose-cmdline-after", token.group(1)), host, tmp_path)


def test_lab_compose_modprobe_hide(tmp_path: Path) -> None:
    """`options xen-pciback permissive=1 hide=(E1000E)` + softdep in modprobe.d; the fix adds SECOND:
    one options line naming both, permissive=1 kept."""
    conf = f"options xen-pciback permissive=1 hide=({E1000E})\nsoftdep e1000e pre: xen-pciback\n"
    before = Scenario(
        "compose-modprobe-before", modprobe_d={"xen-pciback.conf": conf}, devices=(E1000E_DEV, SECOND_DEV)
    )
    host = tmp_path / "host"
    (host / "etc/dracut.conf.d").mkdir(parents=True)
    (host / "etc/modprobe.d").mkdir(parents=True)
    (host / "etc/modprobe.d/xen-pciback.conf").write_text(conf)
    image = build_image(before, tmp_path)
    fix = _doctor("fix", host, before, image, "--write")
    assert fix.code == 0 and "# modprobe:" in fix.out, fix.out + fix.err
    written = (host / "etc/modprobe.d/xen-pciback.conf").read_text().splitlines()
    assert "options xen-pciback permissive=1" in written
    assert f"options xen-pciback hide=({E1000E})({SECOND})" in written
    _boot_and_check(_rebuilt(before, host, "compose-modprobe-after", ""), host, tmp_path)
