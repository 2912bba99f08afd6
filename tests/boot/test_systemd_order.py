"""dracut with systemd as the image's /init (Fedora, the RHEL family, Qubes): the hooks run from
dracut's units, rd.driver.pre from dracut-pre-udev.service, and systemd-modules-load races udev
coldplug (SPEC §3). Images are made by test code with the layout dracut 059 gives them."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_generators import BACKEND, E1000E, HIDE, image, predict, root_with_kernel

from cpio_writer import CpioEntry, file, symlink
from helpers import FIXTURES, doctor

UNITS = "usr/lib/systemd/system"
WANTS = "etc/systemd/system/initrd.target.wants"
HIDE_TOKEN = "ro xen-pciback.hide=(0000:05:00.0)"


def systemd_dracut(*extra: CpioEntry, pre_udev: bool = True, modules_load: bool = True) -> list[CpioEntry]:
    """/init -> systemd (00systemd), dracut's units wanted by initrd.target (98dracut-systemd) and
    systemd-modules-load enabled in sysinit.target.wants (00systemd), as `dracut -m systemd ...` builds."""
    entries = [
        file("usr/lib/dracut/modules.txt", b"systemd\nsystemd-initrd\ndracut-systemd\nbase\n"),
        file("usr/lib/systemd/systemd", b"\x7fELF"),
        symlink("init", "usr/lib/systemd/systemd"),
        file(f"{UNITS}/dracut-cmdline.service"),
        symlink(f"{WANTS}/dracut-cmdline.service", f"/{UNITS}/dracut-cmdline.service"),
        file(f"{UNITS}/systemd-modules-load.service"),
    ]
    if pre_udev:
        entries += [
            file(f"{UNITS}/dracut-pre-udev.service"),
            symlink(f"{WANTS}/dracut-pre-udev.service", f"/{UNITS}/dracut-pre-udev.service"),
        ]
    if modules_load:
        entries.append(
            symlink(
                f"{UNITS}/sysinit.target.wants/systemd-modules-load.service",
                "../systemd-modules-load.service",
            )
        )
    return [*entries, *extra]


MODPROBE_HIDE = file("etc/modprobe.d/x.conf", HIDE.encode())
MODULES_LOAD = file("etc/modules-load.d/xen-pciback.conf", b"# Xen\nxen-pciback\n")


@pytest.mark.parametrize(
    ("entries", "cmdline", "verdict", "winner"),
    [
        # no parse-kernel.sh under systemd (90kernel-modules/module-setup.sh): dracut-pre-udev.sh loads
        # rd.driver.pre before systemd-udevd starts
        (
            systemd_dracut(E1000E, BACKEND, MODPROBE_HIDE),
            "ro rd.driver.pre=xen-pciback",
            "claimed",
            "pciback",
        ),
        # ... also when rd.driver.pre comes from the image's cmdline.d (force_drivers): the unit's
        # ConditionPathExistsGlob=|/etc/cmdline.d/*.conf holds
        (
            systemd_dracut(
                E1000E,
                BACKEND,
                MODPROBE_HIDE,
                file("etc/cmdline.d/20-force_drivers.conf", b"rd.driver.pre=xen-pciback\n"),
            ),
            "ro",
            "claimed",
            "pciback",
        ),
        # the old spelling rdloaddriver= is read by dracut-pre-udev.sh (059), but it does not meet the
        # unit's ConditionKernelCommandLine=|rd.driver.pre: with no cmdline.d nor pre-udev hook, skipped
        (
            systemd_dracut(E1000E, BACKEND, MODPROBE_HIDE),
            "ro rdloaddriver=xen-pciback",
            "not-claimed",
            "e1000e",
        ),
        # an image without dracut-pre-udev.service has nothing that reads rd.driver.pre
        (
            systemd_dracut(E1000E, BACKEND, MODPROBE_HIDE, pre_udev=False),
            "ro rd.driver.pre=xen-pciback",
            "not-claimed",
            "e1000e",
        ),
        # the softdep in the image's modprobe.d: udevd's kmod builtin honours it as modprobe does
        (
            systemd_dracut(
                E1000E, BACKEND, file("etc/modprobe.d/x.conf", b"softdep e1000e pre: xen-pciback\n")
            ),
            HIDE_TOKEN,
            "claimed",
            "pciback",
        ),
        # the hide token alone: udev coldplug loads e1000e, nothing loads the backend first
        (systemd_dracut(E1000E, BACKEND), HIDE_TOKEN, "not-claimed", "e1000e"),
        # the image's modules-load.d: systemd-modules-load runs unordered against udev coldplug
        (systemd_dracut(E1000E, BACKEND, MODULES_LOAD), HIDE_TOKEN, "unknown", None),
        # ... and the kernel's modules_load= (rd.-prefixed too inside the initrd)
        (systemd_dracut(E1000E, BACKEND), f"{HIDE_TOKEN} rd.modules_load=xen-pciback", "unknown", None),
        # ... a race only when the backend gets a hide naming the device
        (systemd_dracut(E1000E, BACKEND, MODULES_LOAD), "ro", "not-claimed", "e1000e"),
        # ... and with no native driver in the image nothing races it
        (systemd_dracut(BACKEND, MODULES_LOAD), HIDE_TOKEN, "claimed", "pciback"),
        # ... systemd-modules-load not enabled: the list is never read
        (
            systemd_dracut(E1000E, BACKEND, MODULES_LOAD, modules_load=False),
            HIDE_TOKEN,
            "not-claimed",
            "e1000e",
        ),
    ],
)
def test_systemd_order(
    tmp_path: Path, entries: list[CpioEntry], cmdline: str, verdict: str, winner: str | None
) -> None:
    dev, _ = predict(image(tmp_path, *entries), cmdline)
    assert (dev["prediction"], dev["winner"], dev["phase"]) == (verdict, winner, "initramfs"), dev


def test_modules_load_race_is_reported(tmp_path: Path) -> None:
    dev, ids = predict(image(tmp_path, *systemd_dracut(E1000E, BACKEND, MODULES_LOAD)), HIDE_TOKEN)
    assert "a race" in dev["reason"]
    assert any(
        e["path"].endswith("!etc/modules-load.d/xen-pciback.conf") and e["line"] == 2 for e in dev["evidence"]
    )
    assert "PB305" in ids


def test_script_dracut_ignores_modules_load_d(tmp_path: Path) -> None:
    """Without systemd nothing in dracut's init reads modules-load.d (99base/init.sh)."""
    img = image(tmp_path, file("usr/lib/dracut/modules.txt", b"base\n"), E1000E, BACKEND, MODULES_LOAD)
    dev, _ = predict(img, HIDE_TOKEN)
    assert (dev["prediction"], dev["winner"]) == ("not-claimed", "e1000e")


