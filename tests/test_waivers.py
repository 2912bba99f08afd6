"""The waivers file: parsing with line numbers, which findings a waiver covers, expiry (PB109), bad files."""

from __future__ import annotations

import contextlib
import json
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import FIXTURES
from pciback_doctor.boot.analysis import analyse
from pciback_doctor.checks import run_checks
from pciback_doctor.facts.system import Options, collect
from pciback_doctor.facts.waivers import Waiver, WaiverError, apply_waivers, parse_waivers, read_waivers
from pciback_doctor.fixes import EDITABLE
from pciback_doctor.model import Evidence, Finding, Severity

TODAY = date(2026, 6, 1)

TWO = """\
# accepted on the lab host
[[waiver]]
id = "PB3"
device = "05:00.0"
justification = "xencommons loads xen-pciback before any guest starts"
expires = 2027-01-31

  [[ waiver ]]
id = "pb105"
path = "/etc/modprobe.d/pciback.conf"
justification = '''
  kept for the old kernel,
  removed after the migration'''
"""


def findings() -> list[Finding]:
    """What the checks find on the classic wiki recipe: PB105 twice, PB302, PB304, PB308, ..."""
    analysis = analyse(collect(Options(root=str(FIXTURES / "classic-pciback-hide")), EDITABLE))
    return run_checks(analysis, frozenset({"dom0", "domu"}))


def waiver(id: str, **kw: object) -> Waiver:
    return parse_waivers(
        "[[waiver]]\n"
        + f'id = "{id}"\njustification = "ok"\n'
        + "".join(f"{k} = {v}\n" for k, v in kw.items()),
        "waivers.toml",
    )[0]


def waived(fs: list[Finding]) -> set[tuple[str, str | None]]:
    return {(f.id, f.device) for f in fs if f.waiver is not None}


def test_parse_normalises_and_remembers_lines() -> None:
    first, second = parse_waivers(TWO, "etc/pciback-doctor/waivers.toml")
    assert first == Waiver(
        id="PB3",
        justification="xencommons loads xen-pciback before any guest starts",
        evidence=Evidence("etc/pciback-doctor/waivers.toml", 2, "[[waiver]]"),
        device="0000:05:00.0",
        expires=date(2027, 1, 31),
    )
    assert second.id == "PB105"
    assert second.path == "etc/modprobe.d/pciback.conf"  # evidence paths are relative to the root
    assert second.justification == "kept for the old kernel, removed after the migration"
    assert second.evidence.line == 8
    assert second.expires is None


def test_empty_file_waives_nothing() -> None:
    assert parse_waivers("# nothing accepted yet\n", "w.toml") == ()


def test_prefix_covers_the_range() -> None:
    marked, expired = apply_waivers(findings(), [waiver("PB3")], TODAY)
    assert expired == []
    ids = {f.id for f in marked if f.waiver == "ok"}
    assert {"PB302", "PB304", "PB308"} <= ids
    assert all(i.startswith("PB3") for i in ids)
    assert all(f.waiver is None for f in marked if f.id == "PB105")


def test_exact_id_does_not_cover_a_longer_one() -> None:
    marked, _ = apply_waivers(findings(), [waiver("PB304")], TODAY)
    assert waived(marked) == {("PB304", "0000:05:00.0")}


def test_device_must_match() -> None:
    fs = findings()
    marked, _ = apply_waivers(fs, [waiver("PB1", device='"0000:05:00.0"')], TODAY)
    assert waived(marked) == set()  # PB105 is about no device
    marked, _ = apply_waivers(fs, [waiver("PB30", device='"0000:05:00.0"')], TODAY)
    assert waived(marked) == {(id, "0000:05:00.0") for id in ("PB302", "PB304", "PB306", "PB308")}
    marked, _ = apply_waivers(fs, [waiver("PB30", device='"0000:06:00.0"')], TODAY)
    assert waived(marked) == set()


def test_path_must_match_some_evidence() -> None:
    marked, _ = apply_waivers(findings(), [waiver("PB1", path='"etc/modprobe.d/pciback.conf"')], TODAY)
    (covered,) = [f for f in marked if f.waiver is not None]
    assert covered.id == "PB105" and covered.evidence[0].path == "etc/modprobe.d/pciback.conf"
    assert [f.evidence[0].path for f in marked if f.id == "PB105" and f.waiver is None] == ["proc/cmdline"]


