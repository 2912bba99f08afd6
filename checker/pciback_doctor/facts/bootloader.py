"""The default boot entry of the NEXT boot (SPEC §4): GRUB, BLS (systemd-boot or grub's blscfg) and
Xen's own EFI loader (`xen.efi` + `xen.cfg`), read through a root.

The answer is what the boot loader will do, not what its configuration tools would generate: GRUB
runs `grub.cfg`, so `grub.cfg` decides and `etc/default/grub` only explains (and, when the two
disagree, shows that `update-grub` was not run: a `Staleness`). Nothing here raises on bad input;
whatever cannot be understood becomes a `BootProblem`.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from pciback_doctor.facts.limits import NESTING
from pciback_doctor.facts.root import Root
from pciback_doctor.model import Evidence

# --------------------------------------------------------------------------------------------------
# Facts


@dataclass(frozen=True)
class BootEntry:
    source: str  # "grub" | "bls" | "xen.cfg"
    title: str
    id: str | None
    is_xen: bool
    kernel_path: str | None  # relative to the root (see _boot_path)
    kernel_release: str | None
    cmdline: str  # the Linux (dom0) command line, without the kernel path
    xen_cmdline: str | None  # the hypervisor's command line; None when not booted by Xen
    initrd_paths: tuple[str, ...]
    evidence: tuple[Evidence, ...]
    menu_path: str = ""  # GRUB: position as GRUB_DEFAULT would write it, e.g. "3>0>1"
    xen_path: str | None = None


@dataclass(frozen=True)
class Staleness:
    """`etc/default/grub` says one thing, the generated `grub.cfg` another: update-grub not run."""

    kind: str  # "dom0-cmdline" | "xen-cmdline" | "cmdline" (a non-Xen entry) | "default"
    message: str
    missing: tuple[str, ...]  # in etc/default/grub, absent from grub.cfg
    extra: tuple[str, ...]  # in grub.cfg, absent from etc/default/grub
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True)
class BootProblem:
    message: str
    evidence: Evidence


@dataclass(frozen=True)
class NextBoot:
    entry: BootEntry | None
    why: str
    entries: tuple[BootEntry, ...]
    stale: tuple[Staleness, ...] = ()
    problems: tuple[BootProblem, ...] = ()
    bootloader: str | None = None  # "grub" | "systemd-boot" | "xen.efi"


# --------------------------------------------------------------------------------------------------
# Shared helpers

_GRUB_CFGS = ("boot/grub/grub.cfg", "boot/grub2/grub.cfg")
_ESPS = ("boot/efi", "efi", "boot")
_BLS_DIRS = ("boot/loader/entries", "efi/loader/entries", "boot/efi/loader/entries")
_LOADER_CONFS = ("efi/loader/loader.conf", "boot/efi/loader/loader.conf", "boot/loader/loader.conf")
_EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
_EFI_LOADER = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"  # systemd-boot's vendor GUID
_RELEASE = re.compile(r"^(?:vmlinuz|vmlinux|bzImage|kernel|Image|linux)-(\d.*?)(?:\.efi)?$")


class _Notes:
    def __init__(self) -> None:
        self.items: list[BootProblem] = []

    def add(self, message: str, path: str, line: int | None = None, text: str = "") -> None:
        self.items.append(BootProblem(message, Evidence(path, line, text[:200])))


def _boot_path(root: Root, written: str, bases: Sequence[str]) -> str:
    """A loader's path as a root-relative path.

    Boot loaders see paths relative to the partition they read: `/vmlinuz-K` when /boot is its own
    partition, `/boot/vmlinuz-K` when it is not, so the same text means different files. `bases`
    are where that partition may be mounted (`boot/`). A candidate that exists in the root wins,
    the partition's own reading first; when none exists (a fixture, a partly copied root) the
    partition reading is kept, since that is how grub-mkconfig and kernel-install write paths.
    """
    path = re.sub(r"^\([^)]*\)", "", written.strip()).replace("\\", "/").lstrip("/")
    candidates = [f"{base}{path}" for base in bases if base and not path.startswith(base)]
    candidates.append(path)
    return next((c for c in candidates if root.exists(c)), candidates[0])


def kernel_release_of(path: str | None) -> str | None:
    """`6.1.0-18-amd64` from `boot/vmlinuz-6.1.0-18-amd64`; None for `vmlinuz-linux`."""
    if not path:
        return None
    m = _RELEASE.match(path.rsplit("/", 1)[-1])
    return m.group(1) if m else None


def _join(words: Iterable[str]) -> str:
    return " ".join(w for w in words if w)


def _strverscmp(a: str, b: str) -> int:
    """systemd's strverscmp_improved(): what sd-boot and blscfg sort versions with."""
    i = j = 0
    ok = set("~-^.")

    def skip(s: str, k: int) -> int:
        while k < len(s) and not (s[k].isalnum() or s[k] in ok):
            k += 1
        return k

    while True:
        i, j = skip(a, i), skip(b, j)
        ca, cb = a[i : i + 1], b[j : j + 1]
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if not ca or not cb:
            return (ca > cb) - (ca < cb)
        for sep, before in (("-", 1), ("^", -1), (".", -1)):
            if ca == sep or cb == sep:
                if ca != sep:
                    return before
                if cb != sep:
                    return -before
                i, j = i + 1, j + 1
                break
        else:
            if ca.isdigit() or cb.isdigit():
                if not ca.isdigit():
                    return -1
                if not cb.isdigit():
                    return 1
                while i < len(a) and a[i] == "0":
                    i += 1
                while j < len(b) and b[j] == "0":
                    j += 1
                ei, ej = i, j
                while ei < len(a) and a[ei].isdigit():
                    ei += 1
                while ej < len(b) and b[ej].isdigit():
                    ej += 1
                na, nb = a[i:ei], b[j:ej]
                r = (len(na) > len(nb)) - (len(na) < len(nb)) or (na > nb) - (na < nb)
            else:
                if not ca.isalpha():
                    return -1
                if not cb.isalpha():
                    return 1
                ei, ej = i, j
                while ei < len(a) and a[ei].isalpha():
                    ei += 1
                while ej < len(b) and b[ej].isalpha():
                    ej += 1
                na, nb = a[i:ei], b[j:ej]
                r = (na > nb) - (na < nb)
            if r:
                return r
            i, j = ei, ej
        continue


# --------------------------------------------------------------------------------------------------
# EFI variables (only on a live root or a root with a copy of /sys): which loader boots next

_DEVPATH_FILE = (4, 4)  # media device path, file path node


def _efivar(root: Root, name: str, guid: str) -> bytes | None:
    data = root.read_bytes(f"sys/firmware/efi/efivars/{name}-{guid}")
    return None if data is None or len(data) < 4 else data[4:]  # 4 bytes of attributes first


def _utf16z(data: bytes) -> str:
    text = data.decode("utf-16-le", "replace")
    return text.split("\0", 1)[0]


def _efi_next_loader(root: Root) -> tuple[str, str] | None:
    """(Boot#### name, file path of its loader) that the firmware starts next, when known."""
    nxt = _efivar(root, "BootNext", _EFI_GLOBAL)
    order = _efivar(root, "BootOrder", _EFI_GLOBAL)
    numbers: list[int] = []
    if nxt and len(nxt) >= 2:
        numbers.append(struct.unpack_from("<H", nxt)[0])
    if order:
        numbers.extend(struct.unpack_from(f"<{len(order) // 2}H", order))
    for number in numbers:
        name = f"Boot{number:04X}"
        option = _efivar(root, name, _EFI_GLOBAL)
        if option is None or len(option) < 6:
            continue
        attributes, list_len = struct.unpack_from("<IH", option)
        if not attributes & 1:  # LOAD_OPTION_ACTIVE: the firmware skips inactive entries
            continue
        end = 6
        while end + 1 < len(option) and option[end : end + 2] != b"\0\0":
            end += 2
        pos, stop = end + 2, min(end + 2 + list_len, len(option))
        while pos + 4 <= stop:
            kind, sub, length = struct.unpack_from("<BBH", option, pos)
            if length < 4 or kind == 0x7F:
                break
            if (kind, sub) == _DEVPATH_FILE:
                return name, _utf16z(option[pos + 4 : pos + length]).replace("\\", "/")
            pos += length
        return name, ""
    return None


