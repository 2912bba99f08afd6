"""Edit `NAME=value` assignments in a shell fragment that something sources (etc/default/grub, read by
grub-mkconfig with `.`), changing only the bytes of the value that must change.

The file is parsed the way a POSIX shell reads it (quotes, backslash continuations, `$NAME`, `$(…)`,
`# comments`, `if`/`case` blocks), so a word is added inside the quotes the value already uses, a
trailing comment stays a comment, and a variable assigned twice is edited where the later assignment
wins. Every byte outside the edited value — line endings, form feeds, non-UTF-8 bytes kept as
surrogates — is left as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
# what ends an unquoted word (sh: blanks and the operator characters); `\r` is a blank here, as in
# the doctor's reader, so a CRLF file's values are edited inside their quotes
_WORD_END = frozenset(" \t\r\n;&|()<>")
_BLANKS = frozenset(" \t\n")  # what separates the words of a value once it is expanded (IFS)
# A value longer than this is not taken apart (words removed, one added inside its quotes): no kernel
# takes a command line past a few KiB (COMMAND_LINE_SIZE: 2048 on x86 and arm64), and a hostile file
# must not cost minutes. Such a value is left as it is and a line that wins is appended instead.
MAX_VALUE = 64 << 10
# A variable assigned more often than this keeps its old words (taking each assignment apart costs a
# parse of its value); real files assign it once or twice, and the added word still comes last.
MAX_ASSIGNMENTS = 256
# runs of bytes with no meaning to the shell, read at once (a long value costs one step, not one per byte)
_UNQUOTED_RUN = re.compile(r"[^ \t\r\n;&|()<>\\'\"$`]+")
_DOUBLE_QUOTED_SPECIAL = re.compile(r'["\\$`]')
_RUN = {
    "": re.compile(r"[^'\"\\$`\s]+"),
    "'": re.compile(r"[^'\s]+"),
    '"': re.compile(r'[^"\\$`\s]+'),
}
# reserved words that open, continue and close compound commands (POSIX 2.9.4)
_OPENS = frozenset({"if", "while", "until", "for", "case", "{"})
_CONTINUES = frozenset({"then", "do", "else", "elif", "!"})
_CLOSES = frozenset({"fi", "done", "esac", "}"})


@dataclass(frozen=True)
class Assignment:
    """One `NAME=value` in the text: where its value is, and whether it is sure to be in force."""

    name: str
    start: int  # offset of the value's first byte (just past `=`)
    end: int  # offset just past the value
    plain: bool  # a command of assignments only, at the top level, run unconditionally in this shell
    lasting: bool = True  # False for `NAME=x cmd`: the value is for that command's environment only


@dataclass(frozen=True)
class _Word:
    start: int
    end: int


@dataclass(frozen=True)
class _Command:
    words: tuple[_Word, ...]
    plain: bool  # top level, not after && / ||, not part of a pipeline or run in the background


@dataclass(frozen=True, slots=True)
class _Unit:
    """One piece of an expanded value: literal text (a blank alone), or an expansion kept whole."""

    text: str
    start: int
    end: int
    segment: int  # which quoted or unquoted run of the word it came from
    literal: bool


@dataclass(frozen=True)
class _Segment:
    quote: str  # "", "'" or '"'
    start: int  # offset of the opening quote (or of the first byte when unquoted)
    end: int  # offset just past the closing quote (or the last byte); -1 while unterminated


def _skip_expansion(text: str, i: int) -> tuple[int, bool]:
    """`text[i]` is `$` or a backquote: the offset just past the expansion it starts, and whether it
    is closed before the end of the text."""
    if text[i] == "`":
        j = i + 1
        while j < len(text) and text[j] != "`":
            j += 2 if text[j] == "\\" else 1
        return min(j + 1, len(text)), j < len(text)
    opener = text[i + 1 : i + 2]
    if opener in ("(", "{"):
        closer = ")" if opener == "(" else "}"
        depth, j, quote = 0, i + 1, ""
        while j < len(text):
            c = text[j]
            if quote:
                if c == "\\" and quote == '"':
                    j += 1
                elif c == quote:
                    quote = ""
            elif c == "\\":
                j += 1
            elif c in "'\"":
                quote = c
            elif c == opener:
                depth += 1
            elif c == closer:
                depth -= 1
                if depth == 0:
                    return j + 1, True
            j += 1
        return len(text), False
    if m := _NAME.match(text, i + 1):
        return m.end(), True
    if opener and (opener.isdigit() or opener in "@*#?-$!"):
        return i + 2, True
    return i + 1, True  # a lone `$` is itself


def _scan(text: str) -> tuple[list[_Command], bool]:
    """The simple commands of the text, each word a span, and whether the text ends cleanly (no
    open quote, continuation or block) so that a line can be appended after it."""
    commands: list[_Command] = []
    words: list[_Word] = []
    blocks: list[str] = []
    conditional = False  # the current command follows && or ||
    start = -1  # start of the word being read
    i, n = 0, len(text)
    clean = True

    def end_command(operator: str) -> None:
        nonlocal conditional
        first = 0
        while first < len(words):
            head = text[words[first].start : words[first].end]
            if head in _CONTINUES or head == "{":  # `then A=1`, `{ A=1; }`: a command follows
                blocks.extend(["{"] if head == "{" else [])
                first += 1
                continue
            if head in _OPENS:
                blocks.append(head)  # the rest is a condition or a list to loop over
            elif head in _CLOSES:
                if blocks:
                    blocks.pop()
            else:
                plain = not blocks and not conditional and operator in ("", "\n", ";")
                commands.append(_Command(tuple(words[first:]), plain))
            break
        words.clear()
        conditional = operator in ("&&", "||", "|")

    while i < n:
        c = text[i]
        if c == "#" and start < 0:
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if c == "\\":
            if start < 0 and text[i + 1 : i + 2] == "\n":
                i += 2  # a continuation between words joins the lines
                continue
            if i + 1 >= n:
                clean = False
            start = i if start < 0 else start
            i += 2
            continue
        if c == "'":
            start = i if start < 0 else start
            end = text.find("'", i + 1)
            clean = clean and end >= 0
            i = n if end < 0 else end + 1
            continue
        if c == '"':
            start = i if start < 0 else start
            j = i + 1
            while (m := _DOUBLE_QUOTED_SPECIAL.search(text, j)) is not None and m.group() != '"':
                if m.group() == "\\":
                    j = m.start() + 2
                else:
                    j, closed = _skip_expansion(text, m.start())
                    clean = clean and closed
            clean = clean and m is not None
            i = n if m is None else m.end()
            continue
        if c in "$`":
            start = i if start < 0 else start
            i, closed = _skip_expansion(text, i)
            clean = clean and closed
            continue
        if c not in _WORD_END:
            start = i if start < 0 else start
            run = _UNQUOTED_RUN.match(text, i)
            i = run.end() if run else i + 1
            continue
        if start >= 0:
            words.append(_Word(start, i))
            start = -1
        if c in " \t\r":
            i += 1
            continue
        if c in "<>":
            words.append(_Word(i, i + 1))  # a redirection: not an assignment-only command
            i += 1
            continue
        operator = text[i : i + 2] if text[i : i + 2] in ("&&", "||", ";;") else c
        if c == "(":
            end_command(operator)
            blocks.append("(")
        elif c == ")":
            end_command(operator)
            if blocks and blocks[-1] == "(":
                blocks.pop()
        else:
            end_command(operator)
        i += len(operator)
    if start >= 0:
        words.append(_Word(start, n))
    end_command("")
    return commands, clean and not blocks


def assignments(text: str, name: str) -> list[Assignment]:
    """Every assignment of `name` in the text, in order: the last plain one is in force at the end
    unless something after it is not plain."""
    found: list[Assignment] = []
    for command in _scan(text)[0]:
        words = list(command.words)
        head = text[words[0].start : words[0].end]
        declares = head in ("export", "readonly")  # `export A=1 B`: every word is the shell's own
        if declares:
            words = words[1:]
        matches = [_ASSIGNMENT.match(text, w.start, w.end) for w in words]
        lasting = True
        if not declares:
            # `A=1 cmd args`: only the words before cmd assign, and only in cmd's environment
            cut = next((i for i, m in enumerate(matches) if m is None), len(matches))
            lasting, matches = cut == len(matches), matches[:cut]
        for m in matches:
            if m is not None and m.group(1) == name:
                found.append(Assignment(name, m.end(), m.endpos, command.plain and lasting, lasting))
        if head in ("unset", "read") and any(text[w.start : w.end] == name for w in words[1:]):
            # `unset NAME` or `read NAME`: the value after it is not one this edit can name
            found.append(Assignment(name, words[0].start, words[0].start, False))
    return found


def _units(text: str, start: int, end: int) -> tuple[list[_Unit], list[_Segment]]:
    """The value between `start` and `end` as the shell expands it (in an assignment: no field
    splitting, no globbing), each piece remembering where it is written."""
    units: list[_Unit] = []
    segments: list[_Segment] = []
    quote = ""  # the quote of the segment being read; "" with an open unquoted segment or none

    def add(piece: str, at: int, stop: int, literal: bool = True) -> None:
        if not quote and (not segments or segments[-1].quote or segments[-1].end != -1):
            segments.append(_Segment("", at, -1))
        units.append(_Unit(piece, at, stop, len(segments) - 1, literal))

    i = start
    while i < end:
        c = text[i]
        run = _RUN[quote].match(text, i, end)
        if run is not None:
            add(run.group(), i, run.end())
            i = run.end()
        elif quote == "'":
            if c == "'":
                segments[-1] = _Segment("'", segments[-1].start, i + 1)
                quote = ""
            else:
                add(c, i, i + 1)
            i += 1
        elif c == "\\" and i + 1 < end:
            nxt = text[i + 1]
            if nxt == "\n":  # a continuation, inside double quotes too: nothing is left of it
                i += 2
            elif not quote or nxt in '$`"\\':
                add(nxt, i, i + 2)
                i += 2
            else:
                add(c, i, i + 1)
                i += 1
        elif c in "$`":
            stop = min(_skip_expansion(text, i)[0], end)
            add(text[i:stop], i, stop, literal=stop == i + 1)
            i = stop
        elif c == '"' and quote == '"':
            segments[-1] = _Segment('"', segments[-1].start, i + 1)
            quote = ""
            i += 1
        elif c in "'\"" and not quote:
            if segments and not segments[-1].quote and segments[-1].end == -1:
                segments[-1] = _Segment("", segments[-1].start, i)
            segments.append(_Segment(c, i, -1))
            quote = c
            i += 1
        else:
            add(c, i, i + 1)
            i += 1
    if segments and not segments[-1].quote and segments[-1].end == -1:
        segments[-1] = _Segment("", segments[-1].start, end)
    return units, segments


def _tokens(units: list[_Unit]) -> Iterator[tuple[int, int]]:
    """The value's words as the kernel command line will split them: (first, last) unit indexes."""
    first = -1
    for i, unit in enumerate(units):
        if unit.literal and unit.text in _BLANKS:
            if first >= 0:
                yield first, i - 1
            first = -1
        elif first < 0:
            first = i
    if first >= 0:
        yield first, len(units) - 1


