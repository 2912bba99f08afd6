"""Scrub identifiers from collected support facts: a separate pass over the finished structure (like
sos' `postproc`), so collection never has to think about privacy and nothing escapes by being
collected somewhere new.

Every identifier becomes an obviously fake, numbered token (`uuid-1`, `host-1`, `mac-1`, `ip-1`,
`serial-1`, `disk-1`, `user-1`, `machine-id-1`, `domain-1`, `email-1`, `iqn-1`), and the same value gets the same token everywhere in
the report, so a reader can still see that the root= UUID is the one GRUB searches for. What a
diagnosis needs stays: PCI addresses, vendor:device ids, kernel releases, module names.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pciback_doctor.render.escape import map_strings
from pciback_doctor.support.facts import SupportReport

T = TypeVar("T")

_HEX = "[0-9A-Fa-f]"
_UUID = re.compile(rf"(?<!{_HEX}){_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}(?!{_HEX})")
# root=UUID=ABCD-1234 (a FAT volume serial), PARTUUID=0a1b2c3d-02 (an MBR disk signature), and the
# same values as udev's /dev/disk/by-uuid/ and by-partuuid/ link names
_UUID_VALUE = re.compile(rf"(?:(?<=UUID=)|(?<=/by-uuid/)|(?<=/by-partuuid/)){_HEX}[0-9A-Fa-f-]*(?![\w-])")
# a FAT volume serial anywhere (GRUB's `search --fs-uuid --set=root 1A2B-3C4D`, fstab, EFI paths)
_FAT_SERIAL = re.compile(rf"(?<![\w-]){_HEX}{{4}}-{_HEX}{{4}}(?![\w-])")
# mdadm's array UUID, four 32-bit words (rd.md.uuid=, mdadm.conf's UUID=, /dev/disk/by-id/md-uuid-)
_MD_UUID = re.compile(rf"(?<![\w:]){_HEX}{{8}}(?::{_HEX}{{8}}){{3}}(?![\w:])")
# six or more hex pairs joined by one separator: a MAC, `01-`+MAC (pxelinux BOOTIF=), EUI-64, IPoIB.
# A `:` may come before (dracut `ifname=eth0:MAC`, `ip=...:MAC`): a longer run is matched whole anyway
_MAC = re.compile(
    rf"(?<![0-9A-Fa-f-]){_HEX}{{2}}([:-]){_HEX}{{2}}(?:\1{_HEX}{{2}}){{4,18}}"
    rf"(?![0-9A-Fa-f])(?![:-]{_HEX}{{2}}(?![0-9A-Za-z]))"
)
# a MAC without separators: udev's predictable name `enx001122334455`, `hwaddr=001122334455`
_MAC_BARE = re.compile(rf"(?:(?<=\benx)|(?<![0-9A-Za-z])){_HEX}{{12}}(?![0-9A-Za-z])")
# systemd's machine id (machine-id(5)): 32 hex digits, in `systemd.machine_id=`, in BLS entry file
# names (`<machine-id>-<release>.conf`) and ESP folders, even when etc/machine-id is empty
_MACHINE_ID = re.compile(r"(?<![0-9A-Za-z])[0-9A-Fa-f]{32}(?![0-9A-Za-z])")
# the kernel's and dracut's `ip=<client>:<peer>:<gateway>:<netmask>:<hostname>:...`: the 5th field
# (kernel Documentation/admin-guide/nfs/nfsroot.rst, dracut.cmdline(7)); the first field an address
_IP_FIELD = r"(?:\[[^\]\s]*\]|[^:\s]*)"
_IP_HOSTNAME = re.compile(
    rf"(?<![\w.-])ip=(?:\d{{1,3}}(?:\.\d{{1,3}}){{3}}|\[[^\]\s]*\])?:(?:{_IP_FIELD}:){{3}}"
    r"([A-Za-z0-9][A-Za-z0-9.-]*)(?=[:\s'\"]|$)"
)
# systemd's `systemd.hostname=` on the command line (systemd-hostnamed: it wins over etc/hostname),
# and `HOSTNAME=` / `hostname=` settings
_SET_HOSTNAME = re.compile(r"(?i)(?<![\w.-])(?:systemd\.)?hostname=[\"']?([A-Za-z0-9][A-Za-z0-9.-]*)")
_HOST_SETTINGS = (_IP_HOSTNAME, _SET_HOSTNAME)
# a name with no dot is not a domain anyone owns
_GENERIC_DOMAINS = frozenset({"localdomain", "local", "lan", "home", "internal", "intranet", "corp"})
_MAC_DOTTED = re.compile(rf"(?<![\w.]){_HEX}{{4}}\.{_HEX}{{4}}\.{_HEX}{{4}}(?![\w]|\.\w)")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\w)")
_IPV6 = re.compile(
    rf"(?<![\w:.])(?:{_HEX}{{0,4}}:){{2,7}}(?:(?:\d{{1,3}}\.){{3}}\d{{1,3}}|{_HEX}{{0,4}})(?:%[\w.-]+)?(?![\w:]|\.\w)"
)
_SERIAL = re.compile(
    r"(?i)(?<![\w])(?:id_serial(?:_short)?|serial_?number|serial[ _-]?no|serial_short|serial)"
    r"(?:\s*[=:]\s*)['\"]?([^\s'\",;)\]]+)"
)
_NOT_A_SERIAL = re.compile(r"(?i)^(?:pty|vc|null|none|stdio|tty\w*|com\d+|hvc\d*|0|1|yes|no|on|off)$")
_BY_ID = re.compile(r"(?<=/by-id/)[^\s/'\",;)\]]+?(?=-part\d+\b|[\s/'\",;)\]]|$)")
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# an iSCSI initiator or target name (RFC 3720): `rd.iscsi.initiator=iqn.2004-10.com.ubuntu:01:4f2a...`
_IQN = re.compile(r"(?i)(?<![\w.])iqn\.\d{4}-\d{2}\.[A-Za-z0-9.-]+(?::[^\s,'\";)\]]+)?")
_USER_PATH = re.compile(r"(?<![\w.-])/?(?:home|Users)/([^/\s'\",;:)\]]+)")
# a host called `xen` is not in `boot/xen.gz`; a domain after the name (`xen.example.com`) is
_FILE_SUFFIX = r"\.(?:cfg|conf|gz|efi|img|ko|xz|zst|cpio|sh|service)\b"
# what must survive: PCI addresses (with `.*` wildcards) and vendor:device[:class] ids
_BDF = re.compile(rf"(?<![0-9A-Fa-f:])(?:{_HEX}{{4}}:)?{_HEX}{{2}}:{_HEX}{{2}}\.[0-7*]")
_PCI_ID = re.compile(rf"(?<![0-9A-Fa-f:]){_HEX}{{4}}:{_HEX}{{4}}(?::{_HEX}{{6}})?(?![0-9A-Fa-f])")


@dataclass(frozen=True)
class _Hit:
    start: int
    end: int
    kind: str
    key: str  # the normalised value: the same key always gets the same token
    prefix: str = ""  # kept text at the start of the match (BOOTIF's `01-`)
    weak: bool = False  # a pattern that a kernel release or module name could also match


class Pseudonyms:
    """value -> token, numbered per kind in the order values are first met."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}

    def token(self, kind: str, key: str) -> str:
        found = self._tokens.get((kind, key))
        if found is None:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            found = self._tokens[(kind, key)] = f"{kind}-{self._counts[kind]}"
        return found

    def counts(self) -> tuple[tuple[str, int], ...]:
        return tuple(self._counts.items())


