"""xl domain configs: libxlu's file grammar, xl_parse.c's guest type, libxlu_pci.c's pci= specs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pciback_doctor.facts.xl import XlAtom, XlList, parse_xl

PATH = "etc/xen/vm.cfg"


@pytest.mark.parametrize(
    ("text", "guest"),
    [
        ("name = 'vm'\n", "pv"),  # xl's default on x86
        ('type = "pv"\n', "pv"),
        ('type = "pvh"\n', "pvh"),
        ('type = "hvm"\n', "hvm"),
        ('builder = "hvm"\n', "hvm"),
        ('builder = "generic"\n', "pv"),
        ('type = "hvm"\nbuilder = "hvm"\n', "hvm"),
        ('type = "h"\n', "hvm"),  # xl_parse.c: strncmp with strlen(buf), a prefix matches
    ],
)
def test_guest_type(text: str, guest: str) -> None:
    cfg = parse_xl(text, PATH)
    assert cfg.guest_type == guest
    assert cfg.errors == ()


def test_guest_type_evidence_points_at_the_setting() -> None:
    cfg = parse_xl('name = "vm"\n\ntype = "pvh"\n', PATH)
    assert (cfg.guest_type_evidence.path, cfg.guest_type_evidence.line) == (PATH, 3)
    assert parse_xl("", PATH).guest_type_evidence.line is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('type = "kvm"\n', "invalid domain type"),
        ('builder = "linux"\n', "invalid builder"),
        ('type = "pv"\nbuilder = "hvm"\n', "contradicting"),
    ],
)
def test_guest_type_errors(text: str, message: str) -> None:
    assert message in parse_xl(text, PATH).errors[0].message


def test_kernel_and_settings_with_lines() -> None:
    cfg = parse_xl('# a PV guest\nname = "vm"; memory = 0x400\nkernel = "/boot/vmlinuz-6.1"\n', PATH)
    assert cfg.kernel == "/boot/vmlinuz-6.1"
    assert cfg.kernel_evidence is not None and cfg.kernel_evidence.line == 3
    assert cfg.get_string("memory") == "0x400"
    assert cfg.settings["memory"].evidence.line == 2
    assert cfg.settings["name"].evidence.text == 'name = "vm"; memory = 0x400'


def test_strings_dequote_like_libxlu() -> None:
    cfg = parse_xl(
        r"""a = "x\"y\\z\n\x41\101"
