"""Predictions on images built by the real dracut from the real Debian module tree (SPEC §3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import devices, doctor, finding_ids

pytestmark = pytest.mark.realworld

HIDE = "options xen-pciback hide=(0000:00:04.0)\n"
SOFTDEP = "softdep e1000e pre: xen-pciback\n"
DEVICE = "0000:00:04.0=8086:10d3:020000"


def host_root(tmp_path: Path, modprobe: str) -> Path:
    root = tmp_path / "host"
    (root / "etc/modprobe.d").mkdir(parents=True)
    (root / "etc/modprobe.d/xen-pciback.conf").write_text(modprobe)
    return root


def predict(amd64, root: Path, image: Path, cmdline: str = "ro quiet"):  # type: ignore[no-untyped-def]
    run = doctor(
        "--root", str(root), "--kernel", amd64.release, "--config", str(amd64.config),
        "--modules-dir", str(amd64.moddir), "--initramfs", str(image), "--cmdline", cmdline,
        "--kernel-image", str(amd64.root / "boot" / f"vmlinuz-{amd64.release}"),
        "--device", DEVICE, "--format", "json",
    )  # fmt: skip
    return run, devices(run)["0000:00:04.0"]


def test_native_and_backend_in_image_with_nothing_ordering_them(amd64, dracut_image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    image = dracut_image("unordered", ["e1000e", "xen-pciback"], {})
    run, dev = predict(amd64, host_root(tmp_path, ""), image, "ro xen-pciback.hide=(0000:00:04.0)")
    assert (dev["prediction"], dev["phase"], dev["winner"]) == ("not-claimed", "initramfs", "e1000e")
    assert "PB303" in finding_ids(run)


def test_softdep_in_the_image_claims_in_initramfs(amd64, dracut_image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    image = dracut_image(
        "softdep", ["e1000e", "xen-pciback"], {"/etc/modprobe.d/xen-pciback.conf": HIDE + SOFTDEP}
    )
    run, dev = predict(amd64, host_root(tmp_path, HIDE + SOFTDEP), image)
    assert (dev["prediction"], dev["phase"]) == ("claimed", "initramfs")
    assert dev["evidence"][0]["path"].endswith("!etc/modprobe.d/xen-pciback.conf")
    assert {"PB402", "PB303"}.isdisjoint(finding_ids(run))


def test_softdep_only_on_the_host_is_a_stale_image(amd64, dracut_image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    image = dracut_image("stale", ["e1000e", "xen-pciback"], {"/etc/modprobe.d/xen-pciback.conf": HIDE})
    run, dev = predict(amd64, host_root(tmp_path, HIDE + SOFTDEP), image)
    assert (dev["prediction"], dev["phase"], dev["winner"]) == ("not-claimed", "initramfs", "e1000e")
    stale = next(f for f in run.json()["findings"] if f["id"] == "PB402")
    assert stale["evidence"][0] == {
        "path": "etc/modprobe.d/xen-pciback.conf",
        "line": 2,
        "text": SOFTDEP.strip(),
    }


def test_native_driver_absent_from_the_image(amd64, dracut_image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    image = dracut_image("no-native", ["xen-pciback"], {})
    run, dev = predict(amd64, host_root(tmp_path, HIDE + SOFTDEP), image)
    assert (dev["prediction"], dev["phase"]) == ("claimed", "rootfs")
    assert "PB404" in finding_ids(
        run
    )  # the image did not take the host's /etc/modprobe.d: fine here, worth knowing


def test_rd_driver_pre_needs_kernel_modules_code(amd64, dracut_image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    image = dracut_image("no-kmod-code", ["e1000e", "xen-pciback"], {})
    run, dev = predict(
        amd64, host_root(tmp_path, ""), image, "ro xen-pciback.hide=(0000:00:04.0) rd.driver.pre=xen-pciback"
    )
    assert dev["prediction"] == "not-claimed"  # FACTS: the boot lab saw e1000e win with this image
    assert "PB304" in finding_ids(run)


def test_fix_write_then_rebuild_claims(amd64, dracut_image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SPEC §8 on a real image: the fix is written, the doctor reports the image stale until the
    printed rebuild command is run (here: the real dracut with the root's own dracut.conf.d)."""
    import subprocess

    image = dracut_image("before-fix", ["e1000e", "xen-pciback"], {})
    root = host_root(tmp_path, "")
    (root / "etc/dracut.conf.d").mkdir()
    args = (
        "--root", str(root), "--kernel", amd64.release, "--config", str(amd64.config),
        "--modules-dir", str(amd64.moddir), "--initramfs", str(image), "--cmdline", "ro quiet",
        "--kernel-image", str(amd64.root / "boot" / f"vmlinuz-{amd64.release}"),
        "--device", DEVICE,
    )  # fmt: skip
    fix = doctor("fix", *args, "--write")
    assert fix.code == 0, fix.err
    assert f"dracut -f --kver {amd64.release}" in fix.out
    stale = doctor(*args, "--format", "json")
    assert devices(stale)["0000:00:04.0"]["prediction"] == "not-claimed"
    assert "PB402" in finding_ids(stale)

    # what `dracut -f` on that host does with the dracut.conf.d the fix wrote: dracut reads the
    # host's /etc, so here its settings are handed over explicitly
    from pciback_doctor.facts.root import Root
    from pciback_doctor.facts.system import read_dracut_conf

    conf = read_dracut_conf(Root(root))
    includes = [
        a for item in conf.words("install_items") for a in ("--include", str(root / item.lstrip("/")), item)
    ]
    rebuilt = tmp_path / "rebuilt.img"
    empty = tmp_path / "confdir"
    empty.mkdir()
    result = subprocess.run(
        [
            "dracut", "-q", "--force", "--no-hostonly", "--kver", amd64.release,
            "--kmoddir", str(amd64.moddir), "--conf", "/dev/null", "--confdir", str(empty),
            "-m", "base udev-rules rootfs-block", "--drivers", "e1000e",
            "--add-drivers", " ".join(conf.words("add_drivers")), *includes, str(rebuilt),
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    args = tuple(str(rebuilt) if a == str(image) else a for a in args)
    after = doctor(*args, "--format", "json")
    dev = devices(after)["0000:00:04.0"]
    assert (dev["prediction"], dev["phase"]) == ("claimed", "initramfs"), dev
    assert "PB402" not in finding_ids(after)
    assert "nothing to" in doctor("fix", *args, "--write").out
