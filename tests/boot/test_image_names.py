"""What the doctor reads inside an image is what the boot reads there (issue 16, "wrong answers")."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_generators import BACKEND, E1000E, HIDE, dracut, image, predict

from cpio_writer import file
from helpers import FIXTURES, devices, doctor

HOOK = file("usr/lib/dracut/hooks/cmdline/00-xen-pciback-hide.sh")


@pytest.mark.parametrize("line", [b"0000:05:00.0\r\n", b"0000:05:00.0\f\n", b"\v0000:05:00.0\n"])
def test_device_list_entry_the_hook_rejects_is_not_claimed(tmp_path: Path, line: bytes) -> None:
    img = image(tmp_path, *dracut(E1000E, BACKEND, HOOK, file("etc/xen-pciback.conf", line)))
    dev, ids = predict(img)
    assert (dev["prediction"], dev["winner"]) == ("not-claimed", "e1000e")
    assert "PB702" in ids


MODULE = "lib/modules/6.1.0-56-amd64/kernel/drivers/xen/xen-pciback/xen-pciback.ko"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file: not a kernel module"),
        (b"\x00" * 4096, "unreadable module: not a kernel module ELF"),
        (
            b"\x7fELF\x02\x01\x01" + b"\x00" * 57,
            "unreadable module: not a kernel module ELF: bad section table",
        ),
        (b"\x1f\x8b\x08\x00garbage", "unreadable module: corrupt compressed module"),
        (b"\xfd7zXZ\x00garbage", "unreadable module: corrupt compressed module"),
    ],
)
def test_unusable_backend_module_is_a_finding_and_unknown(tmp_path: Path, data: bytes, reason: str) -> None:
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "module-modprobe-options", root, symlinks=True)
    (root / MODULE).parent.mkdir(parents=True)
    (root / MODULE).write_bytes(data)
    # modprobe loads the backend in the image before udev (rd.driver.pre): claimed with a sound module
    img = image(
        tmp_path,
        *dracut(
            E1000E,
            BACKEND,
            file("usr/lib/dracut/hooks/cmdline/01-parse-kernel.sh"),
            file("etc/modprobe.d/x.conf", HIDE.encode()),
        ),
    )
    args = (
        "--root",
        str(root),
        "--initramfs",
        str(img),
        "--cmdline",
        "ro rd.driver.pre=xen-pciback",
        "--format",
        "json",
    )
    run = doctor(*args)
    report = run.json()
    assert report["backend"]["mode"] == "unknown"
    pb110 = [f for f in report["findings"] if f["id"] == "PB110"]
    assert len(pb110) == 1 and reason in pb110[0]["message"] and MODULE in pb110[0]["message"]
    dev = devices(run)["0000:05:00.0"]
    assert dev["prediction"] == "unknown", dev
    # the same image with the module file absent (the fixture lists it, as trimmed roots do): claimed
    (root / MODULE).unlink()
    run = doctor(*args)
    assert devices(run)["0000:05:00.0"]["prediction"] == "claimed"


@pytest.mark.parametrize(
    ("name", "data", "verdict"),
    [
        ("etc/cmdline.d/20-force_drivers.conf", b"rd.driver.pre=xen-pciback\n", "claimed"),
        ("etc/cmdline.d/20-force_drivers.conf", b"rd.driver.pre=xen-pciback", "claimed"),  # no final LF
        ("etc/cmdline", b"\trd.driver.pre=xen-pciback \n", "claimed"),  # dracut reads etc/cmdline too
        # dracut-getargs (dracut-util.c) splits like the kernel: a CR or form feed ends the word,
        # quotes group
        ("etc/cmdline.d/20-force_drivers.conf", b"rd.driver.pre=xen-pciback\r\n", "claimed"),
        ("etc/cmdline.d/20-force_drivers.conf", b"rd.driver.pre=xen-pciback\fquiet\n", "claimed"),
        ("etc/cmdline.d/20-force_drivers.conf", b'rd.driver.pre="xen-pciback"\n', "claimed"),
        ("etc/cmdline.d/20-force_drivers.conf", b"rd.driver.pre=xen-pciback.ko\n", "not-claimed"),
        ("etc/cmdline.d/20-force_drivers.txt", b"rd.driver.pre=xen-pciback\n", "not-claimed"),  # not *.conf
    ],
)
def test_dracut_reads_its_command_line_files(tmp_path: Path, name: str, data: bytes, verdict: str) -> None:
    parse_kernel = file("usr/lib/dracut/hooks/cmdline/01-parse-kernel.sh")
    img = image(
        tmp_path,
        *dracut(
            E1000E, BACKEND, parse_kernel, file(name, data), file("etc/modprobe.d/x.conf", HIDE.encode())
        ),
    )
    dev, _ = predict(img)
    assert dev["prediction"] == verdict, dev
