"""Hostile bytes in the inspected system, through the CLI: every command and format still answers, in
UTF-8 under every locale, with what the terminal, a Markdown viewer, an XML parser or the Actions
runner would act on shown instead (issue 16: encoding, terminal and format injection)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from cpio_writer import directory, file, newc, symlink
from helpers import FIXTURES, doctor
from pciback_doctor.render import text as text_render

FORMATS = ("text", "json", "sarif", "junit", "github", "markdown")
# what a terminal obeys: ESC, CSI as one C1 byte, CR, BEL, a bidi override, a line separator
OBEYED = ("\x1b", "\x9b", "\r", "\x07", "\u202e", "\u2028")
HOSTILE_LINE = (
    "options pciback hide=(0000:05:00.0) # \x1b[2J\x1b]0;owned\x07 \x9b31m \u202eevil :thumbs_up: [bold]x[/] "
    "]]> :: %0A"
)


def hostile_root(tmp_path: Path) -> Path:
    """module-modprobe-options with one Latin-1 byte in modprobe.d and etc/default/grub, and a
    modprobe line full of controls and markup that findings quote (evidence and fix file bodies)."""
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "module-modprobe-options", root, symlinks=True)
    # without the softdep nothing orders the backend first (PB308): the modprobe fix rewrites both
    # files, retiring the dead `options pciback` line, and every format quotes them whole
    (root / "etc/modprobe.d/xen-pciback.conf").write_bytes(
        b"# caf\xe9 (Latin-1)\noptions xen-pciback hide=(0000:05:00.0)\n"
    )
    (root / "etc/modprobe.d/old.conf").write_bytes(b"# caf\xe9 (Latin-1)\n" + HOSTILE_LINE.encode() + b"\n")
    cmdline = root / "proc/cmdline"  # the header prints it: rich once made an emoji of this
    cmdline.write_text(cmdline.read_text().strip() + " note=:thumbs_up:[bold]\n")
    (root / "etc/default").mkdir(parents=True)
    (root / "etc/default/grub").write_bytes(b'# Caf\xe9\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    return root


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONIO"))}
    base.pop("PYTHONUTF8", None)
    return subprocess.run(
        [sys.executable, "-m", "pciback_doctor", *args],
        env={**base, **env},
        capture_output=True,
        timeout=120,
        check=False,
    )


LOCALES = {
    "LANG=C": {"LANG": "C"},
    "LC_ALL=POSIX": {"LC_ALL": "POSIX"},
    "latin-1 strict": {"LC_ALL": "C", "PYTHONIOENCODING": "latin-1:strict"},
}


@pytest.mark.parametrize("locale", LOCALES)
def test_a_latin1_byte_breaks_no_command_under_any_locale(tmp_path: Path, locale: str) -> None:
    root = str(hostile_root(tmp_path))
    env = LOCALES[locale]
    runs = {f"check --format {f}": ["check", "--root", root, "--format", f] for f in FORMATS}
    runs["fix"] = ["fix", "--root", root]
    runs["fix --strategy cmdline"] = ["fix", "--root", root, "--strategy", "cmdline"]
    runs["report"] = ["report", "--root", root]
    runs["report .md"] = ["report", "--root", root, "--output", str(tmp_path / "r.md")]
    runs["check --output"] = ["check", "--root", root, "--output", str(tmp_path / "out.txt")]
    for name, args in runs.items():
        done = run(args, env)
        assert done.returncode in (0, 1), (name, done.stderr.decode(errors="replace"))
        assert not done.stderr, (name, done.stderr)
        if not name.startswith("fix"):  # a diff carries the files' own bytes (next test)
            done.stdout.decode("utf-8")  # the rendered formats are UTF-8 whatever the locale ...
    # ... and say which byte was not: visibly, once decoded for display
    assert b"caf\\xe9" in run(["check", "--root", root], env).stdout
    assert b"caf\\xe9" in (tmp_path / "out.txt").read_bytes()
    assert "caf\\xe9" in (tmp_path / "r.md").read_text("utf-8")


def test_fix_diff_keeps_the_files_own_bytes(tmp_path: Path) -> None:
    """A diff is for `patch`: the Latin-1 byte goes out as itself, not as an escape or U+FFFD."""
    root = str(hostile_root(tmp_path))
    modprobe = run(["fix", "--root", root], {"LANG": "C"}).stdout
    assert b"# caf\xe9 (Latin-1)\n" in modprobe
    grub = run(["fix", "--root", root, "--strategy", "cmdline"], {"LC_ALL": "POSIX"}).stdout
    assert b"# Caf\xe9\n" in grub


def test_machine_formats_carry_no_lone_surrogate(tmp_path: Path) -> None:
    root = hostile_root(tmp_path)
    os.rename(root / "etc/modprobe.d/old.conf", os.fsencode(root / "etc/modprobe.d") + b"/old-\xe9.conf")
    for fmt in ("json", "sarif"):
        result = doctor("check", "--root", str(root), "--format", fmt)
        assert result.code == 1
        assert "\\ud" not in result.out.lower()  # json.dumps writes a lone surrogate as \udce9
        document = json.loads(result.out)  # and it still parses
        strings = "\n".join(_strings(document))
        assert "old-\\xe9.conf" in strings  # the byte, shown as `\xe9`
        if fmt == "json":
            assert "# caf\\xe9 (Latin-1)\n" in strings  # in the fix's file content
        else:  # a URI gets the byte percent-encoded, as RFC 3986 says
            uris = [
                loc["physicalLocation"]["artifactLocation"]["uri"]
                for r in document["runs"][0]["results"]
                for loc in r.get("locations", [])
            ]
            assert "etc/modprobe.d/old-%E9.conf" in uris


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_controls_and_markup_are_shown_never_obeyed(tmp_path: Path) -> None:
    root = str(hostile_root(tmp_path))
    for fmt in ("text", "markdown", "github", "junit"):
        out = doctor("check", "--root", root, "--format", fmt).out
        assert not [c for c in OBEYED if c in out], fmt
        assert "\\x1b[2J" in out.replace("%25", "%"), fmt  # shown as an escape
        assert "\\u202e" in out, fmt
    text = doctor("check", "--root", root).out
    assert "note=:thumbs_up:[bold]" in text and "👍" not in text  # rich expands no emoji codes
    assert "[bold]x[/]" in text  # nor markup
    # JUnit: XML 1.0 has no way to carry ESC, even as &#27;: escaped, the document parses
    ET.fromstring(doctor("check", "--root", root, "--format", "junit").out)
    # GitHub: one workflow command per line, the planted `::` and `%0A` inert
    lines = doctor("check", "--root", root, "--format", "github").out.splitlines()
    assert all(line.startswith(("::error ", "::warning ", "::notice ")) for line in lines)
    assert any("%250A" in line for line in lines)


def test_support_report_shows_controls(tmp_path: Path) -> None:
    root = str(hostile_root(tmp_path))
    html = doctor("report", "--root", root).out
    assert not [c for c in OBEYED if c in html]
    assert "\\x1b[2J" in html
    doctor("report", "--root", root, "--output", str(tmp_path / "r.md"))
    md = (tmp_path / "r.md").read_text("utf-8")
    assert not [c for c in OBEYED if c in md]


def test_markdown_fence_outlasts_an_indented_fence_in_a_quoted_file(tmp_path: Path) -> None:
    """An indented ``` inside a quoted file closed the block: the rest of the file became Markdown."""
    root = hostile_root(tmp_path)
    planted = "# notes:\n   ```\n# [click](http://evil.example/) <img src=x>\n   ````\n"
    conf = root / "etc/modprobe.d/old.conf"
    conf.write_text(planted + conf.read_text("latin-1"), "latin-1")
    md = doctor("check", "--root", str(root), "--format", "markdown").out
    doctor("report", "--root", str(root), "--output", str(tmp_path / "r.md"))
    for document in (md, (tmp_path / "r.md").read_text("utf-8")):
        tokens = MarkdownIt("commonmark").parse(document)
        fences = [t.content for t in tokens if t.type == "fence"]
        assert any("[click](http://evil.example/) <img src=x>" in f for f in fences)
        assert not any(t.type == "html_block" for t in tokens)
        inline = [c for t in tokens if t.children for c in t.children]
        assert not any(c.type in ("link_open", "image", "html_inline") for c in inline)