b = 'it\'s'
""",
        PATH,
    )
    assert cfg.get_string("a") == 'x"y\\z\nAA'
    assert cfg.get_string("b") == "it's"


def test_list_spanning_lines_with_comments_and_trailing_comma() -> None:
    cfg = parse_xl(
        "pci = [\n  '01:00.0', # the NIC\n\n  '02:00.0',\n]\nname = 'x'\n",
        PATH,
    )
    assert [p.bdf for p in cfg.pci] == ["0000:01:00.0", "0000:02:00.0"]
    assert [p.evidence.line for p in cfg.pci] == [2, 4]
    assert cfg.errors == ()
    assert cfg.get_string("name") == "x"


def test_append_and_last_assignment_wins() -> None:
    cfg = parse_xl("pci = ['01:00.0']\npci += ['02:00.0']\nname = 'a'\nname += 'b'\n", PATH)
    assert [p.bdf for p in cfg.pci] == ["0000:01:00.0", "0000:02:00.0"]
    assert cfg.get_string("name") == "ab"
    cfg = parse_xl("pci = ['01:00.0']\npci = ['03:00.0']\n", PATH)
    assert [p.bdf for p in cfg.pci] == ["0000:03:00.0"]


def test_nested_list_value() -> None:
    cfg = parse_xl("x = [ [ '1', 2 ], 'a' ]\n", PATH)
    value = cfg.settings["x"].value
    assert isinstance(value, XlList)
    assert isinstance(value.items[0], XlList)
    assert value.items[1] == XlAtom("a", 1)


def test_last_line_without_newline() -> None:
    assert parse_xl("name = 'vm'", PATH).get_string("name") == "vm"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("name = 'vm'\nkernel = os.path.join('/boot', 'k')\n", 2, "looks like Python"),
        ("memory = 512 + 2\n", 1, "looks like Python"),
        ("memory = 512 * 2\n", 1, "lexical error at '*'"),
        ("name 'vm'\n", 1, "expected '='"),
        ("Name = 'vm'\n", 1, "lexical error"),
        ("name = 'vm'\r\nmemory = 1\r\n", 1, "DOS line ending"),
        ("pci = [ '01:00.0'\n", 2, "end of file"),
        ("a = 'x'\na += ['y']\n", 2, "can't add [list]"),
        ('a = "bad \\q escape"\n', 1, "bad escape"),
    ],
)
def test_file_syntax_errors(text: str, line: int, fragment: str) -> None:
    cfg = parse_xl(text, PATH)
    matching = [e for e in cfg.errors if fragment in e.message]
    assert matching, cfg.errors
    assert matching[0].evidence.line == line


def test_error_recovery_keeps_later_settings() -> None:
    cfg = parse_xl("bad line\npci = ['01:00.0']\n", PATH)
    assert len(cfg.errors) == 1
    assert [p.bdf for p in cfg.pci] == ["0000:01:00.0"]


def test_crlf_reported_once() -> None:
    cfg = parse_xl("a = 1\r\nb = 2\r\nc = 3\r\n", PATH)
    assert len(cfg.errors) == 1


@pytest.mark.parametrize(
    ("spec", "bdf", "vslot", "seize", "permissive"),
    [
        ("01:00.0", "0000:01:00.0", None, False, False),
        ("0000:05:1f.7", "0000:05:1f.7", None, False, False),
        ("ffff:ff:1f.7", "ffff:ff:1f.7", None, False, False),
        ("05:00.*", "0000:05:00.*", None, False, False),
        ("05:00.0@1f", "0000:05:00.0", 0x1F, False, False),
        ("05:00.0,seize=1,permissive=1", "0000:05:00.0", None, True, True),
        ("05:00.0@3,msitranslate=1,power_mgmt=1", "0000:05:00.0", 3, False, False),
        ("05:00.0,rdm_policy=strict", "0000:05:00.0", None, False, False),
        ("bdf=0000:05:00.1,vslot=4,seize=1", "0000:05:00.1", 4, True, False),
        ("seize=1,bdf=05:00.1", "0000:05:00.1", None, True, False),
        ("05:00.0,seize=0x1", "0000:05:00.0", None, False, False),  # atoi("0x1") == 0
    ],
)
def test_pci_spec_accepted(spec: str, bdf: str, vslot: int | None, seize: bool, permissive: bool) -> None:
    cfg = parse_xl(f"pci = [ '{spec}' ]\n", PATH)
    assert cfg.errors == ()
    (entry,) = cfg.pci
    assert (entry.bdf, entry.vslot, entry.seize, entry.permissive) == (
        bdf,
        vslot,
        seize,
        permissive,
    )
    assert entry.evidence.text == spec


def test_pci_name_entry_has_no_bdf() -> None:
    (entry,) = parse_xl("pci = [ 'name=gpu0,seize=1' ]\n", PATH).pci
    assert entry.bdf is None and entry.name == "gpu0" and entry.seize


def test_pci_fields() -> None:
    (entry,) = parse_xl("pci = [ '0001:0a:02.*@5,rdm_policy=relaxed' ]\n", PATH).pci
    assert (entry.domain, entry.bus, entry.slot, entry.func) == (1, 0x0A, 2, None)
    assert entry.options == {"rdm_policy": "relaxed"}
    assert entry.rdm_policy == "relaxed"


def test_pci_globals_are_defaults_and_entries_override() -> None:
    cfg = parse_xl(
        "pci_seize = 1\npci_permissive = '1'\npci_msitranslate = 1\npci_power_mgmt = 1\n"
        "rdm = 'strategy=host,policy=strict'\n"
        "pci = [ '01:00.0', '02:00.0,seize=0,permissive=0' ]\n",
        PATH,
    )
    first, second = cfg.pci
    assert first.seize and first.permissive and first.msitranslate and first.power_mgmt
    assert first.rdm_policy == "strict"
    assert not second.seize and not second.permissive and second.msitranslate


def test_pci_global_appended_or_list_is_ignored() -> None:
    # xlu_cfg_get_long refuses `+=` and lists: the default stays 0.
    cfg = parse_xl("pci_seize = [1]\npci = ['01:00.0']\n", PATH)
    assert not cfg.pci[0].seize


@pytest.mark.parametrize(
    ("spec", "offset", "fragment"),
    [
        ("0g:00.0", 0, "expected a BDF"),  # "0g" ends the hex run: no ':' counted
        ("01:0g.0", 4, "expected '.'"),
        ("01:00.x", 6, "function must be hexadecimal"),
        ("01:20.0", 3, "slot 20 out of range"),
        ("01:00.8", 6, "function 8 out of range"),
        ("1ff:00.0", 0, "bus 1ff out of range"),
        ("10000:01:00.0", 0, "domain 10000 out of range"),
        ("01:00.0@20", 8, "vslot 20 out of range"),
        ("01:00.0,foo=1", 8, "unknown PCI_SPEC_STRING option 'foo'"),
        ("01:00.0,seize", 8, "expected KEY=VALUE"),
        ("01:00.0,rdm_policy=lax", 19, "rdm_policy"),
        ("01:00.0x", 7, "unexpected 'x'"),
        ("garbage", 0, "expected a BDF"),
        ("", 0, "expected a BDF"),
        ("1:2:3:4.0", 0, "expected a BDF"),
        ("seize=1", 0, "exactly one of"),
        ("bdf=01:00.0,name=gpu", 0, "exactly one of"),
        ("bdf=01:40.0", 7, "slot 40 out of range"),
    ],
)
def test_pci_spec_rejected(spec: str, offset: int, fragment: str) -> None:
    cfg = parse_xl(f"name = 'vm'\npci = [ '01:00.0', '{spec}' ]\n", PATH)
    assert [p.bdf for p in cfg.pci] == ["0000:01:00.0"]
    (error,) = cfg.errors
    assert fragment in error.message
    assert (error.evidence.path, error.evidence.line, error.evidence.text) == (PATH, 2, spec)
    assert error.offset == offset


def test_pci_not_a_list() -> None:
    cfg = parse_xl("pci = '01:00.0'\n", PATH)
    assert cfg.pci == () and "must be a list" in cfg.errors[0].message


@given(st.text(max_size=300))
def test_never_raises_on_any_text(text: str) -> None:
    parse_xl(text, PATH)


@given(st.text(alphabet="0123456789abcdefABx:.*@,=_-sizebdfnamvlot ", max_size=40))
def test_pci_spec_never_raises(spec: str) -> None:
    cfg = parse_xl(f"pci = [ '{spec}' ]\n", PATH)
    assert len(cfg.pci) + len(cfg.errors) == 1