class Redactor:
    def __init__(
        self,
        hostnames: Iterable[str] = (),
        machine_ids: Iterable[str] = (),
        keep: Iterable[str] = (),
        pseudonyms: Pseudonyms | None = None,
    ) -> None:
        self.pseudonyms = pseudonyms or Pseudonyms()
        self._literals: list[tuple[re.Pattern[str], str, str, bool]] = []
        for mid in {m.strip().lower() for m in machine_ids if m and m.strip()}:
            pattern = re.compile(rf"(?<!{_HEX}){re.escape(mid)}(?!{_HEX})", re.IGNORECASE)
            self._literals.append((pattern, "machine-id", mid, False))
        # host names in any case (`MyHost` in etc/hostname, `myhost` in `ip=`), and the FQDN's domain
        # (`mail.example.org` -> `mail.domain-1`); but a short plain word matches only as written, in
        # lower and in upper case: a host called `xen` must not turn "Xen 4.17" into "host-1 4.17"
        names: dict[str, str] = {}  # spelling -> key
        domains: set[str] = set()
        for host in hostnames:
            host = host.strip().rstrip(".")
            short, _, domain = host.partition(".")
            if len(short) < 2 or short.lower() in ("localhost", "localdomain"):
                continue
            for spelling in (host, short):
                names[spelling] = short.lower()
            if domain and domain.lower() not in _GENERIC_DOMAINS:
                domains.add(domain.lower())
        for value, key in sorted(names.items(), key=lambda n: (-len(n[0]), n[0])):
            if re.fullmatch(r"[A-Za-z]{1,4}", value):
                body = "|".join(re.escape(v) for v in sorted({value, value.lower(), value.upper()}))
                pattern = re.compile(rf"(?<![\w.-])(?:{body})(?![\w-]|{_FILE_SUFFIX})")
            else:
                # inside names too: anaconda's volume group `fedora_HOST`, and device-mapper's
                # `/dev/mapper/fedora_my--host-root` (dm doubles a `-` of the VG name)
                body = "|".join(
                    re.escape(v) for v in sorted({value, value.replace("-", "--")}, key=len)[::-1]
                )
                pattern = re.compile(
                    rf"(?<![A-Za-z0-9])(?:{body})(?![A-Za-z0-9]|{_FILE_SUFFIX})", re.IGNORECASE
                )
            self._literals.append((pattern, "host", key, True))
        for domain in sorted(domains, key=len, reverse=True):
            pattern = re.compile(rf"(?<![\w-]){re.escape(domain)}(?![\w-]|{_FILE_SUFFIX})", re.IGNORECASE)
            self._literals.append((pattern, "domain", domain, True))
        words = sorted({k for k in keep if k}, key=len, reverse=True)
        self._keep = (
            re.compile("|".join(rf"(?<![A-Za-z0-9]){re.escape(w)}(?![A-Za-z0-9])" for w in words))
            if words
            else None
        )

    # -- finding identifiers --------------------------------------------------------------------
    def _hits(self, text: str) -> Iterator[_Hit]:
        for pattern, kind, key, weak in self._literals:
            for m in pattern.finditer(text):
                yield _Hit(m.start(), m.end(), kind, key, weak=weak)
        for m in _UUID.finditer(text):
            yield _Hit(m.start(), m.end(), "uuid", m.group().lower())
        for m in _UUID_VALUE.finditer(text):
            yield _Hit(m.start(), m.end(), "uuid", m.group().lower())
        for pattern in (_FAT_SERIAL, _MD_UUID):
            for m in pattern.finditer(text):
                yield _Hit(m.start(), m.end(), "uuid", m.group().lower())
        for m in _MACHINE_ID.finditer(text):
            yield _Hit(m.start(), m.end(), "machine-id", m.group().lower())
        for m in _MAC_BARE.finditer(text):
            flat = m.group().lower()
            if not flat.isdigit():  # twelve decimal digits are a time or a count before a MAC
                yield _Hit(m.start(), m.end(), "mac", ":".join(flat[i : i + 2] for i in range(0, 12, 2)))
        for m in _EMAIL.finditer(text):
            yield _Hit(m.start(), m.end(), "email", m.group().lower())
        for m in _IQN.finditer(text):
            yield _Hit(m.start(), m.end(), "iqn", m.group().lower())
        for m in (m for pattern in _HOST_SETTINGS for m in pattern.finditer(text)):
            yield _Hit(m.start(1), m.end(1), "host", m.group(1).split(".", 1)[0].lower(), weak=True)
        for m in _MAC.finditer(text):
            pairs = re.split("[:-]", m.group().lower())
            prefix = ""
            if len(pairs) == 7:  # pxelinux BOOTIF=01-aa-bb-...: ARP hardware type, then the MAC
                prefix, pairs = pairs[0] + m.group(1), pairs[1:]
            yield _Hit(m.start(), m.end(), "mac", ":".join(pairs), prefix)
        for m in _MAC_DOTTED.finditer(text):
            flat = m.group().replace(".", "").lower()
            yield _Hit(m.start(), m.end(), "mac", ":".join(flat[i : i + 2] for i in range(0, 12, 2)))
        for m in _IPV4.finditer(text):
            try:
                v4 = ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            if not (v4.is_loopback or v4.is_unspecified or _is_netmask(v4)):
                yield _Hit(m.start(), m.end(), "ip", str(v4), weak=True)
        for m in _IPV6.finditer(text):
            address, _, _zone = m.group().partition("%")
            try:
                v6 = ipaddress.IPv6Address(address)
            except ValueError:
                continue  # BDFs (0000:05:00.0), ids (8086:10d3) and times all land here
            if not (v6.is_loopback or v6.is_unspecified):
                yield _Hit(m.start(), m.start() + len(address), "ip", str(v6))
        for m in _SERIAL.finditer(text):
            if not _NOT_A_SERIAL.match(m.group(1)):
                yield _Hit(m.start(1), m.end(1), "serial", m.group(1))
        for m in _BY_ID.finditer(text):
            yield _Hit(m.start(), m.end(), "disk", m.group())
        for m in _USER_PATH.finditer(text):
            yield _Hit(m.start(1), m.end(1), "user", m.group(1))

    def _protected(self, text: str) -> list[tuple[int, int]]:
        spans = [m.span() for p in (_BDF, _PCI_ID) for m in p.finditer(text)]
        if self._keep is not None:
            spans += [m.span() for m in self._keep.finditer(text)]
        return spans

    def text(self, text: str) -> str:
        if not text:
            return text
        protected = self._protected(text)
        hits = sorted(self._hits(text), key=lambda h: (h.start, -(h.end - h.start)))
        out: list[str] = []
        pos = 0
        for hit in hits:
            if hit.start < pos:
                continue  # overlaps a longer or earlier identifier already replaced
            if hit.weak and any(s <= hit.start and hit.end <= e for s, e in protected):
                continue  # inside a PCI address, an id, a kernel release or a module name
            out.append(text[pos : hit.start])
            out.append(hit.prefix + self.pseudonyms.token(hit.kind, hit.key))
            pos = hit.end
        out.append(text[pos:])
        return "".join(out)


