"""The next boot from the bootloader (no --cmdline given) and the domU side, through the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import FIXTURES, devices, doctor, finding_ids


@pytest.mark.parametrize(
    ("fixture", "kernel", "source", "bdfs"),
    [
        ("boot-debian-grub-xen", "6.1.0-17-amd64", "boot/grub/grub.cfg", ["0000:05:00.0"]),
        ("boot-fedora-bls", "6.5.6-300.fc39.x86_64", "boot/loader/entries/", ["0000:03:00.0"]),
        ("boot-efi-xen-cfg", "6.1.0-17-amd64", "boot/efi/EFI/xen/xen.cfg", ["0000:05:00.0", "0000:06:00.0"]),
        (
            "boot-stale-grub",
            "6.1.0-18-amd64",
            "boot/grub/grub.cfg",
            ["0000:05:00.0"],
        ),  # meant, not yet in force
    ],
)
def test_target_comes_from_the_default_entry(fixture: str, kernel: str, source: str, bdfs: list[str]) -> None:
    run = doctor("--root", str(FIXTURES / fixture), "--format", "json")
    target = run.json()["target"]
    assert target["kernel"] == kernel
    assert target["cmdline_source"].startswith(source)
    assert target["boot_entry"]  # which entry, and why
    assert sorted(devices(run)) == bdfs
    assert "PB604" not in finding_ids(run)  # not the current boot's /proc/cmdline


def test_debian_grub_entry_says_why() -> None:
    run = doctor("--root", str(FIXTURES / "boot-debian-grub-xen"), "--format", "json")
    entry = run.json()["target"]["boot_entry"]
    assert "6.1.0-17-amd64" in entry and "3>0>2" in entry


def test_stale_grub_cfg_is_reported() -> None:
    run = doctor("--root", str(FIXTURES / "boot-stale-grub"), "--format", "json")
    stale = next(f for f in run.json()["findings"] if f["id"] == "PB605")
    assert "update-grub" in stale["message"] or stale["fixes"][0]["commands"] == ["update-grub"]
    assert {e["path"] for e in stale["evidence"]} >= {"etc/default/grub", "boot/grub/grub.cfg"}


@pytest.mark.parametrize(
    ("value", "severity"), [("iommu=0", "warning"), ("iommu=no-intremap,off", "warning"), ("iommu=1", None)]
)
def test_iommu_off_on_the_xen_command_line(value: str, severity: str | None) -> None:
    run = doctor(
        "--root", str(FIXTURES / "example"), "--xen-cmdline", f"dom0_mem=4G {value}", "--format", "json"
    )
    found = [f for f in run.json()["findings"] if f["id"] == "PB601"]
    assert [f["severity"] for f in found] == ([severity] if severity else [])


def test_xen_cmdline_from_the_grub_entry() -> None:
    run = doctor("--root", str(FIXTURES / "boot-debian-grub-xen"), "--format", "json")
    assert "PB601" not in finding_ids(run)  # iommu=1 there


def domu_root(tmp_path: Path) -> Path:
    root = tmp_path / "dom0"
    shutil.copytree(FIXTURES / "classic-pciback-hide", root, symlinks=True)
    xen = root / "etc/xen"
    xen.mkdir(parents=True, exist_ok=True)
    (xen / "router.cfg").write_text(
        'name = "router"\nkernel = "/var/lib/xen/router/vmlinuz"\nmemory = 512\npci = [ "05:00.0" ]\n'
    )
    (xen / "desktop.cfg").write_text(
        'name = "desktop"\ntype = "hvm"\npci = [ "01:00.*", "0000:00:14.0,seize=1" ]\n'
    )
    (xen / "tiny.cfg").write_text('name = "tiny"\ntype = "pvh"\npci = [ "00:17.0", "0000:00:1f.9" ]\n')
    return root


def test_xl_configs_add_devices_and_domu_findings(tmp_path: Path) -> None:
    run = doctor("--root", str(domu_root(tmp_path)), "--xen-cmdline", "iommu=0", "--format", "json")
    devs = devices(run)
    assert "xl:etc/xen/router.cfg" in devs["0000:05:00.0"]["wanted_by"]
    assert {"0000:01:00.0", "0000:01:00.1"} <= set(devs)  # `01:00.*`: every function present
    assert devs["0000:00:14.0"]["prediction"] == "claimed" and devs["0000:00:14.0"]["phase"] == "domain-start"
    findings = run.json()["findings"]
    pb504 = {f["device"] for f in findings if f["id"] == "PB504"}
    assert "0000:05:00.0" in pb504  # e1000e keeps it, no seize
    assert "0000:00:14.0" not in pb504  # seize=1
    pvh = [f for f in findings if f["id"] == "PB503" and f["severity"] == "error"]
    assert pvh and "tiny.cfg" in pvh[0]["message"]
    assert any(f["id"] == "PB505" and "tiny.cfg" in f["message"] for f in findings)  # function 9
    pb601 = next(f for f in findings if f["id"] == "PB601")
    assert pb601["severity"] == "error" and "desktop.cfg" in pb601["message"]  # an HVM guest has pci=
    kernel = next(f for f in findings if f["id"] == "PB507")  # router's kernel= is not in the root
    assert kernel["severity"] == "info" and "not found" in kernel["message"]
    assert not [f for f in findings if f["id"] == "PB501"]  # "cannot tell" only, never also "lacks"


def test_domu_command_on_configs_and_kernels(tmp_path: Path) -> None:
    config = tmp_path / "domu-config"
    config.write_text("CONFIG_XEN=y\nCONFIG_XEN_PV=y\n# CONFIG_XEN_PCIDEV_FRONTEND is not set\n")
    good = tmp_path / "good-config"
    good.write_text("CONFIG_XEN=y\nCONFIG_XEN_PV=y\nCONFIG_XEN_PCIDEV_FRONTEND=y\n")
    xl = tmp_path / "vm.cfg"
    xl.write_text('type = "pv"\npci = [ "05:00.0,permissive=1", "zz" ]\n')
    run = doctor("domu", str(config), str(good), str(xl), "--format", "json")
    ids = finding_ids(run)
    assert ids.count("PB501") == 1 and "PB506" in ids and "PB505" in ids
    assert run.code == 1
    assert run.json()["devices"] == []  # guest-side checks only


@pytest.mark.parametrize(
    ("extra", "sysfs", "warned"),
    [
        ((), True, True),  # 09:00.0 is not in sys/bus/pci/devices: a typo, or a card that moved
        (("--device", "0000:09:00.0=8086:10d3"), True, False),  # named on the command line: present
        ((), False, False),  # no sysfs to look at (an offline root): nothing to say
    ],
)
def test_pci_entry_naming_no_device(
    tmp_path: Path, extra: tuple[str, ...], sysfs: bool, warned: bool
) -> None:
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "example", root, symlinks=True)
    if not sysfs:
        shutil.rmtree(root / "sys")
    (root / "etc/xen").mkdir(parents=True, exist_ok=True)
    (root / "etc/xen/vm.cfg").write_text('name = "vm"\ntype = "hvm"\npci = [ "0000:09:00.0", "05:00.0" ]\n')
    run = doctor("--root", str(root), "--format", "json", *extra)
    findings = run.json()["findings"]
    pb508 = [f for f in findings if f["id"] == "PB508"]
    assert [f["device"] for f in pb508] == (["0000:09:00.0"] if warned else [])
    if warned:
        assert pb508[0]["severity"] == "warning" and "etc/xen/vm.cfg" in pb508[0]["message"]
        # seize=1 cannot help a device that is not there: no PB504 advice for it
        assert "0000:09:00.0" not in {f["device"] for f in findings if f["id"] == "PB504"}
    assert not [f for f in pb508 if f["device"] == "0000:05:00.0"]  # present in sysfs


def _with_grub_menu(tmp_path: Path, default: str) -> Path:
    """module-modprobe-options (modular backend, `options xen-pciback hide=(0000:05:00.0)`) with
    Debian's GRUB menu of boot-debian-grub-xen for its kernel, `set default=` as given."""
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "module-modprobe-options", root, symlinks=True)
    menu = (FIXTURES / "boot-debian-grub-xen/boot/grub/grub.cfg").read_text()
    menu = menu.replace("6.1.0-18-amd64", "6.1.0-56-amd64").replace(
        'set default="3>0>2"', f'set default="{default}"'
    )
    (root / "boot/grub").mkdir(parents=True)
    (root / "boot/grub/grub.cfg").write_text(menu)
    return root


