"""What the doctor reads inside an image is what the boot reads there (issue 16, "wrong answers")."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_generators import BACKEND, E1000E, dracut, image, predict

from cpio_writer import file

HOOK = file("usr/lib/dracut/hooks/cmdline/00-xen-pciback-hide.sh")


@pytest.mark.parametrize("line", [b"0000:05:00.0\r\n", b"0000:05:00.0\f\n", b"\v0000:05:00.0\n"])
def test_device_list_entry_the_hook_rejects_is_not_claimed(tmp_path: Path, line: bytes) -> None:
    img = image(tmp_path, *dracut(E1000E, BACKEND, HOOK, file("etc/xen-pciback.conf", line)))
    dev, ids = predict(img)
    assert (dev["prediction"], dev["winner"]) == ("not-claimed", "e1000e")
    assert "PB702" in ids