def _literal(units: list[_Unit], first: int, last: int) -> str | None:
    """A word's text when it holds no expansion."""
    word = units[first : last + 1]
    return "".join(u.text for u in word) if all(u.literal for u in word) else None


def _removals(text: str, a: Assignment, drop: Callable[[str], bool]) -> list[tuple[int, int]]:
    """Spans to cut so that the words `drop` matches leave the value, with one blank beside each."""
    if a.end - a.start > MAX_VALUE:
        return []
    units, _ = _units(text, a.start, a.end)
    spans: list[tuple[int, int]] = []

    def blank(i: int, segment: int) -> bool:
        return (
            0 <= i < len(units)
            and units[i].literal
            and units[i].text in _BLANKS
            and units[i].segment == segment
        )

    for first, last in _tokens(units):
        word = _literal(units, first, last)
        if word is None or not drop(word):
            continue
        if units[first].segment != units[last].segment:
            continue  # spread over quotes (`xen-pciback.hide="(…)"`): cutting it would unbalance them
        cut_from, cut_to = units[first].start, units[last].end
        if blank(first - 1, units[first].segment):
            cut_from = units[first - 1].start
        elif blank(last + 1, units[last].segment):
            cut_to = units[last + 1].end
        spans.append((cut_from, cut_to))
    return spans