def test_a_default_entry_without_xen_passes_nothing_through(tmp_path: Path) -> None:
    # Debian's plain 'Debian GNU/Linux' entry first in the menu, Xen's after it: after the reboot
    # there is no dom0, and a modular backend refuses to load (xen_pcibk_init: -ENODEV)
    bare = _with_grub_menu(tmp_path / "a", "0")
    run = doctor("--root", str(bare), "--format", "json")
    pb607 = [f for f in run.json()["findings"] if f["id"] == "PB607"]
    assert len(pb607) == 1 and pb607[0]["severity"] == "error", run.out
    assert "'Debian GNU/Linux'" in pb607[0]["message"] and "with Xen hypervisor" in pb607[0]["message"]
    dev = devices(run)["0000:05:00.0"]
    assert (dev["prediction"], dev["phase"]) == ("not-claimed", "kernel")
    assert dev["winner"] == dev["native_driver"] and "without Xen" in dev["reason"]
    # no fix is proven against a boot without Xen; before this, the cmdline fix put the token on
    # GRUB_CMDLINE_LINUX_DEFAULT and "proved" it there
    fix = doctor("fix", "--root", str(bare))
    assert "without Xen: make a Xen entry the default first (PB607)" in fix.out + fix.err
    assert "GRUB_CMDLINE_LINUX_DEFAULT" not in fix.out
    # the Xen entry (menu 3, with Xen 4.17, the 6.1.0-56 kernel) as the default: no PB607
    xen = _with_grub_menu(tmp_path / "b", "3>0>0")
    run = doctor("--root", str(xen), "--format", "json")
    assert "PB607" not in finding_ids(run)
    assert "without Xen" not in devices(run)["0000:05:00.0"]["reason"]


def test_a_default_entry_without_xen_and_nothing_to_pass_through_is_a_warning(tmp_path: Path) -> None:
    bare = _with_grub_menu(tmp_path, "0")
    (bare / "etc/modprobe.d/xen-pciback.conf").write_text("# nothing hidden\n")
    run = doctor("--root", str(bare), "--format", "json")
    assert [f["severity"] for f in run.json()["findings"] if f["id"] == "PB607"] == ["warning"]


def test_a_menu_without_xen_entries_is_not_pb607() -> None:
    # Fedora's BLS entries boot Linux, and this menu has no Xen entry at all: nothing to point at
    run = doctor("--root", str(FIXTURES / "boot-fedora-bls"), "--format", "json")
    assert "PB607" not in finding_ids(run)
