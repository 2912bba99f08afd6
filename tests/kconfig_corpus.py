"""A corpus of real kernel configs for the CI gate, built at test time and cached.

- Debian's `linux-image-ABI-FLAVOUR-unsigned` configs (amd64, cloud-amd64, rt-amd64, arm64), only
  `boot/config-*` taken from each package.
- Configs Kconfig itself generates from Debian's `linux-source-6.1` (only the Kconfig files,
  Makefiles and scripts are unpacked; only `make ARCH=… *config` runs, nothing is compiled):
  tinyconfig, allnoconfig, defconfig, defconfig + xen.config, allmodconfig, and the savedefconfig
  (minimal form) of the Xen one, for x86_64, i386 and arm64.

Everything lands under `debian.cache_dir()/kconfig-corpus`, so a second run costs nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import debian

ARCHES = ("x86_64", "i386", "arm64")
# name -> make targets run in order in one O= directory (xen.config merges onto what is there)
GENERATED = (
    ("tinyconfig", ("tinyconfig",)),
    ("allnoconfig", ("allnoconfig",)),
    ("allmodconfig", ("allmodconfig",)),
    ("defconfig", ("defconfig",)),
    ("defconfig+xen", ("xen.config",)),
)
SAVED = "savedefconfig(xen)"
SAVED_FROM = {"x86_64": "defconfig+xen", "i386": "xen, PAE", "arm64": "defconfig+xen"}  # a Xen config
# Kconfig's expansion after `scripts/config` edits of defconfig+xen (then the make targets), for the
# cases no stock target makes: a PV kernel without pcifront, an HVM/PVH-only kernel, a built-in
# backend, and a 32-bit kernel with Xen (XEN needs PAE and a generic CPU there; it cannot be dom0)
VARIANTS = (
    ("x86_64", "xen, no pcifront", ("--disable", "XEN_PCIDEV_FRONTEND"), ()),
    ("x86_64", "xen, no XEN_PV", ("--enable", "XEN_PCIDEV_FRONTEND", "--disable", "XEN_PV"), ()),
    ("x86_64", "xen, backend =y", ("--enable", "XEN_PV", "--enable", "XEN_PCIDEV_BACKEND"), ()),
    (
        "i386",
        "xen, PAE",
        (
            "--enable",
            "X86_GENERIC",
            "--disable",
            "HIGHMEM4G",
            "--enable",
            "HIGHMEM64G",
            "--enable",
            "PARAVIRT",
            "--enable",
            "XEN",
        ),
        ("xen.config",),
    ),
)
_KCONFIG_FILES = ("Makefile", "scripts/*", "*Kconfig*", "*Makefile*", "*Kbuild*", "arch/*/configs/*")
_KCONFIG_FILES += ("kernel/configs/*", "arch/*/tools/*", "include/*")


@dataclass(frozen=True)
class Entry:
    name: str  # e.g. "x86_64 defconfig+xen", "debian arm64"
    arch: str  # x86_64 | i386 | arm64
    config: Path  # what the gate is given
    expanded: Path  # Kconfig's full expansion: the truth comes from here
    minimal: bool = False


def _run(cmd: list[str], **kw: object) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise debian.Unavailable(f"{' '.join(cmd)} failed: {(result.stderr or result.stdout).strip()[-300:]}")


def kernel_source() -> Path:
    """The Kconfig part of Debian's linux-source-6.1, unpacked once."""
    for tool in ("make", "gcc", "flex", "bison"):
        if shutil.which(tool) is None:
            raise debian.Unavailable(f"{tool} not found: Kconfig needs gcc, make, flex and bison")
    deb = debian.fetch_deb("linux-source-6.1")
    tree = debian.cache_dir() / "trees" / f"{deb.stem}-kconfig"
    with debian._locked(tree.name):
        stamp = tree / ".extracted"
        if not stamp.exists():
            shutil.rmtree(tree, ignore_errors=True)
            tree.mkdir(parents=True)
            # the tarball inside the package: ./usr/src/linux-source-6.1.tar.xz
            script = (
                f"dpkg-deb --fsys-tarfile '{deb}' | tar -xO ./usr/src/linux-source-6.1.tar.xz | xz -dc -T2 | "
                "tar -x --strip-components=1 --wildcards "
                + " ".join(
                    f"'linux-source-6.1/{p}'" if "/" in p or p == "Makefile" else f"'{p}'"
                    for p in _KCONFIG_FILES
                )
            )
            _run(["sh", "-c", script], cwd=tree)
            stamp.touch()
    return tree