# --------------------------------------------------------------------------------------------------
# grubenv: a 1024-byte block of `key=value` lines padded with `#` (grub-core/lib/envblk.c)


def _read_grubenv(root: Root, path: str) -> tuple[dict[str, tuple[str, int]], str | None]:
    text = root.read_text(path)
    if text is None:
        return {}, None
    values: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(text.split("\n"), 1):
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        # envblk escapes `\` and newline with a backslash.
        values[key] = (re.sub(r"\\(.)", r"\1", value), number)
    return values, path


# --------------------------------------------------------------------------------------------------
# The GRUB script language, enough of it to rebuild the menu (grub-core/script/yylex.l)

_LIT, _VAR = 0, 1


@dataclass(frozen=True)
class _Word:
    parts: tuple[tuple[int, str, bool], ...]  # (kind, text or var name, quoted)
    line: int

    @property
    def literal(self) -> str | None:
        """The word's text when it has no variable in it."""
        if any(kind == _VAR for kind, _, _ in self.parts):
            return None
        return "".join(text for _, text, _ in self.parts)

    @property
    def keyword(self) -> str | None:
        if len(self.parts) == 1 and self.parts[0][0] == _LIT and not self.parts[0][2]:
            return self.parts[0][1]
        return None


_SEP, _LBRACE, _RBRACE = ";", "{", "}"
_Token = _Word | str
_VARNAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[?#@*]")


def _grub_lex(text: str, path: str, notes: _Notes) -> list[tuple[_Token, int]]:
    tokens: list[tuple[_Token, int]] = []
    i, n, line = 0, len(text), 1
    closes = _Closes(text)
    while i < n:
        c = text[i]
        if c == "\\" and text[i + 1 : i + 2] == "\n":
            i, line = i + 2, line + 1
        elif c in " \t\r\f\v":
            i += 1
        elif c == "\n":
            tokens.append((_SEP, line))
            i, line = i + 1, line + 1
        elif c == ";" or c == "&" or c == "|":
            tokens.append((_SEP, line))
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in "{}" and (i + 1 >= n or text[i + 1] in " \t\r\n;"):
            tokens.append((_LBRACE if c == "{" else _RBRACE, line))
            i += 1
        else:
            start_line = line
            parts: list[tuple[int, str, bool]] = []
            while i < n and text[i] not in " \t\r\f\v\n;&|":
                c = text[i]
                if c == "'":
                    end = text.find("'", i + 1)
                    if end < 0:
                        notes.add("unterminated ' quote", path, line)
                        end = n
                    parts.append((_LIT, text[i + 1 : end], True))
                    line += text.count("\n", i, end)
                    i = end + 1
                elif c == '"':
                    i += 1
                    buf: list[str] = []
                    while i < n and text[i] != '"':
                        if text[i] == "\\" and i + 1 < n and text[i + 1] in '$"\\\n':
                            if text[i + 1] != "\n":
                                buf.append(text[i + 1])
                            else:
                                line += 1
                            i += 2
                        elif text[i] == "$" and (m := _grub_var(text, i, closes)):
                            parts.append((_LIT, "".join(buf), True))
                            buf = []
                            parts.append((_VAR, m[0], True))
                            i = m[1]
                        else:
                            line += text[i] == "\n"
                            buf.append(text[i])
                            i += 1
                    if i >= n:
                        notes.add('unterminated " quote', path, start_line)
                    parts.append((_LIT, "".join(buf), True))
                    i += 1
                elif c == "\\" and i + 1 < n:
                    if text[i + 1] == "\n":
                        line += 1
                    else:
                        parts.append((_LIT, text[i + 1], True))
                    i += 2
                elif c == "$" and (m := _grub_var(text, i, closes)):
                    parts.append((_VAR, m[0], False))
                    i = m[1]
                else:
                    parts.append((_LIT, c, False))
                    i += 1
            tokens.append((_Word(_merge(parts), start_line), start_line))
    return tokens


class _Closes:
    """The next `}` at or after a position the lexer reaches (it only moves forward): one scan of
    the text in all, where a fresh `find` per `${` made a line of them quadratic."""

    def __init__(self, text: str) -> None:
        self.text, self.at = text, -2

    def after(self, i: int) -> int:
        if self.at != -1 and self.at < i:
            self.at = self.text.find("}", i)
        return self.at


def _grub_var(text: str, i: int, closes: _Closes) -> tuple[str, int] | None:
    if text[i + 1 : i + 2] == "{":
        end = closes.after(i + 2)
        return None if end < 0 else (text[i + 2 : end], end + 1)
    m = _VARNAME.match(text, i + 1)
    return (m.group(0), m.end()) if m else None


def _merge(parts: list[tuple[int, str, bool]]) -> tuple[tuple[int, str, bool], ...]:
    """Adjacent literals of the same quoting joined, once per run: joining them pairwise made a
    long word (one part per character) quadratic."""
    out: list[tuple[int, str, bool]] = []
    run: list[str] = []
    quoted = False
    for kind, text, q in parts:
        if kind == _LIT and not text and not q:
            continue
        if kind == _LIT and run and q == quoted:
            run.append(text)
            continue
        if run:
            out.append((_LIT, "".join(run), quoted))
            run = []
        if kind == _LIT:
            run, quoted = [text], q
        else:
            out.append((kind, text, q))
    if run:
        out.append((_LIT, "".join(run), quoted))
    return tuple(out)


@dataclass
class _Cmd:
    words: list[_Word]
    line: int


@dataclass
class _Block:  # menuentry / submenu
    kind: str
    words: list[_Word]
    body: list[_Node]
    line: int


@dataclass
class _If:
    branches: list[tuple[list[_Node], list[_Node]]]  # (condition, body); else: condition []
    line: int


_Node = _Cmd | _Block | _If


class _GrubParser:
    def __init__(self, tokens: list[tuple[_Token, int]], path: str, notes: _Notes) -> None:
        self.tokens, self.pos, self.path, self.notes = tokens, 0, path, notes

    def peek(self) -> _Token | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def line(self) -> int:
        return self.tokens[min(self.pos, len(self.tokens) - 1)][1] if self.tokens else 0

    def parse(self, stops: frozenset[str], depth: int = 0) -> tuple[list[_Node], str | None]:
        nodes: list[_Node] = []
        while True:
            tok = self.peek()
            if tok is None:
                return nodes, None
            if tok == _SEP:
                self.pos += 1
                continue
            if tok == _RBRACE:
                if "}" in stops:
                    self.pos += 1
                    return nodes, "}"
                self.notes.add("unmatched '}'", self.path, self.line())
                self.pos += 1
                continue
            kw = tok.keyword if isinstance(tok, _Word) else None
            if kw is not None and kw in stops:
                self.pos += 1
                return nodes, kw
            if depth > NESTING.value:
                self.notes.add(
                    f"nested deeper than the {NESTING.describe()} limit; rest ignored", self.path, self.line()
                )
                self.pos = len(self.tokens)
                return nodes, None
            if tok == _LBRACE:
                self.notes.add("'{' without menuentry", self.path, self.line())
                self.pos += 1
                self.parse(frozenset({"}"}), depth + 1)
                continue
            assert isinstance(tok, _Word)
            if kw == "if":
                self.pos += 1
                nodes.append(self.parse_if(tok.line, depth))
            elif kw in ("then", "elif", "else", "fi", "do", "done"):
                self.notes.add(f"unexpected '{kw}'", self.path, tok.line)
                self.pos += 1
            elif kw in ("for", "while", "until"):
                self.pos += 1
                self.notes.add(f"'{kw}' loop not evaluated", self.path, tok.line)
                self.parse(frozenset({"do"}), depth + 1)
                self.parse(frozenset({"done"}), depth + 1)
            else:
                words = self.words()
                if self.peek() == _LBRACE:
                    self.pos += 1
                    body, end = self.parse(frozenset({"}"}), depth + 1)
                    if end != "}":
                        self.notes.add("'{' never closed", self.path, tok.line)
                    if kw in ("menuentry", "submenu"):
                        nodes.append(_Block(kw, words[1:], body, tok.line))
                    elif kw != "function":
                        self.notes.add(f"block after '{kw}' ignored", self.path, tok.line)
                else:
                    if kw in ("menuentry", "submenu"):
                        self.notes.add(f"{kw} without '{{'", self.path, tok.line)
                    nodes.append(_Cmd(words, tok.line))

    def words(self) -> list[_Word]:
        words: list[_Word] = []
        while isinstance(tok := self.peek(), _Word):
            words.append(tok)
            self.pos += 1
        return words

    def parse_if(self, line: int, depth: int) -> _If:
        branches: list[tuple[list[_Node], list[_Node]]] = []
        while True:
            cond, end = self.parse(frozenset({"then"}), depth + 1)
            if end != "then":
                self.notes.add("'if' without 'then'", self.path, line)
                return _If(branches, line)
            body, end = self.parse(frozenset({"elif", "else", "fi"}), depth + 1)
            branches.append((cond, body))
            if end == "elif":
                continue
            if end == "else":
                body, end = self.parse(frozenset({"fi"}), depth + 1)
                branches.append(([], body))
            if end != "fi":
                self.notes.add("'if' without 'fi'", self.path, line)
            return _If(branches, line)


# GRUB sets these itself at run time; they are unknowable from the files.
_PLATFORM_VARS = frozenset(
    {"grub_platform", "grub_cpu", "prefix", "root", "cmdpath", "config_directory", "boot", "?"}
)


@dataclass
class _Item:
    title: str
    id: str | None
    line: int
    body: list[_Node]
    args: list[str]
    submenu: bool = False
    children: list[_Item] = field(default_factory=list)
    entry: BootEntry | None = None
    section: str = ""
    raw: dict[int, str] = field(default_factory=dict)  # loader lines' literal words, by line
    origin: str = ""  # the file it is written in (grub.cfg, or a custom.cfg it sources)
    lines: dict[str, int] = field(default_factory=dict)  # "kernel" / "hypervisor" → loader line


class _GrubScript:
    """Runs grub.cfg far enough to know its menu and its `default`."""

    def __init__(self, root: Root, path: str, env: dict[str, str], notes: _Notes) -> None:
        self.root, self.path, self.notes = root, path, notes
        self.env = dict(env)
        self.env.setdefault("feature_menuentry_id", "y")
        self.env.setdefault("menuentry_id_option", "--id")
        self.default_set: tuple[int, str] | None = None  # (line, raw text) of the last `default=`
        self.blscfg_line: int | None = None
        self.sections: list[tuple[int, int, str]] = []
        self.bls_hook: Callable[[], list[_Item]] = list
        self.sourced = 0

    def expand(self, words: Sequence[_Word], env: dict[str, str]) -> list[str]:
        out: list[str] = []
        for word in words:
            fields: list[str] = [""]
            had_quote = False
            for kind, text, quoted in word.parts:
                had_quote = had_quote or quoted
                value = text if kind == _LIT else env.get(text, "")
                if kind == _VAR and not quoted:
                    pieces = value.split()
                    if value[:1].isspace() and fields[-1]:
                        fields.append("")
                    for k, piece in enumerate(pieces):
                        if k:
                            fields.append("")
                        fields[-1] += piece
                    if value[-1:].isspace() and pieces:
                        fields.append("")
                else:
                    fields[-1] += value
            out.extend(f for f in fields if f or had_quote)
        return out

    @staticmethod
    def raw(words: Sequence[_Word]) -> str:
        out = []
        for word in words:
            text = "".join(t if kind == _LIT else "${" + t + "}" for kind, t, _ in word.parts)
            if any(quoted for _, _, quoted in word.parts) and "=" in text:
                key, _, value = text.partition("=")
                text = f'{key}="{value}"'
            out.append(text)
        return " ".join(out)

    def condition(self, nodes: list[_Node], env: dict[str, str]) -> bool | None:
        if not nodes or not isinstance(nodes[-1], _Cmd):
            return None
        words = nodes[-1].words
        if any(kind == _VAR and text in _PLATFORM_VARS for w in words for kind, text, _ in w.parts):
            return None
        argv = self.expand(words, env)
        if not argv:
            return None
        if argv[0] in ("true", "false"):
            return argv[0] == "true"
        if argv[0] == "[" and argv[-1] == "]":
            argv = argv[1:-1]
        elif argv[0] == "test":
            argv = argv[1:]
        else:
            return None
        return _test(argv)

    def run(self, nodes: list[_Node], menu: list[_Item], env: dict[str, str], top: bool) -> None:
        for node in nodes:
            if isinstance(node, _Cmd):
                self.command(node, menu, env, top)
            elif isinstance(node, _If):
                self.run_if(node, menu, env, top)
            else:
                argv = self.expand(node.words, env)
                self.register(node, argv, menu)

    def run_if(self, node: _If, menu: list[_Item], env: dict[str, str], top: bool) -> None:
        for cond, body in node.branches:
            verdict = True if not cond else self.condition(cond, env)
            if verdict is False:
                continue
            if verdict is None and _defines_menu(body):
                self.notes.add(
                    "condition depends on the machine; assumed true",
                    self.path,
                    node.line,
                    self.raw(cond[-1].words) if cond and isinstance(cond[-1], _Cmd) else "",
                )
            self.run(body, menu, env, top)
            return

    def command(self, node: _Cmd, menu: list[_Item], env: dict[str, str], top: bool) -> None:
        argv = self.expand(node.words, env)
        if not argv:
            return
        name = argv[0]
        assignments: list[str] = []
        if name == "set":
            assignments = [a for a in argv[1:] if "=" in a]
        elif "=" in name and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", name) and node.words[0].parts:
            assignments = [name]
        elif name == "unset":
            for var in argv[1:]:
                env.pop(var, None)
        elif name == "blscfg" and top:
            self.blscfg_line = node.line
            menu.extend(self.bls_hook())
        elif name in ("source", "configfile", "extract_entries_source") and top:
            self.source(node, menu, env)
        for assignment in assignments:
            key, _, value = assignment.partition("=")
            env[key] = value
            if key == "default" and top:
                self.default_set = (node.line, self.raw(node.words))

    def source(self, node: _Cmd, menu: list[_Item], env: dict[str, str]) -> None:
        """41_custom's `source ${config_directory}/custom.cfg`: read it when it is in the root."""
        if len(node.words) < 2:
            return
        directory = self.path.rsplit("/", 1)[0]
        local = {**env, **{v: "/" + directory for v in ("prefix", "config_directory")}}
        argv = self.expand(node.words[1:2], local)
        if not argv:
            return
        target = _boot_path(self.root, argv[0], ("",))
        text = self.root.read_text(target) if self.sourced < 4 else None
        if text is None:
            return  # GRUB guards these with `[ -f … ]`: a missing file is normal
        self.sourced += 1
        nodes, _ = _GrubParser(_grub_lex(text, target, self.notes), target, self.notes).parse(frozenset())
        path, self.path = self.path, target
        self.run(nodes, menu, env, True)
        self.path = path

    def register(self, node: _Block, argv: list[str], menu: list[_Item]) -> None:
        title, ident, rest = "", None, []
        k = 0
        while k < len(argv):
            arg = argv[k]
            if arg == "--id" and k + 1 < len(argv):
                ident, k = argv[k + 1], k + 2
                continue
            if arg in ("--class", "--users", "--hotkey", "--source") and k + 1 < len(argv):
                k += 2
                continue
            if arg.startswith("--"):
                k += 1
                continue
            if not title:
                title = arg
            else:
                rest.append(arg)
            k += 1
        submenu = node.kind == "submenu"
        menu.append(_Item(title, ident, node.line, node.body, rest, submenu, origin=self.path))

    def section_of(self, line: int) -> str:
        for start, end, name in self.sections:
            if start <= line <= end:
                return name
        return ""


def _test(argv: list[str]) -> bool | None:
    """GRUB's `test` (grub-core/commands/test.c) on known strings: True, False or None."""
    if "-o" in argv:
        k = argv.index("-o")
        left, right = _test(argv[:k]), _test(argv[k + 1 :])
        return True if True in (left, right) else None if None in (left, right) else False
    if "-a" in argv:
        k = argv.index("-a")
        left, right = _test(argv[:k]), _test(argv[k + 1 :])
        return False if False in (left, right) else None if None in (left, right) else True
    if argv[:1] == ["!"]:
        inner = _test(argv[1:])
        return None if inner is None else not inner
    if len(argv) == 0:
        return False
    if len(argv) == 1:
        return argv[0] != ""
    if len(argv) == 2 and argv[0] in ("-n", "-z"):
        return (argv[1] != "") == (argv[0] == "-n")
    if len(argv) == 3 and argv[1] in ("=", "==", "!="):
        return (argv[0] == argv[2]) == (argv[1] != "!=")
    return None


def _defines_menu(nodes: list[_Node]) -> bool:
    for node in nodes:
        if isinstance(node, _Block):
            return True
        if isinstance(node, _If) and any(_defines_menu(b) for _, b in node.branches):
            return True
        if isinstance(node, _Cmd) and any(
            (w.literal or "").startswith(("default=", "blscfg")) for w in node.words[:2]
        ):
            return True
    return False


# Loader commands inside a menuentry.
_LINUX = frozenset({"linux", "linux16", "linuxefi", "kernel"})
_INITRD = frozenset({"initrd", "initrd16", "initrdefi"})
_HYPERVISOR = frozenset({"multiboot", "multiboot2", "xen_hypervisor"})
_MODULE = frozenset({"module", "module2", "xen_module"})


@dataclass
class _Loader:
    kernel: tuple[str, list[str], int] | None = None
    initrds: list[tuple[str, int]] = field(default_factory=list)
    hypervisor: tuple[str, list[str], int] | None = None
    modules: list[tuple[str, list[str], int]] = field(default_factory=list)
    raw: dict[int, str] = field(default_factory=dict)  # line -> literal words (for staleness)


class _EntryRunner(_GrubScript):
    def __init__(self, parent: _GrubScript) -> None:
        self.__dict__.update(parent.__dict__)
        self.loader = _Loader()

    def command(self, node: _Cmd, menu: list[_Item], env: dict[str, str], top: bool) -> None:
        argv = self.expand(node.words, env)
        if not argv:
            return
        name, args = argv[0], argv[1:]
        lit = [w.literal for w in node.words[1:]]
        self.loader.raw[node.line] = " ".join(w for w in lit if w is not None and "$" not in w)
        if name in _MODULE or name in _HYPERVISOR:
            while args and args[0].startswith("--"):  # --nounzip, --type=...
                args = args[1:]
        if name in _LINUX and args:
            self.loader.kernel = (args[0], args[1:], node.line)
        elif name in _INITRD:
            self.loader.initrds.extend((a, node.line) for a in args if not a.startswith("--"))
        elif name in _HYPERVISOR and args:
            self.loader.hypervisor = (args[0], _drop_placeholder(args[1:]), node.line)
        elif name in _MODULE and args:
            self.loader.modules.append((args[0], _drop_placeholder(args[1:]), node.line))
        else:
            super().command(node, menu, env, False)

    def register(self, node: _Block, argv: list[str], menu: list[_Item]) -> None:
        self.notes.add("menuentry inside an entry ignored", self.path, node.line)


def _loader_lines(loader: _Loader) -> dict[str, int]:
    """Where the dom0/Linux kernel and the hypervisor are loaded (their command lines)."""
    lines = {}
    if loader.hypervisor is not None:
        lines["hypervisor"] = loader.hypervisor[2]
        if loader.modules:
            lines["kernel"] = loader.modules[0][2]
    elif loader.kernel is not None:
        lines["kernel"] = loader.kernel[2]
    return lines


def _drop_placeholder(args: list[str]) -> list[str]:
    # Debian's 20_linux_xen writes `placeholder` where GRUB legacy put argv[0]; it is no option.
    return args[1:] if args[:1] == ["placeholder"] else args


def _entry_from_loader(
    root: Root, item: _Item, loader: _Loader, path: str, notes: _Notes, menu_path: str
) -> BootEntry:
    evidence = [Evidence(path, item.line, f"menuentry '{item.title}'")]
    bases = ("boot/",)
    kernel_path = cmdline = xen_cmdline = xen_path = None
    initrds: list[str] = []
    is_xen = False
    if loader.hypervisor is not None:
        hv_path, hv_args, hv_line = loader.hypervisor
        xen_path = _boot_path(root, hv_path, bases)
        is_xen = xen_path.rsplit("/", 1)[-1].lower().startswith("xen")
        if not is_xen:
            notes.add("multiboot image is not Xen; treated as the kernel's loader", path, hv_line)
        xen_cmdline = _join(hv_args) if is_xen else None
        evidence.append(Evidence(path, hv_line, _join([hv_path, *hv_args])))
        mods = [m for m in loader.modules if not m[0].rsplit("/", 1)[-1].startswith("xenpolicy")]
        if mods:
            k_path, k_args, k_line = mods[0]
            kernel_path, cmdline = _boot_path(root, k_path, bases), _join(k_args)
            evidence.append(Evidence(path, k_line, _join([k_path, *k_args])))
            for m_path, _, m_line in mods[1:]:
                initrds.append(_boot_path(root, m_path, bases))
                evidence.append(Evidence(path, m_line, m_path))
        else:
            notes.add("Xen entry without a dom0 kernel module", path, hv_line)
    elif loader.kernel is not None:
        k_path, k_args, k_line = loader.kernel
        kernel_path, cmdline = _boot_path(root, k_path, bases), _join(k_args)
        evidence.append(Evidence(path, k_line, _join([k_path, *k_args])))
        for i_path, _ in loader.initrds:
            initrds.append(_boot_path(root, i_path, bases))
        if loader.initrds:
            evidence.append(Evidence(path, loader.initrds[0][1], "initrd"))
    return BootEntry(
        source="grub",
        title=item.title,
        id=item.id,
        is_xen=is_xen,
        kernel_path=kernel_path,
        kernel_release=kernel_release_of(kernel_path),
        cmdline=cmdline or "",
        xen_cmdline=xen_cmdline,
        initrd_paths=tuple(initrds),
        evidence=tuple(evidence),
        menu_path=menu_path,
        xen_path=xen_path,
    )


@dataclass
class _GrubMenu:
    path: str
    items: list[_Item]
    script: _GrubScript
    env_path: str | None
    grubenv: dict[str, tuple[str, int]]


def _read_grub(root: Root, path: str, notes: _Notes) -> _GrubMenu | None:
    text = root.read_text(path)
    if text is None:
        return None
    directory = path.rsplit("/", 1)[0]
    grubenv, env_path = _read_grubenv(root, f"{directory}/grubenv")
    env = {k: v for k, (v, _) in grubenv.items()}
    script = _GrubScript(root, path, env, notes)
    begin: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if m := re.match(r"### (BEGIN|END) (\S+) ###", line):
            if m.group(1) == "BEGIN":
                begin[m.group(2)] = number
            elif m.group(2) in begin:
                name = m.group(2).rsplit("/", 1)[-1]
                script.sections.append((begin.pop(m.group(2)), number, name))
    bls_notes = notes

    def bls() -> list[_Item]:
        found = _read_bls(root, ("boot/loader/entries", *_BLS_DIRS), bls_notes, script.env)
        return [_Item(e.title, e.id, 0, [], [], entry=e, section="blscfg") for e in _bls_sorted(found)]

    script.bls_hook = bls
    nodes, _ = _GrubParser(_grub_lex(text, path, notes), path, notes).parse(frozenset())
    items: list[_Item] = []
    script.run(nodes, items, script.env, True)

    # Entries run when chosen, with the environment grub.cfg left behind.
    def realise(menu: list[_Item], prefix: str, depth: int) -> None:
        for index, item in enumerate(menu):
            where = f"{prefix}{index}"
            if item.origin == path:
                item.section = item.section or script.section_of(item.line)
            if item.entry is not None:
                item.entry = _with_menu_path(item.entry, where)
                continue
            env = dict(script.env)
            env.update({str(k): a for k, a in enumerate(item.args, 1)})
            if item.submenu:
                if depth < NESTING.value:
                    script.path = item.origin
                    script.run(item.body, item.children, env, False)
                    script.path = path
                    realise(item.children, f"{where}>", depth + 1)
                continue
            runner = _EntryRunner(script)
            runner.path = item.origin
            runner.run(item.body, [], env, False)
            item.entry = _entry_from_loader(root, item, runner.loader, item.origin, notes, where)
            item.raw = runner.loader.raw
            item.lines = _loader_lines(runner.loader)

    realise(items, "", 0)
    return _GrubMenu(path, items, script, env_path, grubenv)


def _with_menu_path(entry: BootEntry, where: str) -> BootEntry:
    return BootEntry(**{**entry.__dict__, "menu_path": where})


def _flatten(items: list[_Item]) -> list[_Item]:
    out: list[_Item] = []
    for item in items:
        out.extend(_flatten(item.children) if item.submenu else [item])
    return out


def _split_default(value: str) -> list[str]:
    # grub-core/normal/menu.c menuentry_eq(): `>` separates submenu levels, `>>` is a literal `>`.
    parts, buf, i = [], [], 0
    while i < len(value):
        if value[i] == ">":
            if value[i + 1 : i + 2] == ">":
                buf.append(">")
                i += 2
                continue
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(value[i])
        i += 1
    parts.append("".join(buf))
    return parts


def _pick_grub(menu: _GrubMenu, notes: _Notes) -> tuple[_Item | None, str]:
    value = menu.script.env.get("default", "")
    items, trail = menu.items, []
    if not items:
        return None, "grub.cfg defines no menu entry"
    chosen: _Item | None = None
    parts = _split_default(value) if value else ["0"]
    for depth, part in enumerate(parts):
        found: _Item | None = None
        if not items:  # an empty submenu: GRUB shows an empty menu, nothing boots by itself
            notes.add(
                f"default '{value}' leads into an empty submenu", menu.path, chosen.line if chosen else None
            )
            trail.append("empty submenu")
            return None, "; ".join(trail)
        if re.fullmatch(r"\d+", part):
            if int(part) < len(items):
                found = items[int(part)]
        else:
            found = next((i for i in items if part in (i.title, i.id)), None)
        if found is None:
            line = menu.script.default_set[0] if menu.script.default_set else None
            notes.add(
                f"default '{value}' matches no menu entry"
                + (f" at level {depth + 1}" if depth else "")
                + "; GRUB falls back to the first entry",
                menu.path,
                line,
            )
            trail.append(f"'{part}' not found, first entry used")
            found = items[0]
        chosen = found
        if not found.submenu:
            if depth + 1 < len(parts):
                notes.add(f"default '{value}' goes past a menuentry", menu.path, found.line)
            break
        items = found.children
        if depth + 1 == len(parts):
            while chosen is not None and chosen.submenu:
                # A submenu as default opens it, with its own first entry as default.
                chosen = chosen.children[0] if chosen.children else None
            break
    return chosen, "; ".join(trail)


# --------------------------------------------------------------------------------------------------
# etc/default/grub: a shell fragment sourced by grub-mkconfig


@dataclass(frozen=True)
class _ShVar:
    value: str | None  # None: not evaluable here
    path: str
    line: int
    certain: bool  # False when assigned under a condition or built from an unknown


_SH_SPECIAL = re.compile(r"[`]|\$\(")


class _ShellDefaults:
    def __init__(self, root: Root | None, notes: _Notes) -> None:
        self.vars: dict[str, _ShVar] = {}
        self.notes = notes
        if root is None:
            return
        paths = ["etc/default/grub"] + [
            f"etc/default/grub.d/{n}"
            for n in root.listdir("etc/default/grub.d")
            if n.endswith(".cfg")  # grub-mkconfig: `for x in /etc/default/grub.d/*.cfg`
        ]
        for path in paths:
            text = root.read_text(path)
            if text is not None:
                self.source(text, path)

    def get(self, name: str) -> _ShVar | None:
        return self.vars.get(name)

    def source(self, text: str, path: str) -> None:
        # One entry per open block: True/False when its condition is known, None when not.
        stack: list[bool | None] = []
        taken: list[bool] = []  # per `if`: did an earlier branch run for sure
        for line_no, words, conditional in _sh_commands(text):
            head = words[0]
            if head in ("then", "do", "!") and len(words) > 1:
                words = words[1:]
                head = words[0]
            elif head in ("then", "do"):
                continue
            if head == "if":
                stack.append(self.test(words[1:]))
                taken.append(stack[-1] is True)
                continue
            if head in ("elif", "else") and stack:
                if taken[-1]:
                    stack[-1] = False
                elif head == "else":
                    stack[-1] = None if stack[-1] is None else not stack[-1]
                else:
                    stack[-1] = self.test(words[1:]) if stack[-1] is False else None
                    taken[-1] = stack[-1] is True
                words = words[1:] if head == "else" else []
                if not words:
                    continue
                head = words[0]
            if head in ("case", "for", "while", "until", "{", "("):
                stack.append(None)
                taken.append(False)
                self.notes.add(f"shell '{head}' block not evaluated", path, line_no)
                continue
            if head in ("fi", "esac", "done", "}", ")"):
                if stack:
                    stack.pop()
                    taken.pop()
                continue
            if False in stack:
                continue  # a branch that does not run
            certain = None not in stack and not conditional
            if head in ("export", "readonly"):
                words = words[1:]
            assigns = [w for w in words if re.match(r"[A-Za-z_][A-Za-z0-9_]*=", w)]
            if words and len(assigns) == len(words):
                for word in words:
                    name, _, raw = word.partition("=")
                    value, known = self.evaluate(raw)
                    if value is None:
                        self.notes.add(f"cannot evaluate {name}", path, line_no, word)
                    self.vars[name] = _ShVar(value, path, line_no, certain and known)
            elif head in ("echo", "printf", ":", "true") or not words:
                continue
            else:
                for word in assigns:  # `A=x cmd`, or a command substitution split apart
                    name = word.partition("=")[0]
                    self.vars[name] = _ShVar(None, path, line_no, False)
                self.notes.add("shell command not evaluated", path, line_no, " ".join(words))

    def test(self, words: list[str]) -> bool | None:
        """`[ A = B ]`, `[ -n A ]`, `[ A ]` with evaluable words; None for anything else."""
        if len(words) < 2 or words[0] not in ("[", "test"):
            return None
        args = words[1:-1] if words[0] == "[" and words[-1] == "]" else words[1:]
        values = []
        for word in args:
            value, known = self.evaluate(word)
            if value is None or not known:
                return None
            values.append(value)
        if len(values) == 1:
            return values[0] != ""
        if len(values) == 2 and values[0] in ("-n", "-z"):
            return (values[1] != "") == (values[0] == "-n")
        if len(values) == 3 and values[1] in ("=", "==", "!="):
            return (values[0] == values[2]) == (values[1] != "!=")
        return None

    def evaluate(self, raw: str) -> tuple[str | None, bool]:
        """A shell word (quotes still in it) → its value; (None, False) if it runs a command."""
        if _SH_SPECIAL.search(raw):
            return None, False
        out: list[str] = []
        certain = True
        i = 0
        quote = ""
        while i < len(raw):
            c = raw[i]
            if quote == "'":
                if c == "'":
                    quote = ""
                else:
                    out.append(c)
                i += 1
            elif c == "'" and not quote:
                quote = "'"
                i += 1
            elif c == '"':
                quote = "" if quote else '"'
                i += 1
            elif c == "\\" and raw[i + 1 : i + 2] == "\n":
                i += 2  # a continuation, inside double quotes too (POSIX 2.2.1, 2.2.3)
            elif c == "\\" and i + 1 < len(raw):
                if not quote or raw[i + 1] in '$`"\\':
                    out.append(raw[i + 1])
                else:
                    out.append(c + raw[i + 1])
                i += 2
            elif c == "$":
                m = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*)").match(raw, i + 1)
                if not m:
                    if raw[i + 1 : i + 2] == "{":
                        return None, False  # ${x:-y} and friends
                    out.append(c)
                    i += 1
                    continue
                var = self.vars.get(m.group(1) or m.group(2))
                if var is not None and var.value is None:
                    return None, False
                if var is not None:
                    out.append(var.value or "")
                    certain = certain and var.certain
                i = m.end()
            else:
                out.append(c)
                i += 1
        return "".join(out), certain


