"""Boot lab: what really owns the device after udev settles (SPEC §9).

Each scenario (`scenarios.py`) boots Xen 4.17 + Debian's dom0 kernel under qemu with an image built
by the real dracut; the boots run once per session, in parallel (`conftest.lab_boots`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from harness import BootResult, Scenario, describe
from scenarios import E1000E, EXPECTED, RACES, SERIAL

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("name", list(EXPECTED))
def test_owner(name: str, lab_boots: dict[str, BootResult]) -> None:
    result = lab_boots[name]
    assert result.completed, describe(result)
    want = EXPECTED[name]
    got = {bdf: result.owners.get(bdf, "?") for bdf in want}
    assert got == want, describe(result, list(want))


def test_module_runs_before_udev(lab_boots: dict[str, BootResult]) -> None:
    """At cmdline 00 udevd is not running and no module-backed driver owns the e1000e yet."""
    result = lab_boots["module-e1000e"]
    assert result.early.get("udevd") == "no", result.early
    assert result.early_owners.get(E1000E) == "none", result.early_owners
    assert result.lines("xen-pciback: 0000:00:04.0: owned by pciback"), describe(result)


def test_systemd_runs_the_cmdline_hook_before_udevd(lab_boots: dict[str, BootResult]) -> None:
    """Under systemd the cmdline hooks run in dracut-cmdline.service, which dracut-pre-udev.service
    orders before systemd-udevd.service: still no udevd and no e1000e at cmdline 00."""
    result = lab_boots["systemd-module-e1000e"]
    assert result.lines("systemd[1]: Running in initrd"), describe(result)
    assert result.early.get("udevd") == "no", result.early
    assert result.early_owners.get(E1000E) == "none", result.early_owners
    # the hook's own messages go to the journal under systemd; the kernel's reach the console
    lines = result.log.splitlines()

    def first(*needles: str) -> int:
        return next((i for i, line in enumerate(lines) if all(n in line for n in needles)), len(lines))

    seized = first(f"pciback {E1000E}: xen_pciback: seizing device")
    assert seized < first("Finished", "dracut-cmdline.service") < first("Starting", "systemd-udevd"), (
        describe(result)
    )


def test_systemd_loads_rd_driver_pre_from_dracut_pre_udev(
    lab_images: dict[str, Path], lab_boots: dict[str, BootResult]
) -> None:
    """The image has no kernel-modules code (no parse-kernel.sh): dracut-pre-udev.service ran and
    loaded the backend before udevd started."""
    from pciback_doctor.facts.image import open_image

    names = set(open_image(lab_images["systemd-driver-pre-minimal"], list_only=True).paths)
    assert not any(n.endswith("parse-kernel.sh") for n in names)
    result = lab_boots["systemd-driver-pre-minimal"]
    assert [line for line in result.lines("dracut pre-udev hook") if "Finished" in line], describe(result)
    assert result.owners.get(E1000E) == "pciback", describe(result, [E1000E])


def test_builtin_driver_is_unbound(lab_boots: dict[str, BootResult]) -> None:
    """8250_pci is built in: it owns the serial card before any hook; the module unbinds it."""
    result = lab_boots["module-serial-builtin"]
    assert result.early_owners.get(SERIAL) == "serial", result.early_owners
    assert result.lines("0000:00:05.0: unbinding from serial"), describe(result)


def test_malformed_entry_is_logged(lab_boots: dict[str, BootResult]) -> None:
    result = lab_boots["module-malformed"]
    assert result.lines("xen-pciback: ERROR: rd.xen_pciback.hide: malformed device 'zz:99.9'")
    assert result.lines("1 device(s) owned by pciback, 1 failure(s)"), describe(result)


def test_no_failures_logged(lab_boots: dict[str, BootResult]) -> None:
    for name in ("module-e1000e", "module-serial-builtin", "module-hide-token", "module-conf-file"):
        result = lab_boots[name]
        assert not result.lines("xen-pciback: ERROR"), describe(result)


def test_disabled_logs_it(lab_boots: dict[str, BootResult]) -> None:
    result = lab_boots["module-disabled"]
    assert result.lines("xen-pciback: disabled by rd.xen_pciback=0"), describe(result)


def test_strict_failure_is_fatal(lab_boots: dict[str, BootResult]) -> None:
    result = lab_boots["module-strict"]
    assert not result.completed, describe(result)
    assert result.lines("FATAL: xen-pciback: 1 failure(s)"), describe(result)


# -- the doctor's prediction, made beforehand on the same kernel tree, image and command line ----------

#: The doctor names a native driver by its module; sysfs shows the PCI driver's own name.
DRIVER_NAME = {"xhci_pci": "xhci_hcd"}
DEVICE_IDS = {"e1000e": "8086:10d3:020000", "pci-serial": "1b36:0002:070002", "qemu-xhci": "1b36:000d:0c0330"}


BARE_MENU = """set default="0"
menuentry 'Debian GNU/Linux' {{
	linux	/boot/vmlinuz-{release} root=/dev/sdz9 ro
	initrd	/boot/initrd.img-{release}
}}
menuentry 'Debian GNU/Linux, with Xen hypervisor' {{
	multiboot2	/boot/xen-4.17-amd64.gz placeholder
	module2	/boot/vmlinuz-{release} placeholder root=/dev/sdz9 ro
	module2	--nounzip /boot/initrd.img-{release}
}}
"""


def predict(name: str, image: Path, host: Path) -> dict[str, dict[str, Any]]:
    from scenarios import SCENARIOS

    return predict_for(SCENARIOS[name], image, host)


def predict_for(scenario: Scenario, image: Path, host: Path) -> dict[str, dict[str, Any]]:
    from harness import dom0_kernel
    from scenarios import watched

    from helpers import devices, doctor

    tree, _, release = dom0_kernel(scenario.flavour)
    if not scenario.xen:  # the host's GRUB menu starts this kernel without Xen, a Xen entry after it
        (host / "boot" / "grub").mkdir(parents=True, exist_ok=True)
        (host / "boot" / "grub" / "grub.cfg").write_text(BARE_MENU.format(release=release))
    args = [
        "--root", str(host), "--kernel", release, "--config", str(tree / "boot" / f"config-{release}"),
        "--modules-dir", str(tree / "lib" / "modules" / release), "--initramfs", str(image),
        "--kernel-image", str(tree / "boot" / f"vmlinuz-{release}"),
        "--cmdline", scenario.cmdline(), "--format", "json",
    ]  # fmt: skip
    for spec, bdf in zip(scenario.devices, watched(scenario), strict=True):
        args += ["--device", f"{bdf}={DEVICE_IDS[spec.split(',')[0]]}"]
    run = doctor(*args)
    assert run.code in (0, 1), run.err
    return devices(run)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_prediction_equals_boot(
    name: str, lab_images: dict[str, Path], lab_boots: dict[str, BootResult], tmp_path: Path
) -> None:
    """SPEC §9: a prediction the boot contradicts is a bug."""
    from scenarios import SCENARIOS, watched

    predicted = predict(name, lab_images[name], tmp_path)
    result = lab_boots[name]
    assert result.completed, describe(result)
    for bdf in watched(SCENARIOS[name]):
        observed = result.owners.get(bdf, "?")
        dev = predicted[bdf]
        if bdf in RACES.get(name, ()):
            # a race: the boot shows one of the racers, the doctor says it cannot tell which
            assert dev["prediction"] == "unknown", (name, bdf, dev)
            assert observed in ("pciback", dev["native_driver"]), (name, bdf, observed, dev)
        elif observed == "pciback":
            assert dev["prediction"] == "claimed", (name, bdf, dev)
        else:
            winner = DRIVER_NAME.get(dev["winner"], dev["winner"])
            assert (dev["prediction"], winner) == ("not-claimed", observed), (name, bdf, dev)


def test_bare_boot_without_xen_is_pb607_and_the_module_never_loads(
    lab_images: dict[str, Path], lab_boots: dict[str, BootResult], tmp_path: Path
) -> None:
    """The default entry starts the kernel alone: the boot shows e1000e (xen_pcibk_init returns
    -ENODEV outside dom0, the softdep's xen-pciback never loads), and the doctor says why (PB607)."""
    from scenarios import SCENARIOS

    from helpers import doctor

    result = lab_boots["bare-hide-softdep"]
    assert result.early.get("proc_xen") == "no" and result.owners.get(E1000E) == "e1000e", describe(result)
    predicted = predict_for(SCENARIOS["bare-hide-softdep"], lab_images["bare-hide-softdep"], tmp_path)
    assert "without Xen" in predicted[E1000E]["reason"]
    run = doctor("--root", str(tmp_path), "--kernel", predicted_release(), "--format", "json",
                 "--device", f"{E1000E}={DEVICE_IDS['e1000e']}")  # fmt: skip
    assert [f["severity"] for f in run.json()["findings"] if f["id"] == "PB607"] == ["error"], run.out
    # a built-in backend is another matter: pcistub_init runs at fs_initcall on any machine
    builtin = lab_boots["bare-builtin-hide"]
    assert builtin.lines("xen_pciback: seizing device") and builtin.owners.get(E1000E) == "pciback"


def predicted_release() -> str:
    from harness import dom0_kernel

    return dom0_kernel("amd64")[2]


def test_doctor_reports_the_malformed_list_and_strict_stop(
    lab_images: dict[str, Path], tmp_path: Path
) -> None:
    from helpers import doctor

    predicted = predict("module-strict", lab_images["module-strict"], tmp_path)
    assert predicted[E1000E]["prediction"] == "not-claimed"
    assert "strict" in predicted[E1000E]["reason"]
    from harness import dom0_kernel
    from scenarios import SCENARIOS

    tree, _, release = dom0_kernel()
    run = doctor(
        "--root", str(tmp_path), "--kernel", release, "--modules-dir", str(tree / "lib/modules" / release),
        "--config", str(tree / "boot" / f"config-{release}"), "--initramfs", str(lab_images["module-malformed"]),
        "--cmdline", SCENARIOS["module-malformed"].cmdline(), "--format", "json",
    )  # fmt: skip
    pb702 = [f for f in run.json()["findings"] if f["id"] == "PB702"]
    assert [f["message"] for f in pb702] == ["'zz:99.9' is not a PCI address the dracut module accepts"]


@pytest.mark.parametrize(
    ("name", "fatal"),
    [
        # a domain in rd.qubes.hide_pci: 0000:0000:… (new_slot EINVAL, bind ENODEV) is the last bind
        ("qubes-domain-prefix", "FATAL: Cannot unbind"),
        # dash as /bin/sh: `set -o pipefail` is an illegal option there
        ("qubes-dash", "FATAL: Cannot obtain list of PCI devices"),
        # the same under systemd (Qubes's own initramfs): dracut-cmdline.service runs the hook
        ("systemd-qubes-domain-prefix", "FATAL: Cannot unbind"),
    ],
)
def test_qubes_stops_the_boot(
    name: str, fatal: str, lab_images: dict[str, Path], lab_boots: dict[str, BootResult], tmp_path: Path
) -> None:
    """90qubes-pciback calls die: the boot stops, and the doctor says so beforehand (PB703)."""
    from scenarios import SCENARIOS, watched

    result = lab_boots[name]
    assert result.stopped, describe(result)
    assert result.lines(fatal), describe(result)
    predicted = predict(name, lab_images[name], tmp_path)
    for bdf in watched(SCENARIOS[name]):
        assert (predicted[bdf]["prediction"], predicted[bdf]["winner"]) == ("not-claimed", "none")
        assert "stops the boot" in predicted[bdf]["reason"]


@pytest.mark.parametrize("name", ["qubes-hide-serial"])
def test_qubes_claims_before_udev(name: str, lab_boots: dict[str, BootResult]) -> None:
    """Cmdline hook 02 runs before udevd: the NIC is unbound then, the built-in serial driver owns
    its card, and 90qubes-pciback takes both (the boot shows pciback seizing them)."""
    from scenarios import SERIAL

    result = lab_boots[name]
    assert result.early.get("udevd") == "no", result.early
    assert result.early_owners.get(E1000E) == "none" and result.early_owners.get(SERIAL) == "serial"
    assert result.lines("pciback 0000:00:05.0: xen_pciback: seizing device"), describe(result)


def test_fix_then_rebuild_then_boot(lab_images: dict[str, Path], tmp_path: Path) -> None:
    """SPEC §8 end to end: the doctor's modprobe fix for the negative control, written with
    `fix --write`, put into a new image by the real dracut, and a real boot shows pciback."""
    from harness import boot, build_image, dom0_kernel
    from scenarios import SCENARIOS

    from helpers import doctor
    from pciback_doctor.facts.root import Root
    from pciback_doctor.facts.system import read_dracut_conf

    control = SCENARIOS["hide-only"]
    host = tmp_path / "host"
    (host / "etc/dracut.conf.d").mkdir(parents=True)
    tree, _, release = dom0_kernel()
    fix = doctor(
        "fix", "--root", str(host), "--kernel", release, "--config", str(tree / "boot" / f"config-{release}"),
        "--modules-dir", str(tree / "lib/modules" / release), "--initramfs", str(lab_images["hide-only"]),
        "--cmdline", control.cmdline(), "--device", f"{E1000E}=8086:10d3:020000", "--write",
        "--kernel-image", str(tree / "boot" / f"vmlinuz-{release}"),
    )  # fmt: skip
    assert fix.code == 0 and f"dracut -f --kver {release}" in fix.out, fix.out + fix.err
    conf = read_dracut_conf(Root(host))
    assert "xen-pciback" in conf.words("add_drivers")
    fixed = replace(
        control,
        name="fixed-by-doctor",
        modprobe_d={"xen-pciback.conf": (host / "etc/modprobe.d/xen-pciback.conf").read_text()},
        add_drivers=("e1000e", *conf.words("add_drivers")),
    )
    image = build_image(fixed, tmp_path)
    assert predict_for(fixed, image, host)[E1000E]["prediction"] == "claimed"
    result = boot(fixed, image)
    assert result.completed, describe(result)
    assert result.owners.get(E1000E) == "pciback", describe(result, [E1000E])
