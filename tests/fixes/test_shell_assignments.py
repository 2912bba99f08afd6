"""Editing etc/default/grub the way sh reads it: quoting, comments, continuations, a variable set twice,
`$VAR` self-references, the final newline — checked against the doctor's reader and a real /bin/sh."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pciback_doctor.facts.bootloader import shell_variables
from pciback_doctor.fixes import _grub_with_token
from pciback_doctor.fixes.shell_assignments import assignments, with_word, without_words

N = "GRUB_CMDLINE_LINUX_DEFAULT"
T = "xen-pciback.hide=(0000:01:00.0)"
SH = shutil.which("sh")


def hide(word: str) -> bool:
    return re.fullmatch(r"(xen[-_])?pciback\.hide=.*", word) is not None


def sh_value(text: str, tmp_path: Path, name: str = N) -> str:
    """What a real POSIX shell sets `name` to when it sources the text (as grub-mkconfig does)."""
    assert SH is not None
    (tmp_path / "grub").write_bytes(text.encode("utf-8", "surrogateescape"))
    run = subprocess.run(
        [SH, "-c", f'. ./grub; printf %s "${name}"'],
        cwd=tmp_path,
        capture_output=True,
        timeout=10,
        check=True,
    )
    return run.stdout.decode("utf-8", "surrogateescape")


CASES = [
    # (what, before, after)
    ("double quotes", f'{N}="quiet splash"\n', f'{N}="quiet splash {T}"\n'),
    ("trailing comment", f'{N}="quiet" # the default\n', f'{N}="quiet {T}" # the default\n'),
    ("single quotes", f"{N}='quiet splash'\n", f"{N}='quiet splash {T}'\n"),
    (
        "continuation in quotes",
        f'{N}="quiet \\\n    splash"\nGRUB_TIMEOUT=5\n',
        f'{N}="quiet \\\n    splash {T}"\nGRUB_TIMEOUT=5\n',
    ),
    ("unquoted continuation", f"{N}=quiet\\\nsplash\n", f'{N}=quiet\\\nsplash" {T}"\n'),
    (
        "set twice: the last wins",
        f'{N}="quiet"\nGRUB_TIMEOUT=5\n{N}="splash"\n',
        f'{N}="quiet"\nGRUB_TIMEOUT=5\n{N}="splash {T}"\n',
    ),
    (
        "$VAR append",
        f'{N}="quiet"\n{N}="${N} splash"\n',
        f'{N}="quiet"\n{N}="${N} splash {T}"\n',
    ),
    ("unquoted $VAR", f"{N}=quiet\n{N}=${N}\n", f'{N}=quiet\n{N}="${N} {T}"\n'),
    ("no final newline", f'GRUB_DEFAULT=0\n{N}="quiet"', f'GRUB_DEFAULT=0\n{N}="quiet {T}"'),
    ("not set", "GRUB_DEFAULT=0\n", f'GRUB_DEFAULT=0\n{N}="{T}"\n'),
    ("not set, no final newline", "GRUB_DEFAULT=0", f'GRUB_DEFAULT=0\n{N}="{T}"\n'),
    ("empty file", "", f'{N}="{T}"\n'),
    ("empty value", f"{N}=\n", f'{N}="{T}"\n'),
    ("empty quotes", f'{N}=""\n', f'{N}="{T}"\n'),
    ("CRLF", f'{N}="quiet"\r\nGRUB_TIMEOUT=5\r\n', f'{N}="quiet {T}"\r\nGRUB_TIMEOUT=5\r\n'),
    ("export, two on a line", f'export {N}="a" GRUB_X=1 # c\n', f'export {N}="a {T}" GRUB_X=1 # c\n'),
    ("semicolons", f'A=1; {N}="q"; B=2\n', f'A=1; {N}="q {T}"; B=2\n'),
    ("# inside the value", f'{N}="a#b" #c\n', f'{N}="a#b {T}" #c\n'),
    ("commented copy after", f'{N}="q"\n#{N}="old"\n', f'{N}="q {T}"\n#{N}="old"\n'),
    ("mixed quotes end unquoted", f'{N}="quiet"splash\n', f'{N}="quiet"splash" {T}"\n'),
    ("mixed quotes end quoted", f"{N}=quiet' splash'\n", f"{N}=quiet' splash {T}'\n"),
    ("command substitution kept", f'{N}="quiet $(echo x)"\n', f'{N}="quiet $(echo x) {T}"\n'),
    (
        "old tokens removed everywhere",
        f'{N}="xen-pciback.hide=(0000:02:00.0) quiet"\n{N}="${N} pciback.hide=(03:00.0) splash"\n',
        f'{N}="quiet"\n{N}="${N} splash {T}"\n',
    ),
    ("token already last", f'{N}="quiet {T}"\n', f'{N}="quiet {T}"\n'),
    (
        "token moved to the end",
        f'{N}="{T} quiet"\n',
        f'{N}="quiet {T}"\n',
    ),
    (
        "last one conditional: a line that wins is appended",
        f'{N}="quiet"\nif [ -e /x ]; then\n  {N}="splash"\nfi\n',
        f'{N}="quiet"\nif [ -e /x ]; then\n  {N}="splash"\nfi\n{N}="${{{N}}} {T}"\n',
    ),
    (
        "last one after &&",
        f'{N}="quiet"\n[ -e /x ] && {N}="splash"\n',
        f'{N}="quiet"\n[ -e /x ] && {N}="splash"\n{N}="${{{N}}} {T}"\n',
    ),
    (
        "last one a command prefix",
        f'{N}="quiet"\n{N}="x" true\n',
        f'{N}="quiet {T}"\n{N}="x" true\n',
    ),
    (
        "an argument that looks like one",
        f'{N}="quiet"\ntrue {N}="xen-pciback.hide=(0000:02:00.0)"\n',
        f'{N}="quiet {T}"\ntrue {N}="xen-pciback.hide=(0000:02:00.0)"\n',
    ),
    ("unset after", f'{N}="quiet"\nunset {N}\n', f'{N}="quiet"\nunset {N}\n{N}="${{{N}}} {T}"\n'),
    (
        "form feed and non-UTF-8 bytes elsewhere",
        f'# caf\udce9\x0c\nGRUB_X="a\u2028b"\n{N}="quiet"\n',
        f'# caf\udce9\x0c\nGRUB_X="a\u2028b"\n{N}="quiet {T}"\n',
    ),
]


# where the doctor's reader and sh differ (CRLF, `$(…)`, unknown conditions, `unset`)
READER_IS_NOT_SH = {
    c[1]
    for c in CASES
    if c[0] in ("CRLF", "command substitution kept", "last one conditional: a line that wins is appended",
                "last one after &&", "unset after", "last one a command prefix")
}  # fmt: skip
READER_CANNOT_TELL = {
    c[1] for c in CASES if c[0] in ("command substitution kept", "last one a command prefix")
}


@pytest.mark.parametrize(("before", "after"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_edit(before: str, after: str, tmp_path: Path) -> None:
    assert with_word(before, N, T, replaces=hide) == after
    old = shell_variables(before).get(N) or ""
    expected = [w for w in old.split() if not hide(w)] + [T]
    value = shell_variables(after)[N]
    if before not in READER_CANNOT_TELL:
        assert value is not None and value.split() == expected
    if SH is not None and before not in READER_IS_NOT_SH:
        assert sh_value(after, tmp_path).split() == expected


def test_every_edit_is_what_sh_reads(tmp_path: Path) -> None:
    """The cases the reader cannot decide (conditions, `$(…)`): sh still ends with the token last."""
    if SH is None:
        pytest.skip("no /bin/sh")
    for _, before, after in CASES:
        assert sh_value(after, tmp_path).split()[-1] == T, before


def test_grub_fix_carries_the_value_to_prove() -> None:
    change = _grub_with_token(f'{N}="quiet xen-pciback.hide=(0000:09:00.0)" # x\n', T, N)
    assert change.content == f'{N}="quiet {T}" # x\n'
    assert change.sets == ((N, f"quiet {T}"),)
    xen = _grub_with_token(
        'GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT="a"\n', T, "GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT"
    )
    assert xen.content == f'GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT="a {T}"\n'
    # a Xen-only variable not set yet is created holding the words it replaces (the seed)
    seeded = _grub_with_token(f'{N}="quiet"\n', T, "GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT", seed="quiet")
    assert seeded.content == f'{N}="quiet"\nGRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT="quiet {T}"\n'
    assert seeded.sets == (("GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT", f"quiet {T}"),)
    # an empty token only takes the old hide words out
    assert _grub_with_token(change.content, "", N).content == f'{N}="quiet" # x\n'


def test_cli_writes_a_grub_file_sh_reads_as_intended(tmp_path: Path) -> None:
    from helpers import FIXTURES, doctor

    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "builtin-cmdline-hide", root, symlinks=True)
    (root / "etc/default").mkdir(parents=True)
    grub = (
        f"GRUB_DEFAULT=0\n{N}='quiet xen-pciback.hide=(0000:07:00.0)' # set by the installer\n"
        f'{N}="${N} \\\n  splash"'
    )
    (root / "etc/default/grub").write_text(grub)
    (root / "proc/cmdline").write_text("ro quiet\n")
    run = doctor("fix", "--root", str(root), "--device", "0000:00:14.0", "--strategy", "cmdline", "--write")
    assert run.code == 0, run.err
    text = (root / "etc/default/grub").read_text()
    assert text.startswith(f"GRUB_DEFAULT=0\n{N}='quiet' # set by the installer\n")
    assert not text.endswith("\n")
    if SH is not None:
        assert sh_value(text, tmp_path).split() == ["quiet", "splash", "xen-pciback.hide=(0000:00:14.0)"]


# -- property: only the winning assignment's value changes, and sh / the reader read the token in ----

WORDS = st.sampled_from(
    ["quiet", "splash", "ro", "console=ttyS0,115200", "a=b", "iommu=pt", "xen-pciback.hide=(0000:0a:00.0)",
     "pciback.hide=(01:00.0)", "x#y"]
)  # fmt: skip


@st.composite
def value(draw: st.DrawFn) -> str:
    words = draw(st.lists(WORDS, max_size=4))
    if draw(st.booleans()):
        words.insert(0, f"${N}")
    style = draw(st.sampled_from(["double", "single", "unquoted", "double-continued", "mixed"]))
    body = " ".join(words)
    if style == "single" and "$" not in body:
        return f"'{body}'"
    if style == "unquoted" and len(words) == 1 and "(" not in body:  # `(` unquoted: a syntax error
        return body
    if style == "double-continued" and len(words) > 1:
        return '"' + body.replace(" ", " \\\n  ", 1) + '"'
    if style == "mixed" and len(words) > 1:
        return f"\"{words[0]}\"' {' '.join(words[1:])}'".replace(f"' ${N}", f'\' "${N}"')
    return f'"{body}"'


@st.composite
def grub_file(draw: st.DrawFn) -> str:
    lines = []
    for kind in draw(st.lists(st.sampled_from(["name", "other", "comment", "blank"]), max_size=6)):
        if kind == "name":
            comment = draw(st.sampled_from(["", " # a comment", "  #x"]))
            lines.append(f"{N}={draw(value())}{comment}")
        elif kind == "other":
            lines.append(f'GRUB_OTHER="{" ".join(draw(st.lists(WORDS, max_size=2)))}"')
        elif kind == "comment":
            lines.append(f'# {N}="commented {draw(WORDS)}"\x0c')
        else:
            lines.append("")
    text = "\n".join(lines)
    return text + "\n" if draw(st.booleans()) else text


def value_words(text: str, start: int, end: int) -> list[str]:
    """The words of one assignment's value alone (a self-reference counts as empty)."""
    return (shell_variables(f"X={text[start:end]}\n", "x").get("X") or "").split()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=grub_file())
