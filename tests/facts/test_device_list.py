"""The dracut module's device list (/etc/xen-pciback.conf): the model reads it as the hook does.

The reference is the hook itself: its `_xpb_collect` and `_xpb_norm` run under dash (and bash, the
other /bin/sh of dracut images) on the same bytes, and must accept the same devices and count the
same failures as `parse_device_list` + `parse_bdf`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pciback_doctor.facts.image import parse_device_list
from pciback_doctor.facts.pci import parse_bdf

HOOK = Path(__file__).resolve().parents[2] / "dracut-module/90xen-pciback/xen-pciback-hide.sh"
SHELLS = [s for s in ("dash", "bash") if shutil.which(s)]


def model(data: bytes) -> tuple[int, list[str]]:
    """(failures, devices) as the doctor predicts the hook will log and claim them."""
    failures, devices = 0, []
    for text, _ in parse_device_list(data.decode("utf-8", "replace"), "etc/xen-pciback.conf"):
        bdf = parse_bdf(text)
        if bdf is None:
            failures += 1
        elif str(bdf) not in devices:
            devices.append(str(bdf))
    return failures, devices


def hook(shell: str, data: bytes, tmp: Path) -> tuple[int, list[str]]:
    """(failures, devices) from the hook's own functions, reading `data` as its device list."""
    conf = tmp / "xen-pciback.conf"
    conf.write_bytes(data)
    # the hook's definitions only (everything before it calls _xpb_main), reading our copy
    body = HOOK.read_text().split("\n_xpb_main\n", 1)[0].replace("/etc/xen-pciback.conf", str(conf))
    script = (
        "getarg() { return 1; }\ngetargs() { :; }\ninfo() { :; }\nwarn() { :; }\n"
        + body
        + '\n_xpb_failures=0; _xpb_devs=; _xpb_collect; echo "$_xpb_failures"; echo $_xpb_devs\n'
    )
    out = subprocess.run([shell, "-c", script], capture_output=True, check=True, timeout=30).stdout
    count, devs = out.decode().split("\n")[:2]
    return int(count), devs.split()


@pytest.mark.parametrize(
    ("data", "failures", "devices"),
    [
        (b"# NIC\n0000:05:00.0\n", 0, ["0000:05:00.0"]),
        (b"  05:00.0\t# NIC\n\n00:1f.3", 0, ["0000:05:00.0", "0000:00:1f.3"]),  # no final newline
        (b"0000:05:00.0\r\n", 1, []),  # CRLF: the hook sees "0000:05:00.0\r" and rejects it
        (b"0000:05:00.0\f\n", 1, []),  # form feed
        (b"\v05:00.0\n", 1, []),
        (b"05:00.0\xc2\x8500:1f.3\n", 1, []),  # U+0085 is not a line break for `read`
        (b"05:00.0\xe2\x80\xa800:1f.3\n", 1, []),  # nor is U+2028
        (b"05:00\x00.0\n", 0, ["0000:05:00.0"]),  # `read` drops NUL bytes
        (b"05:00.0 06:00.0\n", 1, []),  # one device per line
        (b"05:00.0\n5:0.0\n", 0, ["0000:05:00.0"]),  # duplicates dropped
        (b"05:20.0\n05:00.8\n00005:00:00.0\n", 3, []),
    ],
)
def test_device_list_as_the_hook_reads_it(data: bytes, failures: int, devices: list[str]) -> None:
    assert model(data) == (failures, devices)


@pytest.mark.parametrize("shell", SHELLS)
def test_hook_agrees_on_the_table(shell: str, tmp_path: Path) -> None:
    data = b"0000:05:00.0\r\n05:00.1\f\n 00:1f.3 # x\n\x00\n05:00\x00.2\n05:00.3\xc2\x85\nab:1F.7\n"
    assert hook(shell, data, tmp_path) == model(data) == (3, ["0000:00:1f.3", "0000:05:00.2", "0000:ab:1f.7"])


TOKENS = st.sampled_from(
    [
        *(b"0000:", b"05:", b"1f", b"00", b".", b"0", b"7", b"8", b":", b"#", b" ", b"\t", b"\r", b"\n"),
        *(b"\f", b"\v", b"\x00", b"\xc2\x85", b"\xe2\x80\xa8", b"\xff", b"g", b"A", b"*", b"12345"),
        b"0000:05:00.0",
    ]
)


@pytest.mark.parametrize("shell", SHELLS)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.lists(TOKENS, max_size=24).map(b"".join))
@example(data=b"0000:05:00.0\r\n")
@example(data=b"\f05:00.0")
def test_model_agrees_with_the_hook(
    shell: str, data: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert model(data) == hook(shell, data, tmp_path_factory.mktemp("conf"))