def test_rd_driver_pre_without_its_unit_is_a_broken_rule(tmp_path: Path) -> None:
    img = image(tmp_path, *systemd_dracut(E1000E, BACKEND, MODPROBE_HIDE, pre_udev=False))
    run_dev, ids = predict(img, "ro rd.driver.pre=xen-pciback")
    assert run_dev["prediction"] == "not-claimed"
    assert "PB304" in ids


def test_rd_driver_pre_in_etc_cmdline_alone_does_not_start_the_unit(tmp_path: Path) -> None:
    # dracut reads etc/cmdline (getcmdline), but dracut-pre-udev.service's conditions look at the
    # kernel's command line, cmdline.d/*.conf and the pre-udev hooks only: the unit is skipped
    img = image(
        tmp_path,
        *systemd_dracut(E1000E, BACKEND, MODPROBE_HIDE, file("etc/cmdline", b"rd.driver.pre=xen-pciback\n")),
    )
    dev, _ = predict(img, "ro")
    assert (dev["prediction"], dev["winner"]) == ("not-claimed", "e1000e")


def test_header_says_whether_the_image_runs_systemd(tmp_path: Path) -> None:
    def target(*entries: CpioEntry) -> dict[str, object]:
        img = image(tmp_path, *entries)
        args = ("--root", str(root_with_kernel(tmp_path)), "--initramfs", str(img), "--cmdline", "ro")
        text = doctor(*args).out
        json_target: dict[str, object] = doctor(*args, "--format", "json").json()["target"]
        return {**json_target, "text": text}

    on = target(*systemd_dracut(E1000E, BACKEND))
    assert on["initramfs_systemd"] is True
    assert "(runs systemd)" in str(on["text"])
    off = target(file("usr/lib/dracut/modules.txt", b"base\n"), E1000E, BACKEND)
    assert off["initramfs_systemd"] is False
    assert "(runs systemd)" not in str(off["text"])


def test_fedora_family_runs_systemd_in_its_initramfs_when_no_image_says() -> None:
    run = doctor("--root", str(FIXTURES / "boot-fedora-bls"), "--format", "json")
    assert run.json()["target"]["initramfs_systemd"] is True, run.err


def test_mkinitcpio_with_systemd_does_not_run_its_modules_loop(tmp_path: Path) -> None:
    """mkinitcpio's init modprobes MODULES before udev; with its systemd hook systemd is /init, so
    only what systemd-modules-load reads loads the backend, and that races udev."""
    base = [
        file("init_functions"),
        file("VERSION", b"39\n"),
        file("config", b"MODULES=(xen-pciback)\nHOOKS=(base systemd)\n"),
        file("usr/lib/systemd/systemd", b"\x7fELF"),
        symlink("init", "usr/lib/systemd/systemd"),
        symlink(
            f"{UNITS}/sysinit.target.wants/systemd-modules-load.service", "../systemd-modules-load.service"
        ),
        file(f"{UNITS}/systemd-modules-load.service"),
        E1000E,
        BACKEND,
    ]
    dev, _ = predict(image(tmp_path, *base), HIDE_TOKEN)
    assert (dev["prediction"], dev["winner"]) == ("not-claimed", "e1000e"), dev
    listed = file("etc/modules-load.d/MODULES.conf", b"xen-pciback\n")
    dev, _ = predict(image(tmp_path, *base, listed), HIDE_TOKEN)
    assert dev["prediction"] == "unknown", dev


def test_initramfs_summary_names_the_init_and_the_race(tmp_path: Path) -> None:
    run = doctor("initramfs", str(image(tmp_path, *systemd_dracut(E1000E, BACKEND, MODULES_LOAD))))
    assert "init         systemd" in run.out
    assert "rd.driver.pre support (dracut-pre-udev.service): yes" in run.out
    assert "!etc/modules-load.d/xen-pciback.conf:2: xen-pciback" in run.out
