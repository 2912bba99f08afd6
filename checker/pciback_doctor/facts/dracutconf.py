"""The host's dracut configuration: what the next `dracut -f` will put into the image
(dracut.conf and dracut.conf.d/*.conf are shell: `name+=" value "` appends, `name="value"` sets)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pciback_doctor.model import Evidence

_ASSIGN = re.compile(r'^\s*([a-z_]+)(\+?=)\s*(["\']?)(.*?)\3\s*(?:#.*)?$')
LISTS = (
    "add_drivers",
    "force_drivers",
    "install_items",
    "add_dracutmodules",
    "dracutmodules",
    "omit_drivers",
)


@dataclass(frozen=True)
class DracutConfig:
    items: tuple[tuple[str, str, Evidence], ...] = ()  # (setting, word, where)

    def words(self, setting: str) -> dict[str, Evidence]:
        """The words of a list setting after every file was applied in order."""
        result: dict[str, Evidence] = {}
        for name, word, evidence in self.items:
            if name == setting:
                if word == "":  # a plain `=` resets the list
                    result.clear()
                else:
                    result[word] = evidence
        return result


def parse_dracut_conf(text: str, path: str) -> list[tuple[str, str, Evidence]]:
    items: list[tuple[str, str, Evidence]] = []
    for number, line in enumerate(text.splitlines(), 1):
        m = _ASSIGN.match(line)
        if m is None or m.group(1) not in LISTS:
            continue
        evidence = Evidence(path, number, line.strip())
        if m.group(2) == "=":
            items.append((m.group(1), "", evidence))
        items += [(m.group(1), word, evidence) for word in m.group(4).split()]
    return items