def test_initramfs_list_shows_hostile_names(tmp_path: Path) -> None:
    image = tmp_path / "initrd.img"
    image.write_bytes(
        newc(
            [
                directory("etc"),
                file("etc/\x1b]0;owned\x07name\x1b[2J"),
                file("etc/two\nlines\r-rw-r--r--   1  0 fake"),
                symlink("etc/link\u202e", "target\x9b1m"),
            ]
        )
    )
    out = doctor("initramfs", str(image), "--list").out
    assert not [c for c in OBEYED if c in out]
    assert len(out.splitlines()) == 4  # a newline in a name does not forge a listing line
    assert "etc/two\\x0alines\\x0d-rw-r--r--" in out
    summary = doctor("initramfs", str(image)).out
    assert not [c for c in OBEYED if c in summary]


# -- text output: width and colour ---------------------------------------------------------------


def _long_fix_report(tmp_path: Path) -> str:
    root = hostile_root(tmp_path)
    long_comment = "# " + " ".join(f"word{i}" for i in range(60))  # ~430 columns
    conf = root / "etc/modprobe.d/old.conf"
    conf.write_bytes(long_comment.encode() + b"\n" + conf.read_bytes())
    return long_comment


@pytest.mark.parametrize("width", [80, 200])
def test_file_bodies_are_never_wrapped_or_cut(tmp_path: Path, width: int) -> None:
    from pciback_doctor.boot.analysis import analyse
    from pciback_doctor.checks import run_checks
    from pciback_doctor.facts.system import Options, collect
    from pciback_doctor.fixes import EDITABLE
    from pciback_doctor.outcome import build_report

    long_comment = _long_fix_report(tmp_path)
    analysis = analyse(collect(Options(root=str(tmp_path / "root")), EDITABLE))
    report = build_report(analysis, run_checks(analysis, frozenset({"dom0", "domu"})))
    out = text_render.render(report, colour=True, width=width)
    plain = [line.strip() for line in _strip_sgr(out).splitlines()]
    assert long_comment in plain  # one line, whole, as the file will hold it
    quoted = [line for line in plain if line.startswith("at etc/modprobe.d/old.conf:")]
    assert quoted and all(line.endswith(":: %0A") for line in quoted)  # a quoted line too
    assert any(line.startswith("cmdline") and line.endswith("[proc/cmdline]") for line in plain)