def shell_variables(text: str, path: str = "etc/default/grub") -> dict[str, str | None]:
    """What sourcing this one shell fragment sets, as this reader evaluates it (None: not evaluable).
    The fixes read their own edit back with it: the model that predicts is the one that checks."""
    defaults = _ShellDefaults(None, _Notes())
    defaults.source(text, path)
    return {name: var.value for name, var in defaults.vars.items()}


def _subst_end(text: str, i: int, depth: int = 0) -> int:
    """Index just past the `)` closing a `$(` whose body starts at `i` (quotes and nesting)."""
    parens = 1
    while i < len(text) and depth < NESTING.value:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "'" or c == "`":
            end = text.find(c, i + 1)
            i = len(text) if end < 0 else end + 1
            continue
        if c == '"':
            i += 1
            while i < len(text) and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                elif text[i] == "$" and text[i + 1 : i + 2] == "(":
                    i = _subst_end(text, i + 2, depth + 1) - 1
                i += 1
            i += 1
            continue
        if c == "$" and text[i + 1 : i + 2] == "(":
            i = _subst_end(text, i + 2, depth + 1)
            continue
        parens += c == "("
        parens -= c == ")"
        i += 1
        if parens == 0:
            return i
    return len(text)


def _sh_commands(text: str) -> Iterable[tuple[int, list[str], bool]]:
    """Simple commands of a shell file: (line, words with quotes kept, after && / ||)."""
    words: list[str] = []
    buf: list[str] = []
    line = start = 1
    conditional = False
    quote = ""
    i, n = 0, len(text)

    def flush_word() -> None:
        if buf:
            words.append("".join(buf))
            buf.clear()

    while i < n:
        c = text[i]
        if quote:
            buf.append(c)
            if c == "\\" and quote == '"' and i + 1 < n:
                buf.append(text[i + 1])
                line += text[i + 1] == "\n"
                i += 2
                continue
            if c == quote:
                quote = ""
            line += c == "\n"
            i += 1
            continue
        if c in "'\"`":
            quote = c
            buf.append(c)
        elif c == "$" and text[i + 1 : i + 2] == "(":
            end = _subst_end(text, i + 2)  # a command substitution is part of one word
            buf.append(text[i:end])
            line += text.count("\n", i, end)
            i = end
            continue
        elif c == "\\" and i + 1 < n:
            if text[i + 1] == "\n":
                line += 1
            else:
                buf.append(text[i : i + 2])
            i += 2
            continue
        elif c == "#" and not buf:
            while i < n and text[i] != "\n":
                i += 1
            continue
        elif c in " \t\r":
            flush_word()
        elif c in "\n;&|":
            flush_word()
            if words:
                yield start, list(words), conditional
            words.clear()
            conditional = c in "&|" and text[i + 1 : i + 2] == c
            if conditional:
                i += 1
            line += c == "\n"
            i += 1
            start = line
            continue
        else:
            if not words and not buf:
                start = line
            buf.append(c)
        i += 1
    flush_word()
    if words:
        yield start, list(words), conditional


