"""The kernel command line, tokenised as the kernel does (lib/cmdline.c next_arg, parse_args)."""

from __future__ import annotations

from dataclasses import dataclass

from pciback_doctor.model import Evidence


@dataclass(frozen=True)
class Param:
    key: str
    value: str | None
    start: int  # offset of the token in the command line

    @property
    def module(self) -> str | None:
        """`mod.param=` names a module parameter; `-` and `_` are equal (kernel parameq)."""
        mod, dot, _ = self.key.partition(".")
        return mod.replace("-", "_") if dot else None

    @property
    def param(self) -> str:
        return self.key.partition(".")[2].replace("-", "_") if "." in self.key else self.key


@dataclass(frozen=True)
class Cmdline:
    text: str
    source: str  # where it came from, for evidence (a path or "--cmdline")
    params: tuple[Param, ...]
    line: int | None = None  # the line of `source` it is on (a bootloader entry)

    def module_params(self, module: str, param: str) -> list[Param]:
        module = module.replace("-", "_")
        param = param.replace("-", "_")
        return [p for p in self.params if p.module == module and p.param == param]

    def get(self, key: str) -> list[Param]:
        key = key.replace("-", "_")
        return [p for p in self.params if p.key.replace("-", "_") == key]

    def evidence(self, p: Param) -> Evidence:
        token = p.key if p.value is None else f"{p.key}={p.value}"
        return Evidence(self.source, self.line, token)


def parse_cmdline(text: str, source: str, line: int | None = None) -> Cmdline:
    """Split like the kernel's next_arg(): spaces separate, double quotes group, `--` ends."""
    text = text.replace("\0", " ").rstrip("\n")
    params: list[Param] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        start = i
        in_quote = quoted = False
        if text[i] == '"':
            i += 1
            in_quote = quoted = True
        token_start = i
        equals = -1
        while i < n and (in_quote or not text[i].isspace()):
            if equals < 0 and text[i] == "=":
                equals = i
            if text[i] == '"':
                in_quote = not in_quote
            i += 1
        token = text[token_start:i]
        if quoted and token.endswith('"'):
            token = token[:-1]
        if equals < 0:
            key, value = token, None
        else:
            key, value = text[token_start:equals], token[equals - token_start + 1 :]
            # The kernel drops a leading quote of the value and the token's closing one.
            if value.startswith('"'):
                value = value[1:]
                if value.endswith('"'):
                    value = value[:-1]
        if key == "--" and value is None:
            break  # everything after `--` goes to init, not to the kernel
        params.append(Param(key, value, start))
    return Cmdline(text, source, tuple(params), line)