def test_zero_column_console_still_gets_whole_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pciback_doctor.boot.analysis import analyse
    from pciback_doctor.checks import run_checks
    from pciback_doctor.facts.system import Options, collect
    from pciback_doctor.fixes import EDITABLE
    from pciback_doctor.outcome import build_report

    long_comment = _long_fix_report(tmp_path)
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=0: os.terminal_size((0, 0)))
    analysis = analyse(collect(Options(root=str(tmp_path / "root")), EDITABLE))
    report = build_report(analysis, run_checks(analysis, frozenset({"dom0", "domu"})))
    out = _strip_sgr(text_render.render(report, colour=True))
    assert long_comment in [line.strip() for line in out.splitlines()]
    assert "device" in out  # the table is drawn at a usable width, not one character wide


def _strip_sgr(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class _Tty:
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("env", "colour"),
    [({"TERM": "xterm-256color"}, True), ({"TERM": "dumb"}, False), ({"NO_COLOR": "1"}, False)],
)
def test_colour_only_where_the_terminal_has_it(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], colour: bool
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert text_render.wants_colour(_Tty()) is colour  # type: ignore[arg-type]


def test_junit_declares_the_encoding_it_is_written_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ElementTree declares the locale's encoding; the CLI writes UTF-8: a Latin-1 locale got a
    document whose `é` no XML parser reads back."""
    import locale

    monkeypatch.setattr(locale, "getpreferredencoding", lambda do_setlocale=True: "ISO-8859-1")
    root = hostile_root(tmp_path)
    (root / "etc/modprobe.d/old.conf").write_text("# café\n" + HOSTILE_LINE + "\n")
    out = tmp_path / "junit.xml"
    doctor("check", "--root", str(root), "--format", "junit", "--output", str(out))
    assert out.read_bytes().startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert any("# café" in t for t in ET.parse(out).getroot().itertext())


def test_a_usage_error_naming_a_hostile_path_stays_one_line(tmp_path: Path) -> None:
    result = doctor("initramfs", str(tmp_path / "x\x1b[2J\nforged"))
    assert result.code == 2
    assert result.err.count("\n") == 1 and "\x1b" not in result.err
    assert "x\\x1b[2J\\x0aforged" in result.err


def test_release_folder_names_and_grub_titles_are_shown(tmp_path: Path) -> None:
    """A kernel release is a folder name, a boot entry a GRUB title: both reach every format."""
    root = tmp_path / "grub"
    shutil.copytree(FIXTURES / "boot-debian-grub-xen", root, symlinks=True)
    grub = root / "boot/grub/grub.cfg"
    title = "Debian GNU/Linux, with Xen 4.17-amd64 and Linux 6.1.0-17-amd64"
    grub.write_text(grub.read_text().replace(title, title + " \x1b[2J\u202e :thumbs_up:"))
    modules = tmp_path / "modules"
    shutil.copytree(FIXTURES / "module-modprobe-options", modules, symlinks=True)
    release = "6.1.0-56-amd64"
    (modules / "lib/modules" / release).rename(modules / "lib/modules" / f"{release}\x1b[2J")
    (modules / f"boot/config-{release}").rename(modules / f"boot/config-{release}\x1b[2J")
    for fmt in FORMATS:
        for where, shown in (
            (root, "6.1.0-17-amd64 \\x1b[2J\\u202e :thumbs_up:"),
            (modules, f"{release}\\x1b[2J"),
        ):
            out = doctor("check", "--root", str(where), "--format", fmt).out
            assert not [c for c in OBEYED if c in out], (fmt, where.name)
            if fmt in ("text", "markdown"):
                assert shown in out.replace("\\\\", "\\"), (fmt, where.name)
