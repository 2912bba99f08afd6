"""Command-line tokenising as the kernel's next_arg() does it."""

from hypothesis import given
from hypothesis import strategies as st

from pciback_doctor.facts.cmdline import parse_cmdline


def test_quotes_group_spaces_and_are_stripped() -> None:
    c = parse_cmdline('root=/dev/sda1 foo="a b c" "bar=x y" quiet', "t")
    assert [(p.key, p.value) for p in c.params] == [
        ("root", "/dev/sda1"),
        ("foo", "a b c"),
        ("bar", "x y"),
        ("quiet", None),
    ]


def test_double_dash_ends_kernel_parameters() -> None:
    c = parse_cmdline("ro xen-pciback.hide=(05:00.0) -- xen-pciback.hide=(06:00.0)", "t")
    assert [p.value for p in c.module_params("xen_pciback", "hide")] == ["(05:00.0)"]


def test_dash_and_underscore_are_equal_in_module_parameters() -> None:
    c = parse_cmdline("xen-pciback.hide=(1) xen_pciback.hide=(2) xen_pciback.pass-through=1", "t")
    assert [p.value for p in c.module_params("xen-pciback", "hide")] == ["(1)", "(2)"]
    assert [p.value for p in c.module_params("xen_pciback", "pass_through")] == ["1"]


def test_value_may_contain_equals() -> None:
    c = parse_cmdline("root=UUID=1234-abcd", "t")
    assert c.params[0].key == "root" and c.params[0].value == "UUID=1234-abcd"


@given(st.text(max_size=300))
def test_never_raises(text: str) -> None:
    parse_cmdline(text, "t")
