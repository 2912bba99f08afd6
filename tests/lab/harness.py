"""Boot lab: real Xen + real Debian dom0 kernel + an initramfs built by the real dracut, under qemu.

A `Scenario` describes one boot: the dom0 command line, the dracut modules of the image, the
modprobe.d files and other files put into the image, the emulated PCI devices, and whether the
project's dracut module (`dracut-module/90xen-pciback`) is part of the image.

`build_image()` runs the host's dracut against the extracted Debian kernel package (see
`tests/debian.py`) with a private copy of the dracut tree (`dracutbasedir`), so the project's
module is found without installing anything into `/usr/lib/dracut`, and with `--conf /dev/null
--confdir <empty>` so the host's dracut configuration does not leak in. A lab-only dracut module
(`lab-probe`, generated into the private tree, never installed on the host) adds two hooks:

* `cmdline/00-lab-early.sh` runs right before the project's hook (same priority, sorts first) and
  prints `LAB-EARLY key=value …` (is `/proc/xen` there, the hypervisor type, is udevd running) and
  `LAB-EARLYOWNER BDF DRIVER` for every PCI device;
* `initqueue/settled/99-lab-probe.sh` runs after udev has settled, prints `LAB-OWNER BDF DRIVER`
  for every PCI device (`none` when unbound) to `/dev/kmsg` and powers the machine off.

`boot()` starts `qemu-system-x86_64` (TCG, `-cpu qemu64`) with Xen as the multiboot kernel and the
dom0 kernel + image as modules, reads the serial console and returns the owners and the time.
modprobe.d files and other extra files go into the image with `--include`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import kernel_build

from debian import Unavailable, cache_dir, extract_deb, kernel_tree

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "dracut-module" / "90xen-pciback"
HOST_DRACUT = Path("/usr/lib/dracut")
#: Other projects' dracut modules (test material, never part of this repository): a scenario's
#: `peer_modules` are copied verbatim from here into the private dracut tree at test time.
#: Other projects' real dracut modules, kept beside the repository (`../shared/peers`; from a git
#: worktree under a sibling folder, one level further up); PCIBACK_DOCTOR_PEERS names another place.
PEERS = Path(
    os.environ.get("PCIBACK_DOCTOR_PEERS")
    or next(
        (
            p
            for p in (REPO.parent / "shared" / "peers", REPO.parent.parent / "shared" / "peers")
            if p.is_dir()
        ),
        REPO.parent / "shared" / "peers",
    )
)
XEN_PACKAGE = os.environ.get("PCIBACK_DOCTOR_XEN", "xen-hypervisor-4.17-amd64")

#: dracut modules of the smallest image that boots to the initqueue (FACTS: "Boot lab know-how").
MINIMAL_MODULES: tuple[str, ...] = ("base", "udev-rules", "rootfs-block")
#: dracut's systemd modules: systemd becomes /init and runs dracut's hooks from its units.
SYSTEMD_MODULES: tuple[str, ...] = ("systemd", "systemd-initrd", "dracut-systemd")
#: Under systemd, dracut-initqueue.service (and so the probe in initqueue/settled) runs only when
#: this file exists (ConditionPathExists=|/lib/dracut/need-initqueue; /lib -> usr/lib in the image).
NEED_INITQUEUE = "/usr/lib/dracut/need-initqueue"
#: The project's module, as dracut knows it (directory `90xen-pciback`).
PROJECT_MODULE = "xen-pciback"
#: The lab-only probe module generated into the private dracut tree.
LAB_MODULE = "lab-probe"
#: Root that never appears: the initqueue spins until the probe powers the machine off.
BASE_DOM0_ARGS = "console=hvc0 root=/dev/sdz9 rd.retry=20 rd.shell=0 rd.timeout=0 panic=5"
XEN_ARGS = "console=com1 com1=115200,8n1 dom0_mem=512M loglvl=warning guest_loglvl=all"

_OWNER = re.compile(r"LAB-OWNER ([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) (\S+)")
_EARLY_OWNER = re.compile(r"LAB-EARLYOWNER ([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) (\S+)")
_EARLY = re.compile(r"LAB-EARLY ((?:\S+=\S*\s?)+)")


@dataclass(frozen=True)
class Scenario:
    """One lab boot. Everything that goes into the image or onto the command line is here."""

    name: str
    #: Extra dom0 (Linux) arguments, appended to `BASE_DOM0_ARGS`. Plain commas: `boot()` doubles
    #: them for qemu's multiboot module list.
    dom0_args: str = ""
    #: dracut `-m` list (the project's module is added when `with_module`).
    dracut_modules: tuple[str, ...] = MINIMAL_MODULES
    #: basename -> content, installed as `/etc/modprobe.d/<basename>` in the image.
    modprobe_d: Mapping[str, str] = field(default_factory=dict)
    #: qemu `-device` specifications.
    devices: tuple[str, ...] = ("e1000e,addr=04.0",)
    #: Put the project's dracut module (`dracut-module/90xen-pciback`) into the image.
    with_module: bool = False
    #: Kernel modules put into the image (`--add-drivers`, installed even if no device needs them).
    add_drivers: tuple[str, ...] = ("e1000e", "xen-pciback")
    #: image path (absolute) -> content, for anything else the image should carry
    #: (e.g. `/etc/xen-pciback.conf`, `/etc/cmdline.d/50-x.conf`).
    extra_files: Mapping[str, str] = field(default_factory=dict)
    #: Debian kernel flavour (`tests.debian.kernel_tree`).
    flavour: str = "amd64"
    #: Other projects' dracut modules (directory names under `PEERS`, e.g. `90qubes-pciback`),
    #: copied verbatim into the private dracut tree and added to the `-m` list.
    peer_modules: tuple[str, ...] = ()
    #: Boot the kernel under Xen (as dom0); False: the kernel alone on the machine, as a default boot
    #: entry without Xen starts it (its console then is the serial port, not Xen's hvc0).
    xen: bool = True

    def cmdline(self) -> str:
        """dom0's full kernel command line for this boot (what `/proc/cmdline` shows)."""
        base = BASE_DOM0_ARGS if self.xen else BASE_DOM0_ARGS.replace("console=hvc0", "console=ttyS0")
        return f"{base} {self.dom0_args}".strip()

    def key(self) -> str:
        """A digest of everything that determines the image (not the name, not the boot):
        scenarios that differ only in command line or devices share an image."""
        parts = [
            " ".join(self.dracut_modules),
            repr(sorted(self.modprobe_d.items())),
            repr(self.with_module),
            " ".join(self.add_drivers),
            repr(sorted(self.extra_files.items())),
            self.flavour,
            " ".join(self.peer_modules),
        ]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class BootResult:
    """What a boot showed on the serial console."""

    #: BDF -> driver name after udev settled (`none` when unbound); from `LAB-OWNER` lines.
    owners: dict[str, str]
    #: Wall time of the qemu run, seconds.
    seconds: float
    #: The whole serial log (Xen + dom0 console).
    log: str
    #: BDF -> driver at the start of the cmdline hook (before the project's hook), from
    #: `LAB-EARLYOWNER` lines.
    early_owners: dict[str, str] = field(default_factory=dict)
    #: key -> value from the `LAB-EARLY` line (`proc_xen`, `xen_caps`, `hyp_type`, `udevd`, ...).
    early: dict[str, str] = field(default_factory=dict)
    #: qemu's exit status (None if it had to be killed at the timeout).
    returncode: int | None = None

    @property
    def completed(self) -> bool:
        """The probe ran (the boot reached the initqueue after udev settled)."""
        return "LAB-DONE" in self.log

    @property
    def stopped(self) -> bool:
        """dracut's `die` stopped the boot in the initramfs (dracut-lib.sh: "FATAL: …" then
        "Refusing to continue"; with rd.shell=0 init exits and the kernel panics)."""
        return not self.completed and "Refusing to continue" in self.log

    def lines(self, needle: str) -> list[str]:
        """Serial log lines containing `needle`."""
        return [line for line in self.log.splitlines() if needle in line]