def test_only_the_winning_value_changes(text: str, tmp_path: Path) -> None:
    new = with_word(text, N, T, replaces=hide)
    old_spans, new_spans = assignments(text, N), assignments(new, N)
    old_value = shell_variables(text).get(N) or ""
    assert (shell_variables(new)[N] or "").split() == [w for w in old_value.split() if not hide(w)] + [T]
    # every other variable reads the same
    others = {k: v for k, v in shell_variables(text).items() if k != N}
    assert {k: v for k, v in shell_variables(new).items() if k != N} == others
    if old_spans:
        # same assignments, every byte between them the same; earlier ones only lose old tokens
        assert len(new_spans) == len(old_spans)
        cuts = [0, *(x for a in old_spans for x in (a.start, a.end)), len(text)]
        new_cuts = [0, *(x for a in new_spans for x in (a.start, a.end)), len(new)]
        for i in range(0, len(cuts), 2):
            assert text[cuts[i] : cuts[i + 1]] == new[new_cuts[i] : new_cuts[i + 1]]
        for a, b in zip(old_spans[:-1], new_spans[:-1], strict=True):
            assert value_words(new, b.start, b.end) == [
                w for w in value_words(text, a.start, a.end) if not hide(w)
            ]
        a, b = old_spans[-1], new_spans[-1]
        assert value_words(new, b.start, b.end)[-1] == T
    else:
        assert new.startswith(text)
    if SH is not None:
        assert sh_value(new, tmp_path).split() == (shell_variables(new)[N] or "").split()