# --------------------------------------------------------------------------------------------------
# Staleness: does the generated entry still carry what etc/default/grub says?


def grub_variables(root: Root) -> dict[str, str | None]:
    """etc/default/grub and grub.d/*.cfg as grub-mkconfig sources them: name -> value (None when
    not evaluable here)."""
    return {name: var.value for name, var in _ShellDefaults(root, _Notes()).vars.items()}


# Words the grub.d scripts add themselves (10_linux, 20_linux_xen): not from the variables.
_GENERATED = frozenset({"ro", "rw", "single", "recovery", "nomodeset", "dis_ucode_ldr"})
_GENERATED_PREFIX = ("root=", "init=", "rootflags=", "vt.handoff=", "flask=")


def _own_words(words: Iterable[str]) -> set[str]:
    return {w for w in words if w not in _GENERATED and not w.startswith(_GENERATED_PREFIX)}


def _stale_cmdline(
    entry: BootEntry,
    item: _Item,
    defaults: _ShellDefaults,
    menu: _GrubMenu,
    notes: _Notes,
) -> list[Staleness]:
    if not item.section.endswith(("10_linux", "20_linux_xen")):
        return []  # a hand-written entry (40_custom…) never sees the variables
    recovery = "recovery" in (entry.id or "") or "single" in entry.cmdline.split()
    raw = item.raw
    out: list[Staleness] = []

    def names(pairs: Sequence[tuple[str, str]]) -> list[str]:
        # 20_linux_xen: a non-empty *_XEN_REPLACE* variable replaces its Linux counterpart.
        chosen = []
        for plain, replace in pairs:
            var = defaults.get(replace) if replace else None
            # Unknown value: keep the replacement, so the check below skips rather than guesses.
            unknown = var is not None and (var.value is None or not var.certain)
            chosen.append(replace if var is not None and (var.value or unknown) else plain)
        return chosen

    linux_vars = [("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_XEN_REPLACE" if entry.is_xen else "")]
    if not recovery:
        linux_vars.append(
            (
                "GRUB_CMDLINE_LINUX_DEFAULT",
                "GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT" if entry.is_xen else "",
            )
        )
    loader = item.lines
    checks = [("dom0-cmdline" if entry.is_xen else "cmdline", names(linux_vars), loader.get("kernel"))]
    if entry.is_xen:
        xen_vars = ["GRUB_CMDLINE_XEN"] + ([] if recovery else ["GRUB_CMDLINE_XEN_DEFAULT"])
        checks.append(("xen-cmdline", xen_vars, loader.get("hypervisor")))
    for kind, var_names, line in checks:
        expected: list[str] = []
        evidence: list[Evidence] = []
        unknown = False
        for name in var_names:
            var = defaults.get(name)
            if var is None:
                continue
            if var.value is None or not var.certain:
                notes.add(f"{name} not evaluable; staleness of it not checked", var.path, var.line)
                unknown = True
                continue
            expected.extend(var.value.split())
            evidence.append(Evidence(var.path, var.line, f'{name}="{var.value}"'))
        if unknown or line is None:
            continue
        actual = raw.get(line, "").split()
        if actual:
            actual = actual[1:]  # the image path
        actual = [w for w in actual if not w.startswith("--") and w != "placeholder"]
        want, have = _own_words(expected), _own_words(actual)
        missing = tuple(sorted(want - have))
        extra = tuple(sorted(have - want))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"etc/default/grub has {', '.join(missing)} but grub.cfg lacks it")
            if extra:
                parts.append(f"grub.cfg has {', '.join(extra)} that etc/default/grub no longer sets")
            label = {"xen-cmdline": "Xen", "dom0-cmdline": "dom0", "cmdline": "kernel"}[kind]
            out.append(
                Staleness(
                    kind=kind,
                    message=f"{menu.path} not regenerated ({label} command line): "
                    + "; ".join(parts)
                    + " — run update-grub / grub-mkconfig",
                    missing=missing,
                    extra=extra,
                    evidence=(*evidence, Evidence(menu.path, line, raw.get(line, ""))),
                )
            )
    return out