# ---------------------------------------------------------------------------------------------
# tools and inputs


def require_tools() -> None:
    """Raise `Unavailable` unless dracut, qemu and friends are installed."""
    missing = [
        tool
        for tool in ("qemu-system-x86_64", "dracut", "cpio", "depmod")
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()
    ]
    if not (HOST_DRACUT / "modules.d" / "99base").is_dir():
        missing.append("dracut-core (/usr/lib/dracut/modules.d/99base)")
    if missing:
        raise Unavailable("boot lab needs " + ", ".join(missing))


def xen_elf() -> Path:
    """The Debian hypervisor as a multiboot ELF (`boot/xen-*.gz` decompressed, cached)."""
    tree = extract_deb(XEN_PACKAGE)
    gz = sorted((tree / "boot").glob("xen-*-amd64.gz"))
    if not gz:
        raise Unavailable(f"{XEN_PACKAGE} has no boot/xen-*.gz")
    out = cache_dir() / "lab" / (gz[-1].name.removesuffix(".gz") + ".elf")
    if not out.exists() or out.stat().st_mtime < gz[-1].stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        with gzip.open(gz[-1], "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.replace(out)
    return out


def dom0_kernel(flavour: str = "amd64") -> tuple[Path, Path, str]:
    """(kernel tree root, vmlinuz, release) of the extracted Debian kernel package, or of the
    lab's own build (`kernel_build.FLAVOUR`: the backend built in)."""
    if flavour in kernel_build.VARIANTS:
        return kernel_build.built_kernel(flavour)
    root, release = kernel_tree(flavour)
    vmlinuz = root / "boot" / f"vmlinuz-{release}"
    if not vmlinuz.exists():
        raise Unavailable(f"{vmlinuz} missing")
    return root, vmlinuz, release


def build_images(
    scenarios: Sequence[Scenario], out_dir: Path | None = None, workers: int = 3
) -> dict[str, Path]:
    """Build the images of many scenarios in parallel, once per distinct image; name -> image."""
    by_key: dict[str, Scenario] = {}
    for scenario in scenarios:
        by_key.setdefault(scenario.key(), scenario)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        built = dict(zip(by_key, pool.map(lambda s: build_image(s, out_dir), by_key.values()), strict=True))
    return {scenario.name: built[scenario.key()] for scenario in scenarios}


def _module_root(root: Path, release: str) -> Path:
    for base in ("lib/modules", "usr/lib/modules"):
        if (root / base / release).is_dir():
            return root / base / release
    raise Unavailable(f"no module tree for {release} under {root}")


# ---------------------------------------------------------------------------------------------
# image


_LAB_EARLY_HOOK = r"""#!/bin/sh
# boot lab: state at the start of the cmdline hook (runs right before 00-xen-pciback-hide.sh)
_lab_kv=proc_xen=no
[ -d /proc/xen ] && _lab_kv=proc_xen=yes
if [ -r /proc/xen/capabilities ]; then
    _lab_kv="$_lab_kv xen_caps=$(tr -d ' \n' < /proc/xen/capabilities)"
fi
[ -r /sys/hypervisor/type ] && _lab_kv="$_lab_kv hyp_type=$(cat /sys/hypervisor/type)"
if [ -r /sys/hypervisor/properties/features ]; then
    _lab_kv="$_lab_kv hyp_features=$(cat /sys/hypervisor/properties/features)"
fi
[ -r /sys/hypervisor/uuid ] && _lab_kv="$_lab_kv hyp_uuid=$(cat /sys/hypervisor/uuid)"
# is udevd running? (not /run/udev/control: under systemd the socket unit creates it before udevd)
_lab_udevd=no
for _lab_c in /proc/[0-9]*/comm; do
    case "$(cat "$_lab_c" 2>/dev/null)" in systemd-udevd | udevd) _lab_udevd=yes ;; esac
done
_lab_kv="$_lab_kv udevd=$_lab_udevd"
_lab_kv="$_lab_kv sh=$(readlink /bin/sh)"
echo "<28>LAB-EARLY $_lab_kv" > /dev/kmsg
for _lab_d in /sys/bus/pci/devices/*; do
    [ -e "$_lab_d" ] || continue
    _lab_drv=none
    [ -e "$_lab_d/driver" ] && _lab_drv=$(readlink "$_lab_d/driver") && _lab_drv=${_lab_drv##*/}
    echo "<28>LAB-EARLYOWNER ${_lab_d##*/} $_lab_drv" > /dev/kmsg
done
unset _lab_kv _lab_d _lab_drv _lab_udevd _lab_c
"""

_LAB_PROBE_HOOK = r"""#!/bin/sh
# boot lab: owners after udev settled, then power off (qemu runs with -no-reboot)
for _lab_d in /sys/bus/pci/devices/*; do
    [ -e "$_lab_d" ] || continue
    _lab_drv=none
    [ -e "$_lab_d/driver" ] && _lab_drv=$(readlink "$_lab_d/driver") && _lab_drv=${_lab_drv##*/}
    echo "<28>LAB-OWNER ${_lab_d##*/} $_lab_drv" > /dev/kmsg
done
echo "<28>LAB-MODULES $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')" > /dev/kmsg
echo "<28>LAB-DONE" > /dev/kmsg
echo s > /proc/sysrq-trigger
echo o > /proc/sysrq-trigger
sleep 30
"""


def _dracut_base(work: Path, with_module: bool, peers: Sequence[str] = ()) -> Path:
    """A private copy of the host's dracut tree, plus the lab probe and the project's module."""
    base = work / "dracut"
    shutil.copytree(HOST_DRACUT, base, symlinks=True)
    # the host's /usr/lib/dracut/dracut.conf.d is read through dracutbasedir: drop it
    shutil.rmtree(base / "dracut.conf.d", ignore_errors=True)
    lab = base / "modules.d" / f"99{LAB_MODULE}"
    lab.mkdir()
    for name, text in (
        ("module-setup.sh", _LAB_MODULE_SETUP),
        ("lab-early.sh", _LAB_EARLY_HOOK),
        ("lab-probe.sh", _LAB_PROBE_HOOK),
    ):
        (lab / name).write_text(text)
        (lab / name).chmod(0o755)
    if with_module:
        if not (MODULE_DIR / "module-setup.sh").exists():
            raise FileNotFoundError(MODULE_DIR / "module-setup.sh")
        shutil.copytree(MODULE_DIR, base / "modules.d" / MODULE_DIR.name)
    for peer in peers:
        if not (PEERS / peer / "module-setup.sh").exists():
            raise Unavailable(f"peer dracut module {PEERS / peer} missing")
        shutil.copytree(PEERS / peer, base / "modules.d" / peer)
    return base


def _stage(scenario: Scenario, stage: Path) -> None:
    """The tree copied into the image with `--include`: modprobe.d and the extra files."""
    files: dict[str, str] = {f"/etc/modprobe.d/{n}": t for n, t in scenario.modprobe_d.items()}
    files.update(scenario.extra_files)
    stage.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        target = stage / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(0o755 if target.suffix == ".sh" else 0o644)


_LAB_MODULE_SETUP = r"""#!/bin/bash
# boot lab only: probe hooks (never installed on a host)
check() { return 255; }
depends() { return 0; }
install() {
    inst_multiple cat cut tr readlink sleep
    inst_hook cmdline 00 "$moddir/lab-early.sh"
    inst_hook initqueue/settled 99 "$moddir/lab-probe.sh"
}
"""


def build_image(scenario: Scenario, out_dir: Path | None = None) -> Path:
    """Build the scenario's initramfs with the real dracut; returns the image path.

    Nothing on the host is modified: dracut runs with a private `dracutbasedir` (copy of
    /usr/lib/dracut plus the project's module), `--conf /dev/null --confdir <empty dir>` and
    `--no-hostonly`, against the extracted Debian kernel package's module tree.
    """
    require_tools()
    root, _vmlinuz, release = dom0_kernel(scenario.flavour)
    moddir = _module_root(root, release)
    out_dir = out_dir or cache_dir() / "lab" / "images"
    out_dir.mkdir(parents=True, exist_ok=True)
    image = out_dir / f"initramfs-{scenario.key()}.img"
    modules = [*scenario.dracut_modules, LAB_MODULE]
    if scenario.with_module and PROJECT_MODULE not in modules:
        modules.append(PROJECT_MODULE)
    # dracut names a module by its directory without the two-digit priority
    modules += [peer[2:] for peer in scenario.peer_modules]
    with tempfile.TemporaryDirectory(prefix=f"lab-{scenario.name}-") as tmp:
        work = Path(tmp)
        base = _dracut_base(work, scenario.with_module, scenario.peer_modules)
        stage = work / "stage"
        _stage(scenario, stage)
        confdir = work / "conf.d"
        confdir.mkdir()
        dracut_tmp = work / "tmp"
        dracut_tmp.mkdir()
        cmd = [
            "dracut",
            "--force",
            "--no-hostonly",
            "--no-early-microcode",
            "--conf",
            "/dev/null",
            "--confdir",
            str(confdir),
            "--tmpdir",
            str(dracut_tmp),
            "--kver",
            release,
            "--kmoddir",
            str(moddir),
            "-m",
            " ".join(modules),
            "--add-drivers",
            " ".join(scenario.add_drivers),
            "--include",
            str(stage),
            "/",
            str(image),
        ]
        env = {**os.environ, "dracutbasedir": str(base)}
        if scenario.peer_modules:
            # A peer's installkernel() may ask `modinfo -k KVER` (90qubes-pciback does, and fails the
            # build when it finds nothing): answer from the extracted tree, as a real dom0's
            # /lib/modules would, without touching the host. dracut resets PATH from DRACUT_PATH.
            shim = work / "bin"
            shim.mkdir()
            real = shutil.which("modinfo") or "/usr/sbin/modinfo"
            (shim / "modinfo").write_text(
                f'#!/bin/sh\ncase " $* " in *" -k "*) exec {real} -b "{root}" "$@" ;; esac\nexec {real} "$@"\n'
            )
            (shim / "modinfo").chmod(0o755)
            env["DRACUT_PATH"] = f"{shim} /sbin /bin /usr/sbin /usr/bin"
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not image.exists():
            raise RuntimeError(
                f"dracut failed for {scenario.name} ({result.returncode}):\n"
                + (result.stderr or result.stdout)[-4000:]
            )
    return image


# ---------------------------------------------------------------------------------------------
# boot


def qemu_command(scenario: Scenario, image: Path, smp: int = 1) -> list[str]:
    """The qemu command line for `scenario` booting `image` (serial console on stdout).

    One vCPU by default: under TCG two one-vCPU boots side by side take ~1.2x the time of one
    two-vCPU boot, while two two-vCPU boots side by side take ~2x (2-core machine).
    """
    _root, vmlinuz, _release = dom0_kernel(scenario.flavour)
    dom0 = scenario.cmdline()
    if "," in str(vmlinuz) or "," in str(image):
        raise ValueError("qemu's multiboot module list cannot carry a comma in a path")
    # a comma separates multiboot modules: a literal comma in dom0's arguments is written ",,"
    modules = f"{vmlinuz} {dom0.replace(',', ',,')},{image}"
    cmd = [
        "qemu-system-x86_64",
        "-machine",
        "pc,accel=tcg",
        "-m",
        "1024",
        "-smp",
        str(smp),
        "-cpu",
        "qemu64",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-nic",
        "none",
    ]
    if scenario.xen:
        cmd += ["-kernel", str(xen_elf()), "-append", XEN_ARGS, "-initrd", modules]
    else:
        cmd += ["-kernel", str(vmlinuz), "-append", dom0, "-initrd", str(image)]
    for device in scenario.devices:
        cmd += ["-device", device]
    return cmd


def parse_log(log: str) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(owners, early owners, early key/values) from a serial log."""
    owners = {m.group(1): m.group(2) for m in _OWNER.finditer(log)}
    early_owners = {m.group(1): m.group(2) for m in _EARLY_OWNER.finditer(log)}
    early: dict[str, str] = {}
    if m := _EARLY.search(log):
        for item in m.group(1).split():
            key, _, value = item.partition("=")
            early[key] = value
    return owners, early_owners, early


#: Xen's line when dom0 halts instead of powering off (dracut's die under systemd runs
#: `systemctl halt`): Xen then idles and qemu would run until the timeout
XEN_DOM0_HALTED = b"Hardware Dom0 halted"


def _run_until_halted(cmd: list[str], timeout: float) -> tuple[bytes, int | None]:
    """Run qemu, its stderr merged into stdout, until it exits, Xen says dom0 halted, or the
    timeout; returns the output and the exit status (None when it had to be stopped)."""
    out = bytearray()
    with subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as proc:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        fd = proc.stdout.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, min(1.0, deadline - time.monotonic())))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return bytes(out), proc.wait()
            out += chunk
            if XEN_DOM0_HALTED in out[-len(chunk) - len(XEN_DOM0_HALTED) :]:
                break
        proc.kill()
        proc.wait()
        return bytes(out), None


def boot(scenario: Scenario, image: Path, timeout: float = 240.0, smp: int = 1) -> BootResult:
    """Boot Xen + dom0 + `image` under qemu and read the owners from the serial console.

    The serial log is also written to `<cache>/lab/logs/<scenario>.log`.
    """
    require_tools()
    cmd = qemu_command(scenario, image, smp)
    start = time.monotonic()
    raw, returncode = _run_until_halted(cmd, timeout)
    seconds = time.monotonic() - start
    log = raw.decode("utf-8", "replace").replace("\r\n", "\n")
    owners, early_owners, early = parse_log(log)
    result = BootResult(owners, seconds, log, early_owners, early, returncode)
    logs = cache_dir() / "lab" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"{scenario.name}.log").write_text(log)
    return result


def boot_all(
    scenarios: Sequence[Scenario],
    images: Mapping[str, Path],
    jobs: int | None = None,
    timeout: float = 240.0,
) -> dict[str, BootResult]:
    """Boot many scenarios, `jobs` at a time (default: one per CPU, one vCPU each); name -> result."""
    jobs = jobs or int(os.environ.get("PCIBACK_DOCTOR_LAB_JOBS", "0")) or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = pool.map(lambda s: boot(s, images[s.name], timeout), scenarios)
        return {s.name: r for s, r in zip(scenarios, results, strict=True)}


def run(scenario: Scenario, timeout: float = 240.0) -> BootResult:
    """Build and boot."""
    return boot(scenario, build_image(scenario), timeout)


def describe(result: BootResult, bdfs: Sequence[str] = ()) -> str:
    """A short human summary (for assertion messages)."""
    shown = {b: result.owners.get(b, "?") for b in bdfs} if bdfs else result.owners
    tail = "\n".join(result.log.splitlines()[-40:])
    return f"owners={shown} seconds={result.seconds:.1f} rc={result.returncode}\n{tail}"
