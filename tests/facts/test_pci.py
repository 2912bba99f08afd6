"""PCI addresses (`parse_bdf`) and `--device BDF[=VVVV:DDDD[:CCCCCC]]`."""

from __future__ import annotations

import pytest

from helpers import FIXTURES, doctor
from pciback_doctor.facts.pci import Bdf, device_from_spec, parse_bdf


@pytest.mark.parametrize(
    ("text", "bdf"),
    [
        ("0000:05:00.0", Bdf(0, 5, 0, 0)),
        ("5:0.7", Bdf(0, 5, 0, 7)),
        ("ffff:FF:1f.7", Bdf(0xFFFF, 0xFF, 0x1F, 7)),
        ("05:20.0", None),  # slot above 0x1f
        ("05:00.8", None),
        ("00000:05:00.0", None),
        ("0000:05:00.0\r", None),  # the dracut module rejects a stray CR: so does the model
        ("0000:05:00.0\n", None),
        ("\f05:00.0", None),
        (" 05:00.0", None),
    ],
)
def test_parse_bdf(text: str, bdf: Bdf | None) -> None:
    assert parse_bdf(text) == bdf


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("0000:05:00.0", (Bdf(0, 5, 0, 0), None, None, None)),
        ("05:00.0=8086:10d3", (Bdf(0, 5, 0, 0), 0x8086, 0x10D3, None)),
        ("05:00.0=8086:10D3:020000", (Bdf(0, 5, 0, 0), 0x8086, 0x10D3, 0x020000)),
    ],
)
def test_device_spec(spec: str, parsed: tuple[object, ...]) -> None:
    assert device_from_spec(spec) == parsed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0000:05:00.0=18086:10d3", "vendor id '18086' is wider than 4 hex digits"),
        ("0000:05:00.0=8086:010d3", "device id '010d3' is wider than 4 hex digits"),
        ("0000:05:00.0=8086:10d3:0200000", "class code '0200000' is wider than 6 hex digits"),
        ("0000:05:00.0=8086:1x", "device id '1x' is not hexadecimal"),
        ("0000:05:00.0=8086", "'8086' is not VVVV:DDDD or VVVV:DDDD:CCCCCC"),
        ("0000:05:00.0=8086:10d3:0:0", "is not VVVV:DDDD"),
        ("05:20.0", "'05:20.0' is not a PCI address"),
    ],
)
def test_bad_device_spec_names_the_field(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        device_from_spec(spec)


def test_over_wide_id_is_a_usage_error() -> None:
    run = doctor("--root", str(FIXTURES / "example"), "--device", "0000:05:00.0=18086:10d3")
    assert run.code == 2 and run.out == ""
    assert run.err.strip() == (
        "pciback-doctor: --device 0000:05:00.0=18086:10d3: vendor id '18086' is wider than 4 hex digits;"
        " expected BDF[=VVVV:DDDD[:CCCCCC]], e.g. 0000:05:00.0=8086:10d3"
    )