def _stale_default(defaults: _ShellDefaults, menu: _GrubMenu) -> list[Staleness]:
    var = defaults.get("GRUB_DEFAULT")
    setting = menu.script.default_set
    if var is None or var.value is None or not var.certain or setting is None:
        return []
    line, raw = setting
    if menu.script.section_of(line) != "00_header" or "next_entry" in raw:
        return []  # a one-shot (grub-reboot) or hand-made default: not what 00_header writes
    current = raw.split("=", 1)[-1].strip().strip("'\"")
    # 00_header: `saved` becomes `${saved_entry}`, anything else is written as is.
    wanted = "${saved_entry}" if var.value == "saved" else var.value
    if current == wanted or (var.value == "saved" and "saved_entry" in current):
        return []
    return [
        Staleness(
            kind="default",
            message=f"{menu.path} not regenerated: GRUB_DEFAULT={var.value} but grub.cfg sets "
            f"default={current} — run update-grub / grub-mkconfig",
            missing=(var.value,),
            extra=(current,),
            evidence=(
                Evidence(var.path, var.line, f"GRUB_DEFAULT={var.value}"),
                Evidence(menu.path, line, raw),
            ),
        )
    ]


# --------------------------------------------------------------------------------------------------
# BLS type #1 entries (uapi-group Boot Loader Specification)


