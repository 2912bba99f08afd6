"""The hide grammar against what pcistub_init() accepts and rejects."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pciback_doctor.facts.hide import HIDE_MAX, parse_hide


@pytest.mark.parametrize(
    ("value", "entries"),
    [
        ("(0000:05:00.0)", ["0000:05:00.0"]),
        ("(05:00.0)", ["0000:05:00.0"]),  # domain-less form: domain 0
        ("(0000:05:00.0)(0000:06:00.1)", ["0000:05:00.0", "0000:06:00.1"]),
        ("  (0000:05:00.0)   (06:00.1) ", ["0000:05:00.0", "0000:06:00.1"]),  # spaces around entries
        ("( 0000: 05:00.0)", ["0000:05:00.0"]),  # vsscanf skips spaces before a number
        ("(0x1:0x2:0x3.0x4)", ["0001:02:03.4"]),  # simple_strtoull takes 0x
        ("(0000:05:1f.7)", ["0000:05:1f.7"]),  # the largest slot and function
        ("(ffff:ff:00.0)", ["ffff:ff:00.0"]),
        ("(0000:05:00.*)", ["0000:05:00.*"]),
        ("(0000:05:*.*)", ["0000:05:*.*"]),
        ("(05:00.*)", ["0000:05:00.*"]),
        ("(05:*.*)", ["0000:05:*.*"]),
        ("(A:Bc:1F.7)", ["000a:bc:1f.7"]),
        ("", []),
    ],
)
def test_accepted(value: str, entries: list[str]) -> None:
    spec = parse_hide(value)
    assert spec.error is None, spec.error
    assert [str(e) for e in spec.entries] == entries


@pytest.mark.parametrize(
    ("value", "position", "words"),
    [
        ("(0000:05:00.0),(0000:06:00.0)", 14, "'('"),  # a comma is not a separator
        ("0000:05:00.0", 0, "'('"),  # no parentheses at all
        ("(0000:05:00.0", 13, "')'"),
        ("(0000:05:20.0)", 1, "slot"),  # slot must be below 0x20
        ("(0000:05:00.8)", 1, "function"),  # function below 8
        ("(10000:05:00.0)", 1, "domain"),
        ("(0000:100:00.0)", 1, "bus"),
        ("(0000:05:*.0)", 11, "'*.*'"),  # a wildcard slot needs a wildcard function
        ("(0000:zz:00.0)", 6, "bus"),
        ("(0000:05:00.0) junk", 15, "'('"),
        ("   ", 0, "'('"),
    ],
)
def test_rejected_points_at_the_offending_character(value: str, position: int, words: str) -> None:
    spec = parse_hide(value)
    assert spec.error is not None
    assert spec.error.position == position, spec.error
    assert words in spec.error.message
    assert spec.error.caret(value).splitlines()[1].index("^") == position


def test_too_long() -> None:
    value = "(0000:05:00.0)" * 80  # 1120 characters
    assert len(value) > HIDE_MAX
    assert parse_hide(value).error is not None


def test_wildcard_and_match() -> None:
    spec = parse_hide("(0000:05:00.*)")
    assert spec.matches(0, 5, 0, 3)
    assert not spec.matches(0, 5, 1, 0)
    assert spec.entries[0].wildcard


def test_malformed_value_matches_nothing_but_keeps_intent() -> None:
    spec = parse_hide("(0000:05:00.0),(0000:06:00.0)")
    assert not spec.matches(0, 5, 0, 0)  # the kernel hides nothing
    assert [str(e) for e in spec.intended()] == ["0000:05:00.0", "0000:06:00.0"]


@given(st.text(max_size=200))
def test_never_raises(value: str) -> None:
    spec = parse_hide(value)
    if spec.error is not None:
        assert 0 <= spec.error.position <= max(len(value), HIDE_MAX)
