"""The command line on the fixture roots: predictions, findings, exit status, output formats."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from helpers import FIXTURES, devices, doctor, finding_ids


def schema() -> dict[str, object]:
    text = resources.files("pciback_doctor").joinpath("schema/pciback-doctor-1.schema.json").read_text()
    loaded: dict[str, object] = json.loads(text)
    return loaded


def check_json(*args: str) -> object:
    run = doctor(*args, "--format", "json")
    assert run.err == ""
    jsonschema.validate(run.json(), schema())
    return run


def test_builtin_backend_with_cmdline_hide_claims_in_kernel_phase() -> None:
    run = check_json("--root", str(FIXTURES / "builtin-cmdline-hide"))
    devs = devices(run)  # type: ignore[arg-type]
    for bdf in ("0000:05:00.0", "0000:01:00.0", "0000:01:00.1"):
        assert devs[bdf]["prediction"] == "claimed"
        assert devs[bdf]["phase"] == "kernel"
    assert devs["0000:01:00.1"]["native_driver"] == "snd_hda_intel"
    assert run.json()["backend"]["mode"] == "builtin"  # type: ignore[attr-defined]


def test_example_mixes_claimed_and_classic_name() -> None:
    run = doctor("--root", str(FIXTURES / "example"), "--format", "json")
    devs = devices(run)
    assert devs["0000:05:00.0"]["prediction"] == "claimed"
    usb = devs["0000:00:14.0"]
    assert usb["prediction"] == "not-claimed" and usb["winner"] == "xhci_pci"
    assert "PB105" in finding_ids(run)
    assert run.code == 1


def test_module_backend_without_image_is_unknown() -> None:
    run = doctor("--root", str(FIXTURES / "module-modprobe-options"), "--format", "json")
    dev = devices(run)["0000:05:00.0"]
    assert dev["prediction"] == "unknown"
    assert dev["native_driver"] == "e1000e" and dev["native_mode"] == "module"
    assert "PB401" in finding_ids(run)


def test_classic_recipe_on_modern_kernel() -> None:
    run = doctor("--root", str(FIXTURES / "classic-pciback-hide"), "--format", "json")
    dev = devices(run)["0000:05:00.0"]
    assert dev["prediction"] == "not-claimed" and dev["winner"] == "e1000e"
    ids = finding_ids(run)
    assert ids.count("PB105") == 2  # cmdline and modprobe.d
    assert "PB304" in ids  # `install e1000e /sbin/modprobe pciback ...` loads nothing
    broken = next(f for f in run.json()["findings"] if f["id"] == "PB304")
    assert broken["evidence"][0] == {
        "path": "etc/modprobe.d/pciback.conf",
        "line": 3,
        "text": "install e1000e /sbin/modprobe pciback ; /sbin/modprobe --first-time --ignore-install e1000e",
    }


def test_malformed_hide_points_at_the_comma() -> None:
    run = doctor("--root", str(FIXTURES / "malformed-hide"), "--format", "json")
    pb201 = next(f for f in run.json()["findings"] if f["id"] == "PB201")
    assert "character 15" in pb201["message"]
    assert pb201["evidence"][0]["path"] == "proc/cmdline"
    devs = devices(run)
    assert devs["0000:05:00.0"]["prediction"] == "not-claimed"
    assert devs["0000:01:00.0"]["winner"] == "nouveau"  # wanted though the value is broken


def test_text_output_has_no_colour_when_not_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    run = doctor("--root", str(FIXTURES / "example"))
    assert "\x1b[" not in run.out
    assert "0000:05:00.0" in run.out and "PB105" in run.out
    assert "exit status 1" in run.out


def test_no_color_wins_over_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    from pciback_doctor.render import text

    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("NO_COLOR", "1")
    assert not text.wants_colour(Tty())  # type: ignore[arg-type]
    monkeypatch.delenv("NO_COLOR")
    assert text.wants_colour(Tty())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("--fail-on", "never"), 0),
        (("--fail-on", "error"), 1),
        (("--ignore", "PB105,PB308"), 0),  # the example's only errors: the classic name, the USB controller
        (("--select", "PB1"), 1),
        (("--select", "PB4"), 0),
        (("--select", "PB4", "--fail-on", "warning"), 1),  # PB401 is a warning
    ],
)
def test_exit_status_follows_fail_on_select_ignore(args: tuple[str, ...], code: int) -> None:
    run = doctor("--root", str(FIXTURES / "example"), "--format", "json", *args)
    assert run.code == code
    assert run.json()["exit_code"] == code


@pytest.mark.parametrize(
    "args",
    [
        ("--root", "/nonexistent/root"),
        ("--config", "/nonexistent/config"),
        ("--initramfs", "/nonexistent/image"),
        ("--cmdline-file", "/nonexistent/cmdline"),
        ("--device", "zz:zz"),
        ("--format", "yaml"),
        ("--bogus",),
        ("kernel",),
        ("explain", "PB999"),
        ("domu", "/nonexistent/vmlinuz"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    run = doctor(*args)
    assert run.code == 2
    assert run.out == ""
    assert len(run.err.strip().splitlines()) == 1
    assert run.err.startswith("pciback-doctor: ")
    assert "Traceback" not in run.err


def test_garbage_config_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "config"
    bad.write_bytes(b"\x00\x01\x02 not a config")
    run = doctor("--root", str(FIXTURES / "example"), "--config", str(bad))
    assert run.code == 2 and "not a kernel config" in run.err


def test_garbage_initramfs_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "initrd.img"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage garbage")
    run = doctor(
        "--root", str(FIXTURES / "module-modprobe-options"), "--initramfs", str(bad), "--format", "json"
    )
    assert "PB403" in finding_ids(run)
    assert devices(run)["0000:05:00.0"]["prediction"] == "unknown"


def test_explain_every_check() -> None:
    from pciback_doctor.checks import all_checks

    for check_id in all_checks():
        run = doctor("explain", check_id.lower())
        assert run.code == 0
        assert run.out.startswith(check_id)
        assert len(run.out) > 150  # what, why and how to fix, not a stub


def test_python_dash_m_works() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "pciback_doctor", "explain", "PB105"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0 and "xen_pciback" in out.stdout


def test_offline_device_option(tmp_path: Path) -> None:
    # an unpacked kernel tree, no sysfs: the device comes from --device
    run = doctor(
        "--root",
        str(FIXTURES / "module-modprobe-options"),
        "--cmdline",
        "ro quiet",
        "--device",
        "0000:09:00.0=8086:10d3:020000",
        "--format",
        "json",
    )
    dev = devices(run)["0000:09:00.0"]
    assert dev["wanted_by"] == ["--device"]
    assert dev["native_driver"] == "e1000e"
    assert run.json()["target"]["cmdline_source"] == "--cmdline"


def test_waived_findings_stay_visible_and_fail_nothing(tmp_path: Path) -> None:
    waivers = tmp_path / "waivers.toml"
    waivers.write_text(
        "".join(
            f'[[waiver]]\nid = "{i}"\njustification = "accepted until the new kernel"\n'
            for i in ("PB1", "PB3", "PB4")
        )
    )
    run = doctor(
        "--root", str(FIXTURES / "classic-pciback-hide"), "--waivers", str(waivers), "--format", "json"
    )
    assert run.code == 0
    errors = [f for f in run.json()["findings"] if f["severity"] == "error"]
    assert errors and all(f["waived"] == "accepted until the new kernel" for f in errors)
    text = doctor("--root", str(FIXTURES / "classic-pciback-hide"), "--waivers", str(waivers))
    assert "waived: accepted until the new kernel" in text.out


def test_expired_waiver_is_a_finding(tmp_path: Path) -> None:
    waivers = tmp_path / "waivers.toml"
    waivers.write_text('[[waiver]]\nid = "PB105"\njustification = "old"\nexpires = 2020-01-01\n')
    run = doctor(
        "--root", str(FIXTURES / "classic-pciback-hide"), "--waivers", str(waivers), "--format", "json"
    )
    assert "PB109" in finding_ids(run) and run.code == 1
    assert "[[waiver]]" in doctor("explain", "PB109").out


def test_bad_waivers_file_is_a_usage_error(tmp_path: Path) -> None:
    waivers = tmp_path / "waivers.toml"
    waivers.write_text("[[waiver]\nnot toml")
    run = doctor("--root", str(FIXTURES / "example"), "--waivers", str(waivers))
    assert run.code == 2 and len(run.err.strip().splitlines()) == 1


@pytest.mark.parametrize("fmt", ["sarif", "junit", "github", "markdown"])
def test_every_format_from_the_command_line(fmt: str) -> None:
    run = doctor("--root", str(FIXTURES / "classic-pciback-hide"), "--format", fmt)
    assert run.code == 1 and run.err == ""
    assert "PB304" in run.out


def test_report_command_writes_html_or_markdown(tmp_path: Path) -> None:
    out = tmp_path / "ticket.html"
    run = doctor("report", "--root", str(FIXTURES / "boot-debian-grub-xen"), "--output", str(out))
    assert run.code in (0, 1) and run.err == ""
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "0000:05:00.0" in page
    assert "4f1c2b7e-9a3d-4c11-8e2f-5b6a7c8d9e01" not in page  # redacted by default
    kept = tmp_path / "ticket.md"
    doctor("report", "--root", str(FIXTURES / "boot-debian-grub-xen"), "--output", str(kept), "--no-redact")
    assert "4f1c2b7e-9a3d-4c11-8e2f-5b6a7c8d9e01" in kept.read_text()


def make_build_dir(tmp_path: Path, backend_built: bool) -> Path:
    """A kernel build tree (make O=DIR) as the CI gate sees it: .config, modules.builtin,
    modules.order naming objects, and the .ko files next to them."""
    build = tmp_path / "build"
    (build / "drivers/xen/xen-pciback").mkdir(parents=True)
    (build / "drivers/pci").mkdir(parents=True)
    config = (FIXTURES / "module-modprobe-options/boot/config-6.1.0-56-amd64").read_text()
    (build / ".config").write_text(config)
    (build / "modules.builtin").write_text("kernel/drivers/tty/serial/8250/8250.ko\n")
    order = ["drivers/pci/xen-pcifront.o"] + (
        ["drivers/xen/xen-pciback/xen-pciback.o"] if backend_built else []
    )
    (build / "modules.order").write_text("\n".join(order) + "\n")
    (build / "drivers/pci/xen-pcifront.ko").write_bytes(b"\x7fELF")
    if backend_built:
        (build / "drivers/xen/xen-pciback/xen-pciback.ko").write_bytes(b"\x7fELF")
    return build


def test_kernel_gate_on_a_build_tree(tmp_path: Path) -> None:
    build = make_build_dir(tmp_path, backend_built=True)
    run = doctor("kernel", "--build-dir", str(build), "--role", "both", "--format", "json")
    assert run.code == 0, run.out
    assert run.json()["backend"]["mode"] == "module"
    assert "PB104" not in finding_ids(run)


def test_kernel_gate_notices_a_module_that_was_not_built(tmp_path: Path) -> None:
    build = make_build_dir(tmp_path, backend_built=False)
    run = doctor("kernel", "--build-dir", str(build), "--format", "json")
    assert "PB104" in finding_ids(run)  # .config says =m, modules.order has no xen-pciback


def test_unreadable_files_are_an_error_not_silence(tmp_path: Path) -> None:
    import os
    import shutil
    import subprocess
    import sys

    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "boot-fedora-bls", root, symlinks=True)
    (root / "boot/grub2").chmod(0)
    drop = [
        "setpriv",
        "--inh-caps=-dac_override,-dac_read_search",
        "--bounding-set=-dac_override,-dac_read_search",
    ]
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        drop = []  # not root: permissions apply anyway
    run = subprocess.run(
        [*drop, sys.executable, "-m", "pciback_doctor", "--root", str(root), "--format", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    (root / "boot/grub2").chmod(0o755)
    assert run.returncode == 1, run.stderr
    assert "PB110" in [f["id"] for f in json.loads(run.stdout)["findings"]]


def test_markup_and_control_characters_are_shown_as_text() -> None:
    run = doctor(
        "--root",
        str(FIXTURES / "example"),
        "--cmdline",
        "quiet [/] [bold]x\x1b[31m xen-pciback.hide=(0000:05:00.0)",
    )
    assert run.code in (0, 1) and run.err == ""
    assert "quiet [/] [bold]x\\x1b[31m" in run.out
    assert "\x1b" not in run.out


def test_initramfs_command_on_junk_is_a_usage_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.img"
    junk.write_bytes(bytes(range(256)) * 64)
    run = doctor("initramfs", str(junk))
    assert run.code == 2 and "neither a cpio archive" in run.err and run.out == ""


def test_binary_programs_in_enabled_units_are_not_read(tmp_path: Path) -> None:
    # a real root: lvm2-monitor.service runs /sbin/lvm, a 2 MB ELF binary; it says nothing
    # about pciback and must be no PB110 "could not be read" error
    import shutil

    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "builtin-cmdline-hide", root, symlinks=True)
    units = root / "etc/systemd/system"
    (units / "multi-user.target.wants").mkdir(parents=True)
    (units / "lvm.service").write_text("[Service]\nExecStart=/usr/sbin/lvm vgchange -ay\n")
    (units / "multi-user.target.wants/lvm.service").symlink_to("../lvm.service")
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/lvm").write_bytes(b"\x7fELF" + bytes(2 << 20))
    run = doctor("--root", str(root), "--format", "json")
    assert run.code == 0, run.out
    assert "PB110" not in finding_ids(run)