def test_path_of_an_image_covers_the_files_inside() -> None:
    inside = Finding(
        "PB402", Severity.ERROR, "Stale", "differs", evidence=(Evidence("boot/initrd.img!etc/x.conf", 1),)
    )
    marked, _ = apply_waivers([inside], [waiver("PB402", path='"boot/initrd.img"')], TODAY)
    assert marked[0].waiver == "ok"


def test_expired_waiver_is_pb109_and_covers_nothing() -> None:
    (w,) = parse_waivers(
        "\n\n[[waiver]]\nid = 'PB304'\njustification = 'x'\nexpires = 2026-05-31\n", "w.toml"
    )
    marked, expired = apply_waivers(findings(), [w], TODAY)
    assert waived(marked) == set()
    (pb109,) = expired
    assert pb109.id == "PB109" and pb109.severity is Severity.WARNING and pb109.title == "Expired waiver"
    assert pb109.evidence == (Evidence("w.toml", 3, "[[waiver]]"),)
    assert "PB304" in pb109.message and "2026-05-31" in pb109.message


def test_waiver_holds_through_its_expiry_day() -> None:
    marked, expired = apply_waivers(findings(), [waiver("PB304", expires="2026-06-01")], TODAY)
    assert expired == [] and waived(marked) == {("PB304", "0000:05:00.0")}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[[waiver]]\nid = 'PB304'\n", "w.toml:1: waiver for PB304 has no justification"),
        ("[[waiver]]\nid = 'PB304'\njustification = '  '\n", "has no justification"),
        ("[[waiver]]\njustification = 'x'\n", "needs an 'id'"),
        ("[[waiver]]\nid = 'XX1'\njustification = 'x'\n", "needs an 'id'"),
        ("[[waiver]]\nid = 'PB'\njustification = 'x'\n", "needs an 'id'"),  # would waive everything
        ("[[waiver]]\nid = 'PB304'\njustfication = 'x'\n", "unknown key 'justfication'"),
        (
            "[[waiver]]\nid = 'PB304'\njustification = 'x'\ndevice = 'eth0'\n",
            "'device' must be a PCI address",
        ),
        ("[[waiver]]\nid = 'PB304'\njustification = 'x'\nexpires = 'soon'\n", "'expires' must be a date"),
        ("[waiver]\nid = 'PB304'\n", "[[waiver]]"),
        ("ignore = ['PB304']\n", "unknown key 'ignore'"),
        ("[[waiver]\nid = 'PB304'\n", "w.toml: not valid TOML"),
        ("\x00\x01 garbage = = =", "w.toml: not valid TOML"),
    ],
)
def test_bad_waivers_file_is_one_line_error(text: str, says: str) -> None:
    with pytest.raises(WaiverError) as caught:
        parse_waivers(text, "w.toml")
    message = str(caught.value)
    assert says in message and "\n" not in message
    error = caught.value  # raised `from None`: no chained TOML traceback behind the one line
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_read_waivers_missing_or_binary_file(tmp_path: Path) -> None:
    with pytest.raises(WaiverError, match="No such file"):
        read_waivers(str(tmp_path / "nope.toml"))
    binary = tmp_path / "w.toml"
    binary.write_bytes(b"\xff\xfe[[waiver]]")
    with pytest.raises(WaiverError, match="not UTF-8"):
        read_waivers(str(binary))
    binary.write_text(TWO)
    assert len(read_waivers(str(binary))) == 2


@given(st.text())
def test_parse_never_raises_anything_but_waiver_error(text: str) -> None:
    with contextlib.suppress(WaiverError):
        parse_waivers(text, "w.toml")


@given(
    st.dictionaries(
        st.sampled_from(["id", "device", "path", "justification", "expires"]),
        st.one_of(st.integers(), st.text(max_size=12), st.booleans(), st.dates()),
    )
)
def test_parse_any_entry_shape(entry: dict[str, object]) -> None:
    # JSON scalars are TOML scalars; a date is a bare TOML date
    text = "[[waiver]]\n" + "".join(
        f"{k} = {v.isoformat() if isinstance(v, date) else json.dumps(v)}\n" for k, v in entry.items()
    )
    with contextlib.suppress(WaiverError):
        parse_waivers(text, "w.toml")