PIECES = [*" \t\r\n\\'\"$`(){}#;&|<>=x_\x0c\udce9", f"{N}=", "if ", "then ", "fi", "$(", "${", "export "]


@settings(max_examples=300, deadline=None)
@given(text=st.lists(st.sampled_from(PIECES), max_size=40).map("".join))
def test_any_text_is_edited_without_an_error(text: str) -> None:
    """The fix is built on every doctor run: no text, however broken, may make it raise."""
    new = with_word(text, N, T, replaces=hide)
    assert T in new or new == without_words(text, N, hide)  # unchanged only when nothing could be sure


def test_a_huge_value_is_left_whole_and_a_line_that_wins_appended(tmp_path: Path) -> None:
    """A hostile 16 MiB value costs seconds, not minutes: it is not taken apart."""
    before = f'{N}="{"quiet " * ((16 << 20) // 6)}xen-pciback.hide=(0000:02:00.0)"\n'
    after = with_word(before, N, T, replaces=hide)
    assert after == before + f'{N}="${{{N}}} {T}"\n'
    if SH is not None:
        assert sh_value(after, tmp_path).split()[-2:] == ["xen-pciback.hide=(0000:02:00.0)", T]


@st.composite
def grub_file_with_conditions(draw: st.DrawFn) -> str:
    """As above, with assignments of the variable under `if` or after `&&`, and X's value unknown."""
    text = draw(grub_file())
    guarded = f"{N}={draw(value())}"
    form = draw(st.sampled_from(['if [ -n "$X" ]; then\n  {}\nfi', "[ -e /nonexistent ] && {}", "{}"]))
    rest = draw(grub_file())
    return f"{text}{'' if not text or text.endswith(chr(10)) else chr(10)}{form.format(guarded)}\n{rest}"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=grub_file_with_conditions())
def test_the_token_wins_under_conditions_too(text: str, tmp_path: Path) -> None:
    """Whichever branch runs, sh ends with the token last and with no old hide token."""
    new = with_word(text, N, T, replaces=hide)
    last = [a for a in assignments(text, N) if a.lasting][-1]
    if not last.plain:  # edited nowhere in place: a line that wins is appended to the cleaned text
        assert (
            new
            == without_words(text, N, hide) + ("" if text.endswith("\n") else "\n") + f'{N}="${{{N}}} {T}"\n'
        )
    if SH is not None:
        words = sh_value(new, tmp_path).split()
        assert words[-1] == T and not [w for w in words[:-1] if hide(w)]


def test_a_variable_assigned_past_the_bound_keeps_old_words_and_the_token_still_wins(tmp_path: Path) -> None:
    from pciback_doctor.fixes.shell_assignments import MAX_ASSIGNMENTS

    before = f'{N}="${N} xen-pciback.hide=(0000:02:00.0)"\n' * (MAX_ASSIGNMENTS + 1)
    after = with_word(before, N, T, replaces=hide)
    assert after == before[: -len('"\n')] + f' {T}"\n'
    if SH is not None:
        assert sh_value(after, tmp_path).split()[-1] == T
