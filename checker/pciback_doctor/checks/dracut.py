"""PB7xx: the project's dracut module (dracut-module/90xen-pciback)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pciback_doctor.checks import Check, check
from pciback_doctor.facts.cmdline import Cmdline
from pciback_doctor.model import Evidence, Finding, Fix, Severity

if TYPE_CHECKING:  # annotations only: `explain` must not import the boot model and readers
    from pciback_doctor.boot.analysis import Analysis

HOST_LIST = "etc/xen-pciback.conf"


def _configured(a: Analysis) -> list[Evidence]:
    """Where the host asks for the dracut module: its device list, dracut.conf.d, the command line."""
    found = [e for w, e in a.system.dracut_conf.words("add_dracutmodules").items() if w == "xen-pciback"]
    if HOST_LIST in a.system.files:
        found.append(Evidence(HOST_LIST, None, "the dracut module's device list"))
    cmd = a.system.cmdline
    if cmd is not None:
        found += [cmd.evidence(p) for p in cmd.get("rd.xen_pciback.hide")]
    return found


@check(
    "PB701",
    Severity.ERROR,
    "The pciback dracut module is configured but not in the image",
    """The host names devices for the dracut module (rd.xen_pciback.hide=, /etc/xen-pciback.conf or
    add_dracutmodules+=" xen-pciback "), but the initramfs has no xen-pciback-hide.sh hook: the module is
    not installed in /usr/lib/dracut/modules.d, or the image was built before it was. Install it
    (make -C dracut-module install) and rebuild the image (dracut -f).""",
)
def module_missing(chk: Check, a: Analysis) -> Iterator[Finding]:
    image = a.image
    if image is None or image.error or image.generator != "dracut" or image.pciback_hook is not None:
        return
    where = _configured(a)
    if where:
        yield chk.finding(
            f"the dracut module is asked for but {image.path} does not contain it",
            evidence=where,
            fixes=[
                Fix(
                    "dracut",
                    "install the module and rebuild the image",
                    commands=(
                        "make -C dracut-module install",
                        _rebuild(a),
                    ),
                )
            ],
        )


@check(
    "PB702",
    Severity.ERROR,
    "The dracut module's device list is malformed",
    """rd.xen_pciback.hide= takes comma-separated PCI addresses ([DDDD:]BB:SS.F, hex, slot below 0x20,
    function below 8), and /etc/xen-pciback.conf one per line. The module logs each bad entry and claims
    the rest; with rd.xen_pciback.strict=1 a bad entry stops the boot.""",
)
def malformed_list(chk: Check, a: Analysis) -> Iterator[Finding]:
    from pciback_doctor.boot.model import malformed_hook_entries

    cmds: list[Cmdline] = [
        c for c in (a.system.cmdline, *(a.image.cmdline_d if a.image else ())) if c is not None
    ]
    config = a.image.pciback_hook.config if a.image and a.image.pciback_hook else ()
    host_lines: tuple[tuple[str, Evidence], ...] = ()
    if HOST_LIST in a.system.files:  # `kernel` and `domu` have no host files: no image reader to load
        from pciback_doctor.facts.image import parse_device_list

        host_lines = parse_device_list(a.system.files[HOST_LIST], HOST_LIST)
    seen = set()
    for text, evidence in malformed_hook_entries(cmds, config + host_lines):
        if (text, evidence) not in seen:
            seen.add((text, evidence))
            yield chk.finding(f"'{text}' is not a PCI address the dracut module accepts", evidence=[evidence])


def _rebuild(a: Analysis) -> str:
    from pciback_doctor.fixes import rebuild_command  # the fix layer, only when a finding needs it

    return rebuild_command(a, "dracut")
