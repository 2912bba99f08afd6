"""`pciback-doctor fix`: diffs, --write (atomic, backups, idempotent, inside the root), refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import FIXTURES, copy_fixture, devices, doctor, finding_ids


def test_diff_is_printed_and_nothing_written(tmp_path: Path) -> None:
    root = copy_fixture("classic-pciback-hide", tmp_path)
    run = doctor("fix", "--root", str(root))
    assert run.code == 0
    assert "+++ b/etc/modprobe.d/xen-pciback.conf" in run.out
    assert "+softdep e1000e pre: xen-pciback" in run.out
    assert "+options xen-pciback hide=(0000:05:00.0)" in run.out
    assert not (root / "etc/modprobe.d/xen-pciback.conf").exists()


def test_write_then_claimed_and_second_write_changes_nothing(tmp_path: Path) -> None:
    root = copy_fixture("module-modprobe-options", tmp_path)
    (root / "etc/modprobe.d/xen-pciback.conf").write_text("options xen-pciback hide=(0000:05:00.0)\n")
    (root / "etc/initramfs-tools").mkdir(parents=True)
    (root / "etc/initramfs-tools/modules").write_text("# modules for the initramfs\n")
    before = doctor("--root", str(root), "--format", "json")
    assert devices(before)["0000:05:00.0"]["prediction"] == "not-claimed"

    first = doctor("fix", "--root", str(root), "--write", "--backup-dir", str(tmp_path / "bak"))
    assert first.code == 0, first.err
    assert "wrote etc/modprobe.d/xen-pciback.conf" in first.out
    assert "update-initramfs -u -k 6.1.0-56-amd64" in first.out  # printed, not run
    assert (root / "etc/initramfs-tools/modules").read_text().endswith("xen-pciback\n")
    # the file it replaced is kept
    assert (
        tmp_path / "bak/etc/modprobe.d/xen-pciback.conf"
    ).read_text() == "options xen-pciback hide=(0000:05:00.0)\n"

    after = doctor("--root", str(root), "--format", "json")
    dev = devices(after)["0000:05:00.0"]
    assert dev["prediction"] == "unknown"  # the host is fixed; the image is not known here (PB401)
    assert "PB302" not in finding_ids(after)

    second = doctor("fix", "--root", str(root), "--write")
    assert "nothing to" in second.out and "wrote" not in second.out


def test_cmdline_strategy_edits_etc_default_grub(tmp_path: Path) -> None:
    root = copy_fixture("builtin-cmdline-hide", tmp_path)
    (root / "etc/default").mkdir(parents=True)
    (root / "etc/default/grub").write_text('GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    (root / "proc/cmdline").write_text("ro quiet\n")
    run = doctor("fix", "--root", str(root), "--device", "0000:00:14.0", "--strategy", "cmdline", "--write")
    assert run.code == 0, run.err
    text = (root / "etc/default/grub").read_text()
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet xen-pciback.hide=(0000:00:14.0)"' in text
    assert "update-grub" in run.out


def test_late_binding_is_recognised_after_write(tmp_path: Path) -> None:
    root = copy_fixture("classic-pciback-hide", tmp_path)
    run = doctor("fix", "--root", str(root), "--strategy", "late-binding", "--write")
    assert run.code == 0, run.err
    script = root / "usr/local/sbin/xen-pciback-bind"
    assert os.access(script, os.X_OK)
    assert "driver_override" in script.read_text()
    assert "Before=xendomains.service" in (root / "etc/systemd/system/xen-pciback-bind.service").read_text()
    assert "systemctl enable xen-pciback-bind.service" in run.out
    # written but not enabled: the unit does not run at boot, so nothing is claimed yet
    dev = devices(doctor("--root", str(root), "--format", "json"))["0000:05:00.0"]
    assert dev["prediction"] != "claimed", dev
    # what `systemctl enable` does (WantedBy=multi-user.target): now the boot runs it
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "xen-pciback-bind.service").symlink_to("/etc/systemd/system/xen-pciback-bind.service")
    dev = devices(doctor("--root", str(root), "--format", "json"))["0000:05:00.0"]
    assert (dev["prediction"], dev["phase"]) == ("claimed", "rootfs")
    if shutil.which("sh"):
        assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0


def test_late_binding_on_xcp_ng_comes_before_xapi_domains(tmp_path: Path) -> None:
    # XenServer/XCP-ng start their VMs from xapi-domains.service (xapi-autostart-vms, after
    # xapi.service); no xendomains exists there, so a unit ordered only before it orders nothing
    root = copy_fixture("classic-pciback-hide", tmp_path)
    xcpng = FIXTURES / "xcpng-8.3-malformed-hide/etc"
    shutil.copyfile(xcpng / "os-release", root / "etc/os-release")
    shutil.copyfile(xcpng / "xensource-inventory", root / "etc/xensource-inventory")
    run = doctor("fix", "--root", str(root), "--strategy", "late-binding", "--write")
    assert run.code == 0, run.err
    unit = root / "etc/systemd/system/xen-pciback-bind.service"
    assert "Before=xapi-domains.service xapi.service\n" in unit.read_text()
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / unit.name).symlink_to(f"/etc/systemd/system/{unit.name}")
    dev = devices(doctor("--root", str(root), "--format", "json"))["0000:05:00.0"]
    assert (dev["prediction"], dev["phase"]) == ("claimed", "rootfs"), dev
    # the Debian unit's ordering (xendomains) on XCP-ng: nothing orders it before the VMs start
    unit.write_text(
        unit.read_text().replace("Before=xapi-domains.service xapi.service", "Before=xendomains.service")
    )
    dev = devices(doctor("--root", str(root), "--format", "json"))["0000:05:00.0"]
    assert dev["prediction"] != "claimed", dev


def test_dracut_strategy_only_offered_for_dracut_images(tmp_path: Path) -> None:
    root = copy_fixture("classic-pciback-hide", tmp_path)
    run = doctor("fix", "--root", str(root), "--strategy", "dracut")
    assert run.code == 2 and "modprobe" in run.err


def test_refuses_a_file_changed_since_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pciback_doctor.errors import UsageError
    from pciback_doctor.facts.root import Root
    from pciback_doctor.fixes.apply import write
    from pciback_doctor.model import FileChange

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/x.conf").write_text("new content by someone else\n")
    with pytest.raises(UsageError, match="changed since it was read"):
        write(Root(tmp_path), [FileChange("etc/x.conf", "ours\n")], {"etc/x.conf": "what we read\n"}, None)
    assert (tmp_path / "etc/x.conf").read_text() == "new content by someone else\n"


def test_never_writes_outside_the_root(tmp_path: Path) -> None:
    from pciback_doctor.errors import UsageError
    from pciback_doctor.facts.root import Root
    from pciback_doctor.fixes.apply import write
    from pciback_doctor.model import FileChange

    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    # a symlink in the root pointing out of it: resolved inside the root (as after chroot), where
    # that path does not exist
    os.symlink(str(outside), root / "etc/modprobe.d")
    with pytest.raises(UsageError, match=r"etc/modprobe\.d -> .* points to a path missing inside the root"):
        write(Root(root), [FileChange("etc/modprobe.d/x.conf", "x\n")], {}, None)
    assert list(outside.iterdir()) == []
    os.symlink("/etc", root / "etc/inside")  # absolute, but resolved inside the root: fine
    write(Root(root), [FileChange("etc/inside/y.conf", "y\n")], {}, None)
    assert (root / "etc/y.conf").read_text() == "y\n"
    with pytest.raises(UsageError):
        write(Root(root), [FileChange("../escape.conf", "x\n")], {}, None)
    assert not (tmp_path / "escape.conf").exists()


def test_read_only_root_is_a_clear_error(tmp_path: Path) -> None:
    root = copy_fixture("classic-pciback-hide", tmp_path)
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "--bind", str(root), str(mnt)], check=False).returncode != 0
    ):
        pytest.skip("needs root and bind mounts to make a read-only root")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], check=True)
        before = sorted(p.relative_to(root) for p in root.rglob("*"))
        run = doctor("fix", "--root", str(mnt), "--write")
        assert run.code == 2
        assert "not writable" in run.err and len(run.err.strip().splitlines()) == 1
        assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_modules_load_d_races_udev(tmp_path: Path) -> None:
    root = copy_fixture("module-modprobe-options", tmp_path)
    (root / "etc/modprobe.d/xen-pciback.conf").write_text("options xen-pciback hide=(0000:05:00.0)\n")
    (root / "etc/modules-load.d").mkdir()
    (root / "etc/modules-load.d/xen.conf").write_text("# Xen\nxen-pciback\n")
    run = doctor("--root", str(root), "--format", "json")
    assert devices(run)["0000:05:00.0"]["prediction"] == "unknown"
    race = next(f for f in run.json()["findings"] if f["id"] == "PB305")
    assert race["evidence"][0] == {"path": "etc/modules-load.d/xen.conf", "line": 2, "text": "xen-pciback"}


def test_modprobe_fix_retires_the_classic_lines(tmp_path: Path) -> None:
    root = copy_fixture("classic-pciback-hide", tmp_path)
    assert doctor("fix", "--root", str(root), "--write").code == 0
    old = (root / "etc/modprobe.d/pciback.conf").read_text().splitlines()
    assert all(line.startswith("#") for line in old)  # kept for the record, commented out
    ids = finding_ids(doctor("--root", str(root), "--format", "json"))
    assert "PB304" not in ids
    assert ids.count("PB105") == 1  # only proc/cmdline's pciback.hide= is left: the current boot


def test_a_hidden_device_missing_from_sysfs_is_kept_but_not_counted(tmp_path: Path) -> None:
    # the admin's hide names a card sysfs does not list (a typo, a card that moved): it is no
    # one's before or after a fix, so "N of N claimed" counts the others, and the fix keeps it
    root = copy_fixture("module-modprobe-options", tmp_path)
    (root / "etc/modprobe.d/xen-pciback.conf").write_text(
        "options xen-pciback hide=(0000:05:00.0)(0000:42:00.0)\n"
    )
    run = doctor("--root", str(root), "--format", "json")
    gone = devices(run)["0000:42:00.0"]
    assert gone["prediction"] == "unknown" and "not in sysfs" in gone["reason"]
    assert "PB205" in finding_ids(run)
    fix = doctor("fix", "--root", str(root), "--strategy", "modprobe")
    assert "1 of 1 claimed (0000:42:00.0 not in sysfs)" in fix.out
    assert "hide=(0000:05:00.0)(0000:42:00.0)" in fix.out
