"""Boot lab scenarios and the owners their boots show (SPEC §9).

`SCENARIOS` are booted once per test session (`conftest.lab_boots`); `EXPECTED` holds what the
boots showed. The doctor's prediction for a scenario, made on the same kernel tree
(`harness.dom0_kernel`), image (`conftest.lab_images`) and command line (`Scenario.cmdline()`),
must equal `EXPECTED`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from harness import MINIMAL_MODULES, NEED_INITQUEUE, SYSTEMD_MODULES, Scenario
from kernel_build import FLAVOUR, FLAVOUR_E1000E

E1000E = "0000:00:04.0"
SERIAL = "0000:00:05.0"
E1000E_DEV = "e1000e,addr=04.0"
SERIAL_DEV = "pci-serial,addr=05.0"
XHCI = "0000:00:06.0"
XHCI2 = "0000:00:07.0"
XHCI_DEV = "qemu-xhci,addr=06.0"
XHCI2_DEV = "qemu-xhci,addr=07.0"
#: the lab's own kernel (backend built in): dracut installs only the native module
BUILTIN: dict[str, Any] = {"flavour": FLAVOUR, "add_drivers": ("e1000e",)}
#: dash as /bin/sh (Debian's): the project's hook must be POSIX
MODULE_IMAGE = (*MINIMAL_MODULES, "dash")
SYSTEMD_PREFIX = "systemd-"


def under_systemd(scenario: Scenario) -> Scenario:
    """The same boot from an image built with dracut's systemd modules (systemd is /init and runs
    dracut's hooks from its units): named `systemd-NAME`, expected to show NAME's owners unless
    `EXPECTED` says otherwise."""
    return replace(
        scenario,
        name=SYSTEMD_PREFIX + scenario.name,
        dracut_modules=(*scenario.dracut_modules, *SYSTEMD_MODULES),
        extra_files={**scenario.extra_files, NEED_INITQUEUE: ""},
    )


#: Qubes OS's module (`90qubes-pciback`, GPL-2.0, a peer's code used verbatim at test time) is bash:
#: dracut's `bash` module makes the init shell bash; lspci/grep/awk come from the build host.
QUBES: dict[str, Any] = {
    "dracut_modules": (*MINIMAL_MODULES, "bash"),
    "peer_modules": ("90qubes-pciback",),
    "add_drivers": ("e1000e", "xen-pciback", "xhci_pci"),
}
#: Qubes's binder (one line each; a variant, e.g. under systemd, is a `replace` of these).
QUBES_SCENARIOS: tuple[Scenario, ...] = (
    # the NIC is taken by class (02xx) with nothing on the command line
    Scenario("qubes-nic-class", **QUBES),
    # rd.qubes.hide_pci (no domain) takes pci-serial, whose native driver (8250_pci) is built in
    Scenario(
        "qubes-hide-serial", dom0_args="rd.qubes.hide_pci=00:05.0", devices=(E1000E_DEV, SERIAL_DEV), **QUBES
    ),
    # rd.qubes.hide_all_usb adds class 0c03; rd.qubes.dom0_usb keeps one controller in dom0
    Scenario(
        "qubes-usb-dom0-usb",
        dom0_args="rd.qubes.hide_all_usb rd.qubes.dom0_usb=00:06.0",
        devices=(E1000E_DEV, XHCI_DEV, XHCI2_DEV),
        **QUBES,
    ),
    # ... the same word first and a good one last: `set -e` is inert inside `( … ) ||`, only the
    # last bind's status counts, so the failure is silent and the boot goes on (serial keeps its card)
    Scenario(
        "qubes-masked-failure",
        dom0_args=f"rd.qubes.hide_pci={SERIAL},00:04.0",
        devices=(E1000E_DEV, SERIAL_DEV),
        **QUBES,
    ),
    # the module without dracut's bash module (dash as /bin/sh, Debian's): the hook is bash
    Scenario("qubes-dash", **{**QUBES, "dracut_modules": MODULE_IMAGE}),
    # a domain in rd.qubes.hide_pci: the module prepends 0000: again, the last bind fails, die
    Scenario(
        "qubes-domain-prefix",
        dom0_args=f"rd.qubes.hide_pci={SERIAL}",
        devices=(E1000E_DEV, SERIAL_DEV),
        **QUBES,
    ),
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        # 1. negative control: the hide token alone, nothing loads the backend first
        Scenario("hide-only", dom0_args=f"xen-pciback.hide=({E1000E})"),
        # 2. the token + a softdep in the image orders the backend before e1000e
        Scenario(
            "hide-softdep",
            dom0_args=f"xen-pciback.hide=({E1000E})",
            modprobe_d={"xen-pciback.conf": "softdep e1000e pre: xen-pciback\n"},
        ),
        # 3. the project's module claims the e1000e
        Scenario(
            "module-e1000e",
            dom0_args=f"rd.xen_pciback.hide={E1000E}",
            dracut_modules=MODULE_IMAGE,
            with_module=True,
        ),
        # 4. ... and a device whose native driver (8250_pci, driver `serial`) is built in
        Scenario(
            "module-serial-builtin",
            dom0_args=f"rd.xen_pciback.hide={SERIAL}",
            dracut_modules=MODULE_IMAGE,
            with_module=True,
            devices=(E1000E_DEV, SERIAL_DEV),
        ),
        # 5. ... picks up the backend's own hide token
        Scenario(
            "module-hide-token",
            dom0_args=f"xen-pciback.hide=({E1000E})",
            dracut_modules=MODULE_IMAGE,
            with_module=True,
        ),
        # 6. a malformed entry is logged; the valid one is claimed (not strict)
        Scenario(
            "module-malformed",
            dom0_args=f"rd.xen_pciback.hide={E1000E},zz:99.9",
            dracut_modules=MODULE_IMAGE,
            with_module=True,
        ),
        # 7. /etc/xen-pciback.conf in the image (bash as /bin/sh this time)
        Scenario(
            "module-conf-file",
            dracut_modules=MINIMAL_MODULES,
            with_module=True,
            devices=(E1000E_DEV, SERIAL_DEV),
            extra_files={
                "/etc/xen-pciback.conf": f"# passthrough\n{E1000E}  # NIC\n\n00:05.0\n",
            },
        ),
        # 8. rd.xen_pciback=0 switches the module off: e1000e wins as in scenario 1
        Scenario(
            "module-disabled",
            dom0_args=f"rd.xen_pciback=0 rd.xen_pciback.hide={E1000E}",
            dracut_modules=MODULE_IMAGE,
            with_module=True,
        ),
        # 9. strict: the malformed entry stops the boot (dracut's die), the probe never runs
        Scenario(
            "module-strict",
            dom0_args=f"rd.xen_pciback.strict=1 rd.xen_pciback.hide={E1000E},zz:99.9",
            dracut_modules=MODULE_IMAGE,
            with_module=True,
        ),
        # 10. the backend ordered first by rd.driver.pre (dracut's kernel-modules code) with the
        # hide token naming both devices: e1000e is a module and loses; 8250_pci's `serial` is built
        # in and binds during kernel init, before the initramfs loads anything
        Scenario(
            "driver-pre-serial-builtin",
            dom0_args=f"xen-pciback.hide=({E1000E})({SERIAL}) rd.driver.pre=xen-pciback",
            dracut_modules=(*MINIMAL_MODULES, "kernel-modules"),
            devices=(E1000E_DEV, SERIAL_DEV),
        ),
        # 10b. rd.driver.pre in an image without dracut's kernel-modules code: nothing reads it
        Scenario("driver-pre-minimal", dom0_args=f"xen-pciback.hide=({E1000E}) rd.driver.pre=xen-pciback"),
        # 10c. the backend listed in the image's modules-load.d: dracut's own init never reads it
        Scenario(
            "modules-load",
            dom0_args=f"xen-pciback.hide=({E1000E})",
            extra_files={"/etc/modules-load.d/xen-pciback.conf": "xen-pciback\n"},
        ),
        # 11-15. the lab's own kernel, the backend built in (pcistub_init at fs_initcall), e1000e a
        # module and 8250_pci (`serial`) built in: the hide token claims both natives' devices
        Scenario(
            "builtin-hide",
            dom0_args=f"xen-pciback.hide=({E1000E})({SERIAL})",
            devices=(E1000E_DEV, SERIAL_DEV),
            **BUILTIN,
        ),
        # ... under the module's other spelling (parse_args: `-` and `_` are one)
        Scenario("builtin-underscore", dom0_args=f"xen_pciback.hide=({E1000E})", **BUILTIN),
        # ... but not under the classic XenLinux name: no parameter `pciback.hide` exists
        Scenario("builtin-classic", dom0_args=f"pciback.hide=({E1000E})", **BUILTIN),
        # ... nor from modprobe.d: a built-in driver's options come only from the command line (PB203)
        Scenario(
            "builtin-modprobe-only",
            modprobe_d={"xen-pciback.conf": f"options xen-pciback hide=({E1000E})\n"},
            **BUILTIN,
        ),
        # ... and with e1000e built in too (device_initcall): fs_initcall still comes first
        Scenario(
            "builtin-e1000e-builtin",
            dom0_args=f"xen-pciback.hide=({E1000E})",
            devices=(E1000E_DEV, SERIAL_DEV),
            flavour=FLAVOUR_E1000E,
            add_drivers=(),
        ),
        # ... and one malformed entry makes pcistub_init fail: the driver never registers
        Scenario(
            "builtin-malformed",
            dom0_args=f"xen-pciback.hide=({E1000E})(zz:zz.z)",
            devices=(E1000E_DEV, SERIAL_DEV),
            **BUILTIN,
        ),
        # 16-17. the same kernels started without Xen (a default boot entry without the hypervisor):
        # the module refuses to load outside dom0 (xen_pcibk_init: -ENODEV), while a built-in
        # backend's pcistub_init runs at fs_initcall whatever the machine and still takes its devices
        Scenario(
            "bare-hide-softdep",
            dom0_args=f"xen-pciback.hide=({E1000E})",
            modprobe_d={"xen-pciback.conf": "softdep e1000e pre: xen-pciback\n"},
            xen=False,
        ),
        Scenario(
            "bare-builtin-hide",
            dom0_args=f"xen-pciback.hide=({E1000E})",
            xen=False,
            **BUILTIN,
        ),
        *QUBES_SCENARIOS,
    )
}

#: The scenarios booted again from an image with dracut's systemd modules, one line each.
SYSTEMD_VARIANTS = (
    "hide-only",
    "hide-softdep",
    "module-e1000e",
    "module-serial-builtin",
    "driver-pre-serial-builtin",
    # dracut-pre-udev.service loads rd.driver.pre itself: no kernel-modules code needed
    "driver-pre-minimal",
    # systemd-modules-load runs unordered against udev coldplug (predicted unknown: RACES)
    "modules-load",
    # Qubes OS's dom0 initramfs runs systemd (Fedora's dracut): its module under dracut-cmdline.service
    "qubes-nic-class",
    "qubes-hide-serial",
    "qubes-usb-dom0-usb",
    "qubes-domain-prefix",
)
SCENARIOS.update((v.name, v) for v in (under_systemd(SCENARIOS[n]) for n in SYSTEMD_VARIANTS))

#: Observed owners (scenario -> BDF -> driver).
EXPECTED: dict[str, dict[str, str]] = {
    "hide-only": {E1000E: "e1000e"},
    "hide-softdep": {E1000E: "pciback"},
    "module-e1000e": {E1000E: "pciback"},
    "module-serial-builtin": {SERIAL: "pciback", E1000E: "e1000e"},
    "module-hide-token": {E1000E: "pciback"},
    "module-malformed": {E1000E: "pciback"},
    "module-conf-file": {E1000E: "pciback", SERIAL: "pciback"},
    "module-disabled": {E1000E: "e1000e"},
    "driver-pre-serial-builtin": {E1000E: "pciback", SERIAL: "serial"},
    "builtin-hide": {E1000E: "pciback", SERIAL: "pciback"},
    "builtin-underscore": {E1000E: "pciback"},
    "builtin-classic": {E1000E: "e1000e"},
    "builtin-modprobe-only": {E1000E: "e1000e"},
    "builtin-malformed": {E1000E: "e1000e", SERIAL: "serial"},
    "builtin-e1000e-builtin": {E1000E: "pciback", SERIAL: "serial"},
    "bare-hide-softdep": {E1000E: "e1000e"},
    "bare-builtin-hide": {E1000E: "pciback"},
    "driver-pre-minimal": {E1000E: "e1000e"},
    "modules-load": {E1000E: "e1000e"},
    # under systemd: rd.driver.pre works without kernel-modules; modules-load.d is read
    "systemd-driver-pre-minimal": {E1000E: "pciback"},
    "systemd-modules-load": {E1000E: "pciback"},
    "qubes-nic-class": {E1000E: "pciback"},
    "qubes-hide-serial": {E1000E: "pciback", SERIAL: "pciback"},
    "qubes-usb-dom0-usb": {E1000E: "pciback", XHCI: "xhci_hcd", XHCI2: "pciback"},
    "qubes-masked-failure": {E1000E: "pciback", SERIAL: "serial"},
}
for _name in SYSTEMD_VARIANTS:
    if _name in EXPECTED:  # a boot that stops has no owners (STOPS)
        EXPECTED.setdefault(SYSTEMD_PREFIX + _name, EXPECTED[_name])
#: Devices the doctor predicts `unknown` (a race SPEC §3 does not call): the boot shows one of the
#: racers, whichever came first that time.
RACES: dict[str, tuple[str, ...]] = {"systemd-modules-load": (E1000E,)}
#: Scenarios whose boot is expected to stop in the initramfs (no owners to compare).
STOPS = ("module-strict", "qubes-domain-prefix", "qubes-dash", "systemd-qubes-domain-prefix")


def watched(scenario: Scenario) -> list[str]:
    """The BDFs of the scenario's emulated devices (from `addr=SS.F` of each `-device`)."""
    bdfs = []
    for device in scenario.devices:
        for opt in device.split(",")[1:]:
            if opt.startswith("addr="):
                slot, _, func = opt.removeprefix("addr=").partition(".")
                bdfs.append(f"0000:00:{int(slot, 16):02x}.{int(func or '0', 16)}")
    return bdfs