def _cut(text: str, spans: list[tuple[int, int]]) -> str:
    kept: list[str] = []
    at = 0
    for cut_from, cut_to in sorted(spans):  # two neighbours removed may claim the blank between them
        kept.append(text[at : max(at, cut_from)])
        at = max(at, cut_to)
    return "".join(kept) + text[at:]


def without_words(text: str, name: str, drop: Callable[[str], bool]) -> str:
    """The text with the words `drop` matches taken out of every assignment of `name`."""
    return _without(text, assignments(text, name), drop)


def _without(text: str, found: list[Assignment], drop: Callable[[str], bool]) -> str:
    if len(found) > MAX_ASSIGNMENTS:
        return text
    return _cut(text, [span for a in found for span in _removals(text, a, drop)])


def _double_quoted(word: str) -> str:
    return re.sub(r'([$`"\\])', r"\\\1", word)


def _appended(text: str, a: Assignment, word: str) -> str:
    """`word` added at the end of the value of assignment `a`, inside the quotes it already uses."""
    units, segments = _units(text, a.start, a.end)
    sep = " " if units else ""
    last = segments[-1] if segments else None
    if last is not None and last.quote == '"' and last.end == a.end:
        at = a.end - 1
        return text[:at] + sep + _double_quoted(word) + text[at:]
    if last is not None and last.quote == "'" and last.end == a.end and "'" not in word:
        at = a.end - 1
        return text[:at] + sep + word + text[at:]
    value = text[a.start : a.end]
    if not value:
        return text[: a.start] + f'"{_double_quoted(word)}"' + text[a.end :]
    if all(s.quote == "" for s in segments) and not re.search(r"[\\~]", value):
        # unquoted (`quiet`, `$NAME`): the same value in double quotes, assignments do not glob
        return text[: a.start] + f'"{value} {_double_quoted(word)}"' + text[a.end :]
    return text[: a.end] + f'" {_double_quoted(word)}"' + text[a.end :]