def generated(arch: str) -> list[Entry]:
    """The generated configs of one architecture; `make` runs once per target, in one O= tree."""
    source = kernel_source()
    out = debian.cache_dir() / "kconfig-corpus" / f"{source.name}-3" / arch
    with debian._locked(f"kconfig-{arch}"):
        if not (out / ".done").exists():
            build = out / "build"
            shutil.rmtree(out, ignore_errors=True)
            build.mkdir(parents=True)
            make = ["make", "-s", "-C", str(source), f"O={build}", f"ARCH={arch}"]
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
            stages = [(name, (), targets) for name, targets in GENERATED]
            stages += [
                (name, edits, ("olddefconfig", *targets)) for a, name, edits, targets in VARIANTS if a == arch
            ]
            for name, edits, targets in stages:
                if edits:
                    _run([str(source / "scripts/config"), "--file", str(build / ".config"), *edits])
                for target in targets:
                    _run([*make, target], env=env)
                shutil.copy(build / ".config", out / f"{name}.config")
                if name == SAVED_FROM[arch]:
                    _run([*make, "savedefconfig"], env=env)
                    shutil.copy(build / "defconfig", out / f"{SAVED}.config")
            shutil.rmtree(build)
            (out / ".done").touch()
    entries = [
        Entry(f"{arch} {name}", arch, out / f"{name}.config", out / f"{name}.config") for name, _ in GENERATED
    ]
    entries.append(
        Entry(f"{arch} {SAVED}", arch, out / f"{SAVED}.config", out / f"{SAVED_FROM[arch]}.config", True)
    )
    for _, name, _, _ in (v for v in VARIANTS if v[0] == arch):
        entries.append(Entry(f"{arch} {name}", arch, out / f"{name}.config", out / f"{name}.config"))
    return entries


def debian_config(flavour: str, arch: str | None = None) -> Path:
    """`boot/config-ABI-FLAVOUR` from Debian's unsigned image package (arm64: the foreign package)."""
    release = f"{debian.kernel_abi()}-{flavour}"
    deb = debian.fetch_deb(f"linux-image-{release}-unsigned", arch)
    out = debian.cache_dir() / "kconfig-corpus" / "debian" / deb.stem
    config = out / f"config-{release}"
    with debian._locked(f"kconfig-{deb.stem}"):
        if not config.exists():
            out.mkdir(parents=True, exist_ok=True)
            _run(
                [
                    "sh",
                    "-c",
                    f"dpkg-deb --fsys-tarfile '{deb}' | tar -xO './boot/config-{release}' > '{config}.tmp'",
                ]
            )
            Path(f"{config}.tmp").rename(config)
    return config


def debian_entries() -> list[Entry]:
    entries = []
    for flavour, arch in (("amd64", None), ("cloud-amd64", None), ("rt-amd64", None), ("arm64", "arm64")):
        config = debian_config(flavour, arch)
        entries.append(Entry(f"debian {flavour}", arch or "x86_64", config, config))
    return entries


_LINE = re.compile(r"^CONFIG_(\w+)=(.*)$|^# CONFIG_(\w+) is not set$")


def kconfig_values(path: Path) -> dict[str, str]:
    """The symbol values Kconfig wrote, read without the doctor's reader."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if m := _LINE.match(line):
            values[m.group(1) or m.group(3)] = m.group(2) or "n"
    return values


def truth(values: dict[str, str], arch: str) -> dict[str, bool]:
    """What Kconfig's expansion says each role needs. dom0: the PCI backend (x86:
    XEN_PCIDEV_BACKEND, Arm: XEN_PCIDEV_STUB, drivers/xen/Kconfig) and dom0 support (XEN_DOM0,
    XEN_BACKEND). domU: only a PV-capable kernel (XEN_PV=y) needs the frontend."""
    backend = "XEN_PCIDEV_STUB" if arch.startswith("arm") else "XEN_PCIDEV_BACKEND"
    dom0 = (
        values.get(backend, "n") in ("y", "m")
        and values.get("XEN_DOM0") == "y"
        and values.get("XEN_BACKEND") == "y"
    )
    domu = values.get("XEN_PV") != "y" or values.get("XEN_PCIDEV_FRONTEND", "n") in ("y", "m")
    return {"dom0": dom0, "domu": domu, "both": dom0 and domu}
