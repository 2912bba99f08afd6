"""modprobe configuration exactly as kmod reads it (libkmod/libkmod-config.c)."""

from __future__ import annotations

import fnmatch
import functools
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from pciback_doctor.facts.modules import normalize
from pciback_doctor.model import Evidence

# kmod's search path, highest priority first (libkmod.c default_config_paths).
CONFIG_DIRS = (
    "etc/modprobe.d",
    "run/modprobe.d",
    "usr/local/lib/modprobe.d",
    "usr/lib/modprobe.d",
    "lib/modprobe.d",
)
COMMANDS = frozenset({"alias", "blacklist", "options", "install", "remove", "softdep", "weakdep"})


def underscores(name: str) -> str:
    """kmod's underscores(): `-` -> `_` except inside `[...]` character classes of a glob."""
    out, depth = [], 0
    for ch in name:
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
        out.append("_" if ch == "-" and not depth else ch)
    return "".join(out)


@dataclass(frozen=True)
class Directive:
    command: str  # alias | blacklist | options | install | remove | softdep | weakdep
    module: str  # normalized module name (or alias glob for `alias`)
    args: str  # the rest of the line as kmod keeps it
    evidence: Evidence


@dataclass(frozen=True)
class SoftDep:
    pre: tuple[str, ...]
    post: tuple[str, ...]
    directive: Directive


@dataclass(frozen=True)
class ModprobeConfig:
    directives: tuple[Directive, ...]
    problems: tuple[Evidence, ...] = ()  # lines kmod ignores with an error, ignored files

    def _matching(self, command: str, module: str) -> list[Directive]:
        module = normalize(module)
        # kmod: install/remove/softdep match with fnmatch(config-name, module).
        return [d for d in self.directives if d.command == command and fnmatch.fnmatchcase(module, d.module)]

    def options(self, module: str, alias: str | None = None) -> list[Directive]:
        """Every `options` line for the module, in order (kmod concatenates them all).

        kmod matches options by exact name, or by the alias the module was requested under
        (`modprobe pciback` via `alias pciback xen_pciback` picks up `options pciback`).
        """
        names = {normalize(module)} | ({normalize(alias)} if alias else set())
        return [d for d in self.directives if d.command == "options" and d.module in names]

    def install(self, module: str) -> Directive | None:
        found = self._matching("install", module)
        return found[0] if found else None  # kmod: "find only the first command"

    def softdep(self, module: str) -> SoftDep | None:
        found = self._matching("softdep", module)
        if not found:
            return None  # kmod: only the first matching softdep line counts
        return parse_softdep(found[0])

    def is_blacklisted(self, module: str) -> Directive | None:
        module = normalize(module)
        for d in self.directives:
            if d.command == "blacklist" and d.module == module:
                return d
        return None

    def aliases_for(self, name: str) -> list[Directive]:
        """`alias NAME MODULE` lines whose glob matches name (config aliases come first in kmod)."""
        name = normalize(name)
        return [d for d in self.directives if d.command == "alias" and fnmatch.fnmatchcase(name, d.module)]

    def merged(self, other: ModprobeConfig) -> ModprobeConfig:
        return ModprobeConfig(self.directives + other.directives, self.problems + other.problems)


def parse_softdep(d: Directive) -> SoftDep:
    pre: list[str] = []
    post: list[str] = []
    target: list[str] | None = None
    for word in d.args.split():
        if word == "pre:":
            target = pre
        elif word == "post:":
            target = post
        elif target is not None:
            target.append(normalize(word))
    return SoftDep(tuple(pre), tuple(post), d)


def logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """kmod's freadline_wrapped: a backslash before the newline joins the next line."""
    start, parts = 0, list[str]()
    for number, line in enumerate(text.splitlines(), 1):
        if not parts:
            start = number
        if line.endswith("\\"):
            parts.append(line[:-1])
            continue
        parts.append(line)
        yield start, "".join(parts)
        parts = []
    if parts:
        yield start, "".join(parts)


def parse_modprobe_file(text: str, path: str) -> ModprobeConfig:
    directives: list[Directive] = []
    problems: list[Evidence] = []
    for number, line in logical_lines(text):
        # kmod: a comment only when '#' is the very first character of the line.
        if not line or line[0] == "#":
            continue
        words = line.split(None, 2)
        if not words:
            continue
        evidence = Evidence(path, number, line.strip())
        command = words[0]
        if command in ("include", "config"):
            problems.append(Evidence(path, number, f"'{command}' is deprecated: kmod ignores it"))
            continue
        needs_args = command not in ("blacklist",)
        if command not in COMMANDS or len(words) < 2 or (needs_args and len(words) < 3):
            problems.append(Evidence(path, number, f"kmod ignores this bad line starting with '{command}'"))
            continue
        args = words[2] if len(words) > 2 else ""
        if command == "alias":
            directives.append(Directive(command, underscores(words[1]), args.split()[0], evidence))
        else:
            directives.append(Directive(command, normalize(words[1]), args.strip(), evidence))
    return ModprobeConfig(tuple(directives), tuple(problems))


def config_files(listing: dict[str, list[str]], dirs: tuple[str, ...] = CONFIG_DIRS) -> list[str]:
    """Which files kmod reads, in order, from {dir: [names]} (libkmod-config.c conf_files_list).

    Only `*.conf`, no dotfiles; files sorted by basename across all directories; for a basename
    present in several directories the highest-priority directory wins. systemd's conf_files_list
    (modules-load.d) picks its files the same way from its own `dirs`.
    """
    chosen: dict[str, str] = {}
    for directory in dirs:
        for name in listing.get(directory, []):
            if name.startswith(".") or not name.endswith(".conf"):
                continue
            chosen.setdefault(name, f"{directory}/{name}")
    return [chosen[name] for name in sorted(chosen)]


_SH_OPERATORS = frozenset(";&|()")
# words that may open a simple command without being its program (sh grammar: reserved words,
# `!`, and the `exec`/`command` builtins that run the next word)
_SH_PREFIX = frozenset(
    {"{", "}", "!", "then", "do", "else", "elif", "if", "while", "until", "exec", "command"}
)


@functools.lru_cache(maxsize=64)  # the boot model asks per device and phase
def install_commands(command: str) -> tuple[tuple[str, ...], ...]:
    """The simple commands of an `install` rule, split as `/bin/sh -c` runs it (kmod hands the
    line to system()): `;`, `&&`, `||`, `|`, newlines and `( … )` separate, `{ …; }` groups,
    quotes group words, `VAR=value` prefixes are not the program."""
    lexer = shlex.shlex(command.replace("\n", ";"), posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: sh fails too, but read what is there
        tokens = command.replace(";", " ; ").split()
    commands: list[list[str]] = []
    words: list[str] = []
    for token in tokens:
        if token and set(token) <= _SH_OPERATORS:
            if words:
                commands.append(words)
            words = []
        elif not words and (token in _SH_PREFIX or re.match(r"[A-Za-z_][A-Za-z0-9_]*=", token)):
            continue
        else:
            words.append(token)
    if words:
        commands.append(words)
    return tuple(tuple(c) for c in commands)
