"""modprobe.d as kmod reads it."""

from hypothesis import given
from hypothesis import strategies as st

from pciback_doctor.facts.modprobe import config_files, parse_modprobe_file, underscores


def test_directives_remember_their_line_and_normalise_names() -> None:
    cfg = parse_modprobe_file(
        "# comment\noptions xen-pciback hide=(05:00.0) \\\n  permissive=1\nsoftdep e1000e pre: xen-pciback\n",
        "etc/modprobe.d/x.conf",
    )
    opts = cfg.options("xen_pciback")
    assert len(opts) == 1
    assert opts[0].evidence.line == 2  # a continued line keeps the line it starts on
    assert opts[0].args == "hide=(05:00.0)   permissive=1"
    soft = cfg.softdep("e1000e")
    assert soft is not None and soft.pre == ("xen_pciback",)


def test_hash_is_a_comment_only_in_column_zero() -> None:
    cfg = parse_modprobe_file("  # indented\noptions foo bar=1\n", "f")
    assert len(cfg.directives) == 1
    assert "bad line" in cfg.problems[0].text  # kmod: "ignoring bad line starting with '#'"


def test_first_install_and_softdep_win() -> None:
    cfg = parse_modprobe_file(
        "install e1000e /bin/true\ninstall e1000e /bin/false\nsoftdep e1000e pre: a\nsoftdep e1000e pre: b\n",
        "f",
    )
    install = cfg.install("e1000e")
    assert install is not None and install.args == "/bin/true"
    soft = cfg.softdep("e1000e")
    assert soft is not None and soft.pre == ("a",)


def test_options_match_by_name_or_requested_alias() -> None:
    cfg = parse_modprobe_file("alias pciback xen-pciback\noptions pciback hide=(1)\n", "f")
    assert cfg.options("xen_pciback") == []
    assert len(cfg.options("xen_pciback", alias="pciback")) == 1
    assert [d.args for d in cfg.aliases_for("pciback")] == ["xen-pciback"]


def test_same_basename_higher_directory_wins_and_global_order() -> None:
    listing = {
        "etc/modprobe.d": ["b.conf", "x.conf", ".hidden.conf", "notes.txt"],
        "lib/modprobe.d": ["a.conf", "x.conf"],
        "usr/lib/modprobe.d": ["c.conf"],
    }
    assert config_files(listing) == [
        "lib/modprobe.d/a.conf",
        "etc/modprobe.d/b.conf",
        "usr/lib/modprobe.d/c.conf",
        "etc/modprobe.d/x.conf",
    ]


def test_underscores_keeps_dashes_in_brackets() -> None:
    assert underscores("pci:v*d*[a-f]-x") == "pci:v*d*[a-f]_x"


def test_deprecated_and_unknown_commands_are_reported() -> None:
    cfg = parse_modprobe_file("include /etc/foo\nfrobnicate x\noptions\n", "f")
    assert cfg.directives == ()
    assert len(cfg.problems) == 3


@given(st.text(max_size=400))
def test_never_raises(text: str) -> None:
    parse_modprobe_file(text, "f")
