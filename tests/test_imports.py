"""What each command imports: start-up is paid on every run (issue 17), and the readers must not
import the layer that writes (issue 12: no facts -> fixes -> boot -> facts circle). Each case runs
in a fresh interpreter, as a user's command does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import copy_fixture

# what reads bootloaders, initramfs images and kernel images, and the collector that calls them
IMAGE_READERS = (
    "pciback_doctor.facts.system",
    "pciback_doctor.facts.bootloader",
    "pciback_doctor.facts.image",
    "pciback_doctor.facts.initramfs",
    "pciback_doctor.facts.kimage",
    "pciback_doctor.facts.builtin_pci",
)
CONFIG = (
    "#\n# Linux/x86 6.1.0 Kernel Configuration\n#\nCONFIG_X86_64=y\nCONFIG_PCI=y\nCONFIG_XEN=y\n"
    "CONFIG_XEN_PV=y\nCONFIG_XEN_DOM0=y\nCONFIG_XEN_BACKEND=y\nCONFIG_XEN_PCIDEV_BACKEND=m\n"
)


def loaded_after(code: str) -> set[str]:
    """The pciback_doctor modules a fresh interpreter has loaded after running `code`."""
    probe = (
        "import contextlib, io, json, sys\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
        + "print(json.dumps(sorted(m for m in sys.modules if m.startswith('pciback_doctor'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout))


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["explain", "PB101"], ["kernel", "--config", "{config}"]],
)
def test_light_commands_import_no_image_reader(tmp_path: Path, argv: list[str]) -> None:
    config = tmp_path / "config"
    config.write_text(CONFIG)
    args = [a.format(config=config) for a in argv]
    loaded = loaded_after(
        f"from pciback_doctor.cli import main\ntry:\n    main({args!r})\nexcept SystemExit:\n    pass"
    )
    assert "pciback_doctor.cli" in loaded
    assert not loaded & set(IMAGE_READERS), f"{' '.join(argv)} imports {sorted(loaded & set(IMAGE_READERS))}"


def test_the_collector_does_not_import_the_fixes(tmp_path: Path) -> None:
    root = copy_fixture("classic-pciback-hide", tmp_path)
    (root / "etc/xen-pciback.conf").write_text("0000:03:00.0\n")
    loaded = loaded_after(
        "from pciback_doctor.facts.system import Options, collect\n"
        f"system = collect(Options(root={str(root)!r}), ('etc/xen-pciback.conf', 'etc/default/grub'))\n"
        "assert set(system.files) == {'etc/xen-pciback.conf', 'etc/modprobe.d/pciback.conf'}, system.files"
    )
    assert "pciback_doctor.facts.system" in loaded
    assert not [m for m in loaded if m.startswith(("pciback_doctor.fixes", "pciback_doctor.boot"))]
