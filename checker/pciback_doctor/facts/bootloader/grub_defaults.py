"""The GRUB defaults: `etc/default/grub` and `etc/default/grub.d/*.cfg`, the shell fragments
grub-mkconfig sources, and `grubenv`, the environment block GRUB loads at boot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pciback_doctor.facts.bootloader.entry import _Notes
from pciback_doctor.facts.limits import NESTING
from pciback_doctor.facts.root import Root


# grubenv: a 1024-byte block of `key=value` lines padded with `#` (grub-core/lib/envblk.c).
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


def grub_variables(root: Root) -> dict[str, str | None]:
    """etc/default/grub and grub.d/*.cfg as grub-mkconfig sources them: name -> value (None when
    not evaluable here)."""
    return {name: var.value for name, var in _ShellDefaults(root, _Notes()).vars.items()}
