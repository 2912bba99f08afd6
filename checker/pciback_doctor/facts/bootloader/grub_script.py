"""The GRUB script language, enough of it to rebuild the menu (grub-core/script/yylex.l): the
lexer, the parser and the interpreter that runs `grub.cfg` and the body of a menu entry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pciback_doctor.facts.bootloader.entry import BootEntry, _boot_path, _Notes
from pciback_doctor.facts.limits import NESTING
from pciback_doctor.facts.root import Root

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