def with_word(text: str, name: str, word: str, replaces: Callable[[str], bool] = lambda w: False) -> str:
    """The text with `word` at the end of `name`'s value where it is in force, and the words
    `replaces` matches taken out of every assignment of `name` first.

    The last assignment wins when it is plain; when it is conditional (in an `if`, after `&&`) or
    `unset`, a line `NAME="${NAME} word"` appended at the end wins instead. `NAME=x cmd` sets the
    variable for `cmd` alone: it is not a candidate."""
    found = assignments(text, name)
    cleaned = _without(text, found, replaces)
    if cleaned != text:
        text, found = cleaned, assignments(cleaned, name)
    found = [a for a in found if a.lasting]
    if found and found[-1].plain and found[-1].end - found[-1].start <= MAX_VALUE:
        units, _ = _units(text, found[-1].start, found[-1].end)
        if any(_literal(units, first, last) == word for first, last in _tokens(units)):
            return text  # already there, where it counts
        return _appended(text, found[-1], word)
    if not _scan(text)[1]:
        return text  # an open quote or block at the end: nothing appended could be sure to run
    value = f"${{{name}}} {_double_quoted(word)}" if found else _double_quoted(word)
    newline = "\r\n" if text.endswith("\r\n") else "\n"
    lead = "" if not text or text.endswith("\n") else newline
    return f'{text}{lead}{name}="{value}"{newline}'