def _is_netmask(address: ipaddress.IPv4Address) -> bool:
    bits = int(address)
    inverted = ~bits & 0xFFFFFFFF
    return bits >> 31 == 1 and inverted & (inverted + 1) == 0


def keep_words(sr: SupportReport) -> set[str]:
    """Kernel releases, module names and the distribution's names (os-release PRETTY_NAME and NAME,
    as boot menu titles use them): never mistaken for a host name or an address."""
    words = {sr.kernel.release or "", sr.kernel.running or "", sr.kernel.backend_module}
    words.update(w for w in (sr.platform.name, sr.platform.os_name) if " " in w)  # never one bare word
    if sr.image is not None:
        words.update(sr.image.releases)
        words.update(name for name, _present in sr.image.native_present)
    for d in sr.devices:
        words.update(w for w in (d.native_driver, d.winner, d.current_driver) if w)
    return words


def discovered_hostnames(sr: SupportReport) -> set[str]:
    """Host names the report names itself (`ip=...:HOST:...`, `systemd.hostname=HOST`): found
    everywhere else too, even when etc/hostname is empty."""
    found: set[str] = set()

    def scan(text: str) -> str:
        found.update(m.group(1) for pattern in _HOST_SETTINGS for m in pattern.finditer(text))
        return text

    map_strings(sr, scan)
    return found


def redact(sr: SupportReport) -> SupportReport:
    redactor = Redactor(
        hostnames=[*([sr.host.hostname] if sr.host.hostname else []), *sorted(discovered_hostnames(sr))],
        machine_ids=[sr.host.machine_id] if sr.host.machine_id else [],
        keep=keep_words(sr),
    )
    scrubbed = map_strings(sr, redactor.text)
    # os-release names the distribution, not the machine: a host called `debian` (Debian's default)
    # must not turn "Debian GNU/Linux 12 (bookworm)" into "host-1 GNU/Linux 12 (bookworm)"
    platform = dataclasses.replace(
        sr.platform, grub_update=scrubbed.platform.grub_update, rebuild=scrubbed.platform.rebuild
    )
    return dataclasses.replace(
        scrubbed, platform=platform, redacted=True, redactions=redactor.pseudonyms.counts()
    )
