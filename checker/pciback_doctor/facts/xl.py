"""xl domain configuration files (xl.cfg(5)) and their `pci=` lists (xl-pci-configuration(5)).

The file grammar follows libxlu's flex/bison parser (tools/libs/util/libxlu_cfg_l.l, _y.y,
libxlu_cfg.c); the `pci=` entries follow `xlu_pci_parse_spec_string` (libxlu_pci.c, Xen >= 4.15);
the guest type and the `pci_*` defaults follow `parse_config_data` (tools/xl/xl_parse.c).
Pure: text in, frozen facts out; every problem is an `XlError`, never an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pciback_doctor.facts.limits import NESTING, REPORTED_ERRORS
from pciback_doctor.model import Evidence


@dataclass(frozen=True)
class XlAtom:
    """A string or number; libxlu keeps numbers as their source text too."""

    value: str
    line: int


@dataclass(frozen=True)
class XlList:
    items: tuple[XlAtom | XlList, ...]
    line: int


XlValue = XlAtom | XlList


@dataclass(frozen=True)
class XlSetting:
    name: str
    value: XlValue
    evidence: Evidence
    appended: bool = False  # written with `+=`


@dataclass(frozen=True)
class XlError:
    """`evidence.text` is the offending text; `offset` the index of the bad character in it."""

    message: str
    evidence: Evidence
    offset: int | None = None


@dataclass(frozen=True)
class PciSpec:
    """One PCI_SPEC_STRING. `func` is None for `*` (all functions); a `name=` entry has no BDF."""

    domain: int | None
    bus: int | None
    slot: int | None
    func: int | None
    vslot: int | None
    options: dict[str, str]
    seize: bool
    permissive: bool
    msitranslate: bool
    power_mgmt: bool
    rdm_policy: str | None
    name: str | None
    evidence: Evidence

    @property
    def bdf(self) -> str | None:
        """`DDDD:BB:SS.F` (`.*` for all functions), or None for a `name=` entry."""
        if self.domain is None or self.bus is None or self.slot is None:
            return None
        func = "*" if self.func is None else f"{self.func:x}"
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{func}"


@dataclass(frozen=True)
class XlConfig:
    path: str
    settings: dict[str, XlSetting]  # the last assignment of each name (libxlu: newest wins)
    guest_type: str  # pv | pvh | hvm
    guest_type_evidence: Evidence
    kernel: str | None
    kernel_evidence: Evidence | None
    pci: tuple[PciSpec, ...]
    errors: tuple[XlError, ...] = field(default=())

    def get_string(self, name: str) -> str | None:
        setting = self.settings.get(name)
        if setting is None or not isinstance(setting.value, XlAtom):
            return None
        return setting.value.value


# --- the file grammar ---------------------------------------------------------------------------

# libxlu_cfg_l.l: IDENT, NUMBER, quoted strings (both kinds dequoted alike), `#` to end of line.
_TOKEN = re.compile(
    r"""(?P<ws>[ \t]+)
      | (?P<nl>\n|\#[^\n]*(?:\n|\Z))
      | (?P<ident>[a-z][._0-9a-z]*)
      | (?P<number>[0-9][0-9a-fx]*)
      | (?P<string>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
      | (?P<op>\+=|[,\[\]=;])
      | (?P<bad>[^ \t\n]+)""",
    re.VERBOSE,
)
_PYTHONISH = set("+-.():")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


@dataclass
class _Tok:
    kind: str  # ident number string op nl bad eof
    text: str
    line: int
    value: str = ""


class _Syntax(Exception):
    def __init__(self, message: str, tok: _Tok) -> None:
        super().__init__(message)
        self.tok = tok


def _dequote(raw: str) -> str:
    """libxlu_cfg.c `xlu__cfgl_dequote`: C-like escapes, `\\xHH`, octal `\\NNN`."""
    body = raw[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        i += 1
        if c != "\\" or i >= len(body):
            out.append(c)
            continue
        nc = body[i]
        i += 1
        if nc in "\"'\\":
            out.append(nc)
        elif nc in _ESCAPES:
            out.append(_ESCAPES[nc])
        elif nc == "x" and re.match(r"[0-9a-fA-F]{2}", body[i : i + 2]):
            out.append(chr(int(body[i : i + 2], 16)))
            i += 2
        elif nc in "01234567":
            m = re.match(r"[0-7]{0,2}", body[i:])
            digits = nc + (m.group(0) if m else "")
            out.append(chr(int(digits, 8) & 0xFF))
            i += len(digits) - 1
        else:
            out.append("\\" + nc)  # libxlu rejects it; keep the text, the lexer already reported
    return "".join(out)


def _bad_escape(raw: str) -> bool:
    for m in re.finditer(r"\\(x[0-9a-fA-F]{2}|.)", raw[1:-1]):
        if len(m.group(1)) == 1 and m.group(1) not in "\"'\\abfnrtv01234567":
            return True
    return False


def _tokens(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    line = 1
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "bad"
        chunk = m.group(0)
        if kind == "ws":
            continue
        if kind == "string":
            kind = "bad" if _bad_escape(chunk) else "string"
            toks.append(_Tok(kind, chunk, line, _dequote(chunk)))
        else:
            toks.append(_Tok(kind, chunk, line, chunk))
        line += chunk.count("\n")
    toks.append(_Tok("eof", "", line))
    return toks


class _Parser:
    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.lines = text.split("\n")
        self.toks = _tokens(text)
        self.pos = 0
        self.settings: dict[str, XlSetting] = {}
        self.errors: list[XlError] = []

    def peek(self) -> _Tok:
        return self.toks[self.pos]

    def take(self) -> _Tok:
        tok = self.toks[self.pos]
        if tok.kind != "eof":
            self.pos += 1
        return tok

    def line_text(self, line: int) -> str:
        return self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""

    def parse(self) -> None:
        # file: stmts [assignment]; stmt: assignment endstmt | endstmt | error NEWLINE
        while self.peek().kind != "eof":
            tok = self.peek()
            if tok.kind == "nl" or tok.text == ";":
                self.take()
                continue
            try:
                self.assignment()
                end = self.peek()
                if not (end.kind in ("nl", "eof") or end.text == ";"):
                    raise _Syntax("expected newline or ';' after the value", end)
            except _Syntax as exc:
                self.report(str(exc), exc.tok)
                while self.peek().kind not in ("nl", "eof"):  # bison: `error NEWLINE`
                    self.take()
        # libxlu_cfg.c: a lexical error on one of `+-.():` means the file is likely Python.
        python = [t for t in self.toks if t.kind == "bad" and t.text[0] in _PYTHONISH]
        if self.errors and python:
            message = "this looks like Python: xl no longer runs Python config files"
            self.errors.append(XlError(message, Evidence(self.path, python[0].line, python[0].text)))

    def report(self, message: str, tok: _Tok) -> None:
        text = self.line_text(tok.line)
        if tok.kind == "bad":
            if "\r" in tok.text:
                message = "carriage return (DOS line ending): xl stops with a lexical error"
                if any(e.message == message for e in self.errors):
                    return
            elif tok.text[0] in "'\"":
                message = f"lexical error: bad escape in string {tok.text}"
            else:
                message = f"lexical error at {tok.text!r}"
        elif tok.kind == "eof":
            message += " (end of file)"
        found = text.find(tok.text.strip()) if tok.text.strip() else -1
        self.errors.append(
            XlError(message, Evidence(self.path, tok.line, text), found if found >= 0 else None)
        )

    def assignment(self) -> None:
        name = self.take()
        if name.kind != "ident":
            raise _Syntax(f"expected a setting name, found {name.text.strip()!r}", name)
        op = self.take()
        if op.text not in ("=", "+="):
            raise _Syntax(f"expected '=' or '+=' after {name.text!r}", op)
        value = self.value()
        appended = op.text == "+="
        prev = self.settings.get(name.text)
        if appended and prev is not None:
            # libxlu_cfg.c xlu__cfg_concat_vals: strings concatenate, lists extend.
            if isinstance(prev.value, XlAtom) and isinstance(value, XlAtom):
                value = XlAtom(prev.value.value + value.value, value.line)
            elif isinstance(prev.value, XlList) and isinstance(value, XlList):
                value = XlList(prev.value.items + value.items, value.line)
            else:
                raise _Syntax('can\'t add [list] to "string" or vice versa', op)
        evidence = Evidence(self.path, name.line, self.line_text(name.line))
        self.settings[name.text] = XlSetting(name.text, value, evidence, appended)

    def value(self, depth: int = 0) -> XlValue:
        tok = self.take()
        if tok.kind in ("string", "number"):
            return XlAtom(tok.value, tok.line)
        if tok.text != "[":
            raise _Syntax(f"expected a value, found {tok.text.strip() or 'nothing'!r}", tok)
        if depth >= NESTING.value:  # xl's bison parser gives up too (YYMAXDEPTH), far deeper
            raise _Syntax(f"lists nested deeper than the {NESTING.describe()} limit", tok)
        items: list[XlAtom | XlList] = []
        self.skip_newlines()
        while self.peek().text != "]":
            items.append(self.value(depth + 1))
            self.skip_newlines()
            sep = self.peek()
            if sep.text == ",":
                self.take()
                self.skip_newlines()
            elif sep.text != "]":
                raise _Syntax("expected ',' or ']' in list", sep)
        self.take()
        return XlList(tuple(items), tok.line)

    def skip_newlines(self) -> None:
        while self.peek().kind == "nl":
            self.take()


# --- pci= entries (libxlu_pci.c) ----------------------------------------------------------------

_HEX = re.compile(r"[0-9a-fA-F]+")
_INT_KEYS = ("permissive", "msitranslate", "seize", "power_mgmt")
_RDM_POLICIES = ("strict", "relaxed")


class _Bad(Exception):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass
class _Spec:
    domain: int | None = None
    bus: int | None = None
    slot: int | None = None
    func: int | None = None
    vslot: int | None = None
    name: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    ints: dict[str, int] = field(default_factory=dict)
    rdm_policy: str | None = None


def _hex(s: str, pos: int, what: str, limit: int) -> tuple[int, int]:
    m = _HEX.match(s, pos)
    if m is None:
        raise _Bad(f"{what} must be hexadecimal", pos)
    value = int(m.group(0), 16)
    if value > limit:
        raise _Bad(f"{what} {m.group(0)} out of range (max {limit:x})", pos)
    return value, m.end()


def _parse_bdf(spec: _Spec, s: str, start: int) -> int:
    """`parse_bdf`: `[DDDD:]BB:SS.F`, F hex or `*`, read from `s[start:]`; returns the end offset.

    The number of ':' in the leading run of hex digits and colons says whether a domain is given.
    """
    run = re.compile(r"[0-9a-fA-F:]*").match(s, start)
    colons = run.group(0).count(":") if run else 0
    if colons not in (1, 2):
        raise _Bad("expected a BDF [DDDD:]BB:SS.F", start)
    pos = start
    domain = 0
    if colons == 2:
        domain, pos = _hex(s, pos, "domain", 0xFFFF)
        pos += 1  # the ':' counted above
    bus, pos = _hex(s, pos, "bus", 0xFF)
    if s[pos : pos + 1] != ":":
        raise _Bad("expected ':' after the bus", pos)
    slot, pos = _hex(s, pos + 1, "slot", 0x1F)
    if s[pos : pos + 1] != ".":
        raise _Bad("expected '.' before the function", pos)
    pos += 1
    func: int | None = None
    if s[pos : pos + 1] == "*":
        pos += 1
    else:
        func, pos = _hex(s, pos, "function", 7)
    spec.domain, spec.bus, spec.slot, spec.func = domain, bus, slot, func
    return pos


def _atoi(s: str) -> int:
    m = re.match(r"\s*([+-]?\d+)", s)
    return int(m.group(1)) if m else 0


def _parse_spec(s: str) -> _Spec:
    """`xlu_pci_parse_spec_string`: positional BDF[@VSLOT], then `key=value` pairs."""
    spec = _Spec()
    pos = 0
    bdf_present = name_present = False
    first = s.split(",", 1)[0]
    if "=" not in first:
        # libxlu falls back to key=value parsing here; the BDF error is what the user needs.
        pos = _parse_bdf(spec, s, 0)
        bdf_present = True
        if s[pos : pos + 1] == "@":
            spec.vslot, pos = _hex(s, pos + 1, "vslot", 0x1F)
        if s[pos : pos + 1] == ",":
            pos += 1
        elif pos < len(s):
            raise _Bad(f"unexpected {s[pos]!r} after the BDF", pos)
    while pos < len(s):
        eq = s.find("=", pos)
        comma = s.find(",", pos)
        if eq < 0 or (0 <= comma < eq):
            raise _Bad(f"expected KEY=VALUE, found {s[pos : comma if comma >= 0 else None]!r}", pos)
        key = s[pos:eq]
        end = s.find(",", eq + 1)
        end = len(s) if end < 0 else end
        val = s[eq + 1 : end]
        vpos = eq + 1
        if key == "bdf":
            _parse_bdf(spec, s, vpos)  # libxlu ignores what follows the BDF in a bdf= value
            bdf_present = True
        elif key == "vslot":
            spec.vslot, _ = _hex(s, vpos, "vslot", 0x1F)
        elif key in _INT_KEYS:
            spec.ints[key] = _atoi(val)
        elif key == "rdm_policy":
            if val not in _RDM_POLICIES:
                raise _Bad(f"rdm_policy must be 'strict' or 'relaxed', not {val!r}", vpos)
            spec.rdm_policy = val
        elif key == "name":
            spec.name = val
            name_present = True
        else:
            raise _Bad(f"unknown PCI_SPEC_STRING option {key!r}", pos)
        spec.options[key] = val
        pos = end + 1 if end < len(s) else end
    if bdf_present == name_present:
        raise _Bad("exactly one of a BDF or name= is required", 0)
    return spec


def _long(settings: dict[str, XlSetting], name: str) -> int | None:
    """`xlu_cfg_get_long`: strtol base 0 on a single value; `+=` or a list is not a number."""
    setting = settings.get(name)
    if setting is None or setting.appended or not isinstance(setting.value, XlAtom):
        return None
    text = setting.value.value.strip()
    m = re.fullmatch(r"([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", text)
    if m is None:
        return None
    sign = -1 if m.group(1) == "-" else 1
    digits = m.group(2)
    if digits[:2].lower() == "0x":
        return sign * int(digits, 16)
    return sign * int(digits, 8 if digits.startswith("0") else 10)


def _rdm_default(settings: dict[str, XlSetting]) -> str | None:
    """`rdm = "strategy=host,policy=strict"`: the global default of each entry's rdm_policy."""
    setting = settings.get("rdm")
    if setting is None or not isinstance(setting.value, XlAtom):
        return None
    for part in setting.value.value.split(","):
        key, _, val = part.partition("=")
        if key == "policy" and val in _RDM_POLICIES:
            return val
    return None


def _pci_entries(settings: dict[str, XlSetting], path: str, errors: list[XlError]) -> tuple[PciSpec, ...]:
    setting = settings.get("pci")
    if setting is None:
        return ()
    if not isinstance(setting.value, XlList):
        errors.append(XlError("pci= must be a list [ '...', ... ]", setting.evidence))
        return ()
    # xl_parse.c: the pci_* globals are each entry's defaults; the entry's own keys override.
    defaults = {key: _long(settings, f"pci_{key}") or 0 for key in _INT_KEYS}
    rdm = _rdm_default(settings)
    specs: list[PciSpec] = []
    for item in setting.value.items:
        if not isinstance(item, XlAtom):
            evidence = Evidence(path, item.line, "[...]")
            errors.append(XlError("pci= entry is a list, not a PCI_SPEC_STRING", evidence))
            continue
        evidence = Evidence(path, item.line, item.value)
        try:
            spec = _parse_spec(item.value)
        except _Bad as exc:
            errors.append(XlError(f"pci= entry malformed: {exc}", evidence, exc.offset))
            continue
        ints = defaults | spec.ints
        specs.append(
            PciSpec(
                domain=spec.domain,
                bus=spec.bus,
                slot=spec.slot,
                func=spec.func,
                vslot=spec.vslot,
                options=spec.options,
                seize=ints["seize"] != 0,
                permissive=ints["permissive"] != 0,
                msitranslate=ints["msitranslate"] != 0,
                power_mgmt=ints["power_mgmt"] != 0,
                rdm_policy=spec.rdm_policy or rdm,
                name=spec.name,
                evidence=evidence,
            )
        )
    return tuple(specs)


# --- guest type (xl_parse.c) --------------------------------------------------------------------


def _prefix_of(value: str, *words: str) -> str | None:
    # xl_parse.c compares with strncmp(buf, word, strlen(buf)): any prefix of the word matches.
    for word in words:
        if word.startswith(value):
            return word
    return None


def _guest_type(settings: dict[str, XlSetting], path: str, errors: list[XlError]) -> tuple[str, Evidence]:
    guest: str | None = None
    evidence = Evidence(path, None, "no type= (xl's default on x86: pv)")
    type_setting = settings.get("type")
    if type_setting is not None and isinstance(type_setting.value, XlAtom):
        guest = _prefix_of(type_setting.value.value, "hvm", "pv", "pvh")
        if guest is None:
            errors.append(XlError("invalid domain type (pv, pvh or hvm)", type_setting.evidence))
        else:
            evidence = type_setting.evidence
    builder = settings.get("builder")  # deprecated since Xen 4.10
    if builder is not None and isinstance(builder.value, XlAtom):
        word = _prefix_of(builder.value.value, "hvm", "generic")
        if word is None:
            errors.append(XlError("invalid builder (hvm or generic)", builder.evidence))
        else:
            from_builder = "hvm" if word == "hvm" else "pv"
            if guest is not None and guest != from_builder:
                errors.append(XlError("contradicting builder= and type=", builder.evidence))
            elif guest is None:
                guest, evidence = from_builder, builder.evidence
    return guest or "pv", evidence


def parse_xl(text: str, path: str) -> XlConfig:
    parser = _Parser(text, path)
    parser.parse()
    settings = parser.settings
    errors = parser.errors
    guest_type, guest_evidence = _guest_type(settings, path, errors)
    pci = _pci_entries(settings, path, errors)
    if len(errors) > REPORTED_ERRORS.value:
        more = len(errors) - REPORTED_ERRORS.value
        errors[REPORTED_ERRORS.value :] = [
            XlError(
                f"and {more} more errors (only the first {REPORTED_ERRORS.value} are reported)",
                Evidence(path, None, ""),
            )
        ]
    kernel = settings.get("kernel")
    kernel_path = kernel.value.value if kernel and isinstance(kernel.value, XlAtom) else None
    return XlConfig(
        path=path,
        settings=settings,
        guest_type=guest_type,
        guest_type_evidence=guest_evidence,
        kernel=kernel_path,
        kernel_evidence=kernel.evidence if kernel_path is not None and kernel else None,
        pci=pci,
        errors=tuple(errors),
    )