@dataclass(frozen=True)
class _Bls:
    entry: BootEntry
    sort_key: str | None
    machine_id: str | None
    version: str | None
    spent: bool  # boot counting: no tries left


def _read_bls(
    root: Root, dirs: Sequence[str], notes: _Notes, env: dict[str, str] | None = None
) -> list[_Bls]:
    """BLS entries in the given directories. `env`: grub's variables when blscfg reads them."""
    found: list[_Bls] = []
    seen: set[str] = set()
    for directory in dict.fromkeys(dirs):
        partition = directory[: -len("loader/entries")]  # paths are relative to this partition
        for name in root.listdir(directory):
            path = f"{directory}/{name}"
            if not name.endswith(".conf") or path in seen:
                continue
            seen.add(path)
            text = root.read_text(path)
            if text is not None and (bls := _parse_bls(root, text, path, partition, notes, env)):
                found.append(bls)
    return found


_BLS_KNOWN = frozenset(
    {"architecture", "devicetree-overlay", "grub_users", "grub_arg", "grub_class", "uki", "profile"}
)


def _parse_bls(
    root: Root, text: str, path: str, partition: str, notes: _Notes, env: dict[str, str] | None
) -> _Bls | None:
    keys: dict[str, tuple[str, int]] = {}
    options: list[tuple[str, int]] = []
    initrds: list[tuple[str, int]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, value = [*line.split(None, 1), ""][:2]
        value = value.strip()
        if key == "options":
            options.append((value, number))
        elif key == "initrd":
            initrds.append((value, number))
        elif key in ("title", "version", "linux", "efi", "machine-id", "sort-key", "devicetree"):
            keys[key] = (value, number)
        elif key not in _BLS_KNOWN:
            notes.add(f"unknown BLS key '{key}'", path, number, line)
    # Boot counting: `NAME+LEFT-DONE.conf`; the id has no counter (systemd-boot, bootctl).
    stem = path.rsplit("/", 1)[-1][: -len(".conf")]
    tries = re.search(r"\+(\d+)(?:-\d+)?$", stem)
    ident = stem[: tries.start()] if tries else stem
    if "linux" not in keys:
        notes.add("BLS entry without 'linux' (not a Linux entry)", path)
        return None
    bases = (partition,)
    kernel_written, kernel_line = keys["linux"]
    kernel_path = _boot_path(root, kernel_written, bases)
    opts = " ".join(v for v, _ in options)
    if env is not None:  # grub's blscfg expands `$kernelopts` and friends from grubenv
        for var in sorted(set(re.findall(r"\$\{?([A-Za-z_]\w*)", opts)) - set(env)):
            notes.add(f"${var} is not set (grubenv): it expands to nothing", path, options[0][1])
        opts = re.sub(
            r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)",
            lambda m: env.get(m.group(1) or m.group(2), ""),
            opts,
        )
    version = keys.get("version", ("", 0))[0]
    release = kernel_release_of(kernel_path)
    if release is None and version[:1].isdigit():
        release = version
    evidence = [Evidence(path, kernel_line, f"linux {kernel_written}")]
    evidence.extend(Evidence(path, n, f"options {v}") for v, n in options)
    evidence.extend(Evidence(path, n, f"initrd {v}") for v, n in initrds)
    entry = BootEntry(
        source="bls",
        title=keys.get("title", (ident, 0))[0] or ident,
        id=ident,
        is_xen=False,
        kernel_path=kernel_path,
        kernel_release=release,
        cmdline=_join(opts.split()),
        xen_cmdline=None,
        initrd_paths=tuple(_boot_path(root, v, bases) for v, _ in initrds),
        evidence=tuple(evidence),
    )
    return _Bls(
        entry,
        keys["sort-key"][0] if "sort-key" in keys else None,
        keys["machine-id"][0] if "machine-id" in keys else None,
        version or None,
        bool(tries and tries.group(1) == "0"),
    )


def _bls_sorted(found: list[_Bls]) -> list[BootEntry]:
    """systemd-boot's order (src/boot/boot.c boot_entry_compare), newest first."""

    def compare(a: _Bls, b: _Bls) -> int:
        if a.spent != b.spent:  # entries with no tries left go last
            return 1 if a.spent else -1
        if (a.sort_key is None) != (b.sort_key is None):
            return 1 if a.sort_key is None else -1
        if a.sort_key is not None and b.sort_key is not None:
            if a.sort_key != b.sort_key:
                return -1 if a.sort_key < b.sort_key else 1
            if a.machine_id != b.machine_id:
                return -1 if (a.machine_id or "") < (b.machine_id or "") else 1
            r = -_strverscmp(a.version or "", b.version or "")
            if r:
                return r
        return -_strverscmp(a.entry.id or "", b.entry.id or "")

    return [b.entry for b in sorted(found, key=functools.cmp_to_key(compare))]


def _loader_conf_default(root: Root) -> tuple[str, Evidence] | None:
    for path in _LOADER_CONFS:
        text = root.read_text(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            key, _, value = line.strip().partition(" ")
            if key == "default" and value.strip():
                return value.strip(), Evidence(path, number, line.strip())
    return None


def _pick_bls(root: Root, ordered: list[BootEntry], notes: _Notes) -> tuple[BootEntry | None, str]:
    if not ordered:
        return None, "no BLS entries"
    efivars_dir = "sys/firmware/efi/efivars"
    for var, label in (("LoaderEntryOneShot", "one-shot"), ("LoaderEntryDefault", "default")):
        data = _efivar(root, var, _EFI_LOADER)
        if data:
            wanted = _utf16z(data)
            for e in ordered:
                if wanted in (e.id, f"{e.id}.conf"):
                    return e, f"EFI variable {var}='{wanted}' ({efivars_dir}) sets the {label} entry"
            notes.add(f"{var}='{wanted}' names no entry", f"{efivars_dir}/{var}-{_EFI_LOADER}")
    setting = _loader_conf_default(root)
    if setting is not None:
        pattern, evidence = setting
        if pattern == "@saved":
            data = _efivar(root, "LoaderEntryLastBooted", _EFI_LOADER)
            pattern = _utf16z(data) if data else ""
        for e in ordered:
            if pattern and any(fnmatch.fnmatchcase(x, pattern) for x in (e.id or "", f"{e.id}.conf")):
                return e, f"loader.conf default '{pattern}' ({evidence.path}:{evidence.line})"
        notes.add(f"loader.conf default '{pattern}' matches no entry", evidence.path, evidence.line)
    first = ordered[0]
    return first, "no default set: the first entry in systemd-boot's order (sort-key, then newest version)"


# --------------------------------------------------------------------------------------------------
# Xen's EFI loader: xen.efi reads XEN.cfg next to itself (xen/common/efi/boot.c)


def _xen_cfg_candidates(root: Root) -> list[str]:
    found: list[str] = []
    for esp in _ESPS:
        for vendor in root.listdir(f"{esp}/EFI"):
            directory = f"{esp}/EFI/{vendor}"
            names = root.listdir(directory)
            for name in names:
                lower = name.lower()
                if lower.startswith("xen") and lower.endswith(".efi"):
                    cfg = _cfg_for_efi(root, directory, name)
                    if cfg and cfg not in found:
                        found.append(cfg)
            for name in names:
                if name.lower().startswith("xen") and name.lower().endswith(".cfg"):
                    cfg = f"{directory}/{name}"
                    if cfg not in found:
                        found.append(cfg)
    return found


def _cfg_for_efi(root: Root, directory: str, efi_name: str) -> str | None:
    # boot.c: replace the tail after the last '.' / '-' by ".cfg", shortening until one exists:
    # xen-4.17.efi → xen-4.17.cfg, xen-4.cfg, xen.cfg.
    stem = efi_name
    while True:
        cut = max(stem.rfind("."), stem.rfind("-"))
        if cut <= 0:
            return None
        stem = stem[:cut]
        if root.exists(f"{directory}/{stem}.cfg"):
            return f"{directory}/{stem}.cfg"


def _read_xen_cfg(
    root: Root, path: str, notes: _Notes
) -> tuple[list[BootEntry], str | None, Evidence | None]:
    text = root.read_text(path) or ""
    directory = path.rsplit("/", 1)[0]
    sections: dict[str, dict[str, tuple[str, int]]] = {}
    order: list[str] = []
    current: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
            sections.setdefault(current, {})
            order.append(current)
        elif "=" in line and current is not None:
            key, _, value = line.partition("=")
            sections[current].setdefault(key.strip(), (value.strip(), number))
        else:
            notes.add("not a xen.cfg line", path, number, raw)
    default = sections.get("global", {}).get("default")
    if "chain" in sections.get("global", {}):
        notes.add("chained xen.cfg not followed", path, sections["global"]["chain"][1])
    entries: list[BootEntry] = []
    for name in order:
        values = sections[name]
        if name == "global" or "kernel" not in values:
            continue
        kernel, k_line = values["kernel"]
        k_file, _, k_args = kernel.partition(" ")
        options, o_line = values.get("options", ("", 0))
        evidence = [Evidence(path, k_line, f"kernel={kernel}")]
        if o_line:
            evidence.append(Evidence(path, o_line, f"options={options}"))
        ramdisks = []
        if "ramdisk" in values:
            r_file, r_line = values["ramdisk"]
            ramdisks.append(f"{directory}/{r_file.split()[0].lstrip('/')}" if r_file else "")
            evidence.append(Evidence(path, r_line, f"ramdisk={r_file}"))
        # Files are read from the directory xen.efi (and xen.cfg) is in.
        kernel_path = f"{directory}/{k_file.lstrip('/')}"
        entries.append(
            BootEntry(
                source="xen.cfg",
                title=name,
                id=name,
                is_xen=True,
                kernel_path=kernel_path,
                kernel_release=kernel_release_of(kernel_path),
                cmdline=_join(k_args.split()),
                xen_cmdline=_join(options.split()),
                initrd_paths=tuple(r for r in ramdisks if r),
                evidence=tuple(evidence),
                xen_path=path[: -len(".cfg")] + ".efi",
            )
        )
    if default is None:
        return entries, None, None
    return entries, default[0], Evidence(path, default[1], f"default={default[0]}")


# --------------------------------------------------------------------------------------------------
# Putting it together


def _grub_cfg_path(root: Root, notes: _Notes) -> str | None:
    for path in _GRUB_CFGS:
        if root.exists(path):
            return path
    for esp in _ESPS:
        for vendor in root.listdir(f"{esp}/EFI"):
            path = f"{esp}/EFI/{vendor}/grub.cfg"
            text = root.read_text(path)
            if text is None:
                continue
            if re.search(r"^\s*(menuentry|blscfg)\b", text, re.M):
                return path
            # The usual ESP stub: search for /boot, then `configfile $prefix/grub.cfg`.
            if "configfile" in text:
                notes.add("ESP grub.cfg chains to a grub.cfg not found in the root", path)
    return None


def _efi_kind(loader_path: str) -> str:
    base = loader_path.rsplit("/", 1)[-1].lower()
    if base.startswith("xen"):
        return "xen.efi"
    if base.startswith(("shim", "grub")):
        return "grub"
    if base.startswith("systemd-boot"):
        return "systemd-boot"
    return ""


def find_next_boot(root: Root) -> NextBoot:
    """The entry the boot loader starts next, every entry seen, and why that one."""
    notes = _Notes()
    try:
        return _find_next_boot(root, notes)
    except (RecursionError, ValueError, struct.error) as exc:  # pragma: no cover - last resort
        notes.add(f"boot configuration not understood: {exc}", "")
        return NextBoot(None, "boot configuration not understood", (), (), tuple(notes.items))


def _find_next_boot(root: Root, notes: _Notes) -> NextBoot:
    grub_path = _grub_cfg_path(root, notes)
    grub = _read_grub(root, grub_path, notes) if grub_path else None
    uses_blscfg = grub is not None and grub.script.blscfg_line is not None
    sd_entries: list[BootEntry] = []
    if not uses_blscfg:
        sd_entries = _bls_sorted(_read_bls(root, _BLS_DIRS, notes))
    xen_cfgs = _xen_cfg_candidates(root)
    xen_entries: dict[str, tuple[list[BootEntry], str | None, Evidence | None]] = {
        p: _read_xen_cfg(root, p, notes) for p in xen_cfgs
    }
    all_entries: list[BootEntry] = []
    if grub is not None:
        all_entries.extend(i.entry for i in _flatten(grub.items) if i.entry is not None)
    all_entries.extend(sd_entries)
    for found in xen_entries.values():
        all_entries.extend(found[0])

    available = [
        kind
        for kind, present in (
            ("grub", grub is not None),
            ("systemd-boot", bool(sd_entries)),
            ("xen.efi", bool(xen_cfgs)),
        )
        if present
    ]
    # Which loader runs: the firmware's BootNext/BootOrder when /sys is there to say; else GRUB
    # (it is what Debian, Fedora and SUSE install), then systemd-boot, then xen.efi directly.
    chosen_kind, prefix, efi_xen_dir = "", "", ""
    efi = _efi_next_loader(root)
    if efi is not None:
        boot_name, loader_path = efi
        kind = _efi_kind(loader_path)
        if kind in available:
            chosen_kind = kind
            prefix = f"EFI {boot_name} starts {loader_path}; "
            efi_xen_dir = loader_path.rsplit("/", 1)[0].lstrip("/").lower()
    if not chosen_kind and available:
        chosen_kind = available[0]
        if len(available) > 1:
            notes.add(
                f"several boot loaders configured ({', '.join(available)}) and the EFI boot "
                f"order is unknown; assumed {chosen_kind}",
                "sys/firmware/efi/efivars",
            )
            prefix = f"assumed {chosen_kind} (EFI boot order unknown, also found "
            prefix += ", ".join(a for a in available if a != chosen_kind) + "); "

    stale: list[Staleness] = []
    if chosen_kind == "grub" and grub is not None:
        defaults = _ShellDefaults(root, notes)
        item, trail = _pick_grub(grub, notes)
        entry = item.entry if item is not None else None
        why = prefix + _grub_why(grub, defaults, entry, trail)
        if item is not None and entry is not None and entry.source == "grub":
            stale.extend(_stale_cmdline(entry, item, defaults, grub, notes))
        stale.extend(_stale_default(defaults, grub))
    elif chosen_kind == "systemd-boot":
        entry, reason = _pick_bls(root, sd_entries, notes)
        why = prefix + "systemd-boot: " + reason
    elif chosen_kind == "xen.efi":
        path = next((p for p in xen_cfgs if efi_xen_dir and p.lower().find(efi_xen_dir) >= 0), xen_cfgs[0])
        if len(xen_cfgs) > 1 and not efi_xen_dir:
            notes.add(f"several xen.cfg files; used {path}", path)
        entries, default, evidence = xen_entries[path]
        entry = next((e for e in entries if e.id == default), None)
        if default is None:
            # boot.c with no section looks `kernel=` up outside any section: nothing to boot.
            why = prefix + f"xen.efi: {path} has no [global] default="
            notes.add("xen.cfg has no [global] default=; xen.efi needs one", path)
            entry = entries[0] if entries else None
            if entry is not None:
                why += f"; assumed first section [{entry.id}]"
        elif entry is None:
            why = prefix + f"xen.efi: default={default} names no section with kernel="
            notes.add(why, path, evidence.line if evidence else None)
        else:
            line = evidence.line if evidence else None
            why = prefix + f"xen.efi: [global] default={default} ({path}:{line})"
    else:
        entry, why = None, "no boot loader configuration found (grub.cfg, BLS entries, xen.cfg)"
    return NextBoot(
        entry=entry,
        why=why,
        entries=tuple(all_entries),
        stale=tuple(stale),
        problems=tuple(notes.items),
        bootloader=chosen_kind or None,
    )


def _grub_why(grub: _GrubMenu, defaults: _ShellDefaults, entry: BootEntry | None, trail: str) -> str:
    parts: list[str] = []
    setting = grub.script.default_set
    value = grub.script.env.get("default", "")
    if setting is None:
        parts.append(f"{grub.path} sets no default: GRUB boots the first entry")
    else:
        line, raw = setting
        parts.append(f"{grub.path}:{line} `{raw}`")
        for var, what in (("next_entry", "one-shot next_entry (grub-reboot)"), ("saved_entry", "")):
            if var in raw and var in grub.grubenv:
                val, env_line = grub.grubenv[var]
                label = what or var
                parts.append(f"grubenv {label}='{val}' ({grub.env_path}:{env_line})")
                break
            if var in raw and var == "saved_entry":
                parts.append(f"no saved_entry in grubenv ({grub.env_path or 'absent'})")
        parts.append(f"default='{value}'")
    grub_default = defaults.get("GRUB_DEFAULT")
    if grub_default is not None:
        shown = grub_default.value if grub_default.value is not None else "(not evaluable)"
        parts.append(f"GRUB_DEFAULT={shown} ({grub_default.path}:{grub_default.line})")
    if trail:
        parts.append(trail)
    if entry is not None:
        parts.append(f"→ '{entry.title}' (menu {entry.menu_path or '?'})")
    return "GRUB: " + ", ".join(parts)
