"""XenServer / XCP-ng's own tool for the dom0 command line, `/opt/xensource/libexec/xen-cmdline`:
the command a fix prints there, and what that command does to grub.cfg, so the fix simulation can
apply it (fixes/simulate.py). These platforms have no grub-mkconfig workflow: the installer writes
grub.cfg once (host-installer backend.py buildBootLoaderMenu) and xen-cmdline edits it in place.

What the tool does (xcp-ng-release src/common/opt/xensource/libexec/xen-cmdline, on top of
python-libs xcp/bootloader.py):
- it edits the grub.cfg `Bootloader.loadExisting()` finds: boot/efi/EFI/xenserver/grub.cfg, else
  boot/grub/grub.cfg, else boot/grub2/grub.cfg (the one facts/bootloader reads first as well);
- only the entries `readGrub2` labels `xe` (title == PRODUCT_BRAND) and `xe-serial` (title ending in
  "(Serial)"): safe mode and the fallback entries keep their arguments;
- `--set-dom0 KEY=VALUE`: the dom0 arguments (the first `module2`/`xen_module` after `multiboot2`/
  `xen_hypervisor`) lose every word whose key is KEY (`KEY=…` or `KEY` alone), then KEY=VALUE is
  appended; `--delete-dom0 KEY` only removes; `--set-xen` / `--delete-xen` do the same to Xen's own
  arguments (the `multiboot2` line). Arguments are split as `getKernelArgs` does.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from pciback_doctor.facts.root import Root

XEN_CMDLINE = "/opt/xensource/libexec/xen-cmdline"
_DOM0 = ("--set-dom0", "--delete-dom0")
_XEN = ("--set-xen", "--delete-xen")
_MENUENTRY = re.compile(r"menuentry ['\"]([^']*)['\"](.*){")  # readGrub2's own pattern
_ARG = re.compile(r'\S[^ "]*(?:"[^"]*")?\S*')  # MenuEntry.getKernelArgs


# Bootloader.loadExisting(): the first of these that exists is the file the tool reads and rewrites
CONFIGS = ("boot/efi/EFI/xenserver/grub.cfg", "boot/grub/grub.cfg", "boot/grub2/grub.cfg")


def target(root: Root) -> str | None:
    return next((path for path in CONFIGS if root.exists(path)), None)


def set_dom0(token: str) -> str:
    """The command that puts `token` (KEY=VALUE) on the dom0 command line of the default entries."""
    return f"{XEN_CMDLINE} --set-dom0 {shlex.quote(token)}"


def operations(command: str) -> list[tuple[str, list[str]]]:
    """The dom0 edits a printed xen-cmdline command makes, in order ([] for any other command);
    the arguments are grouped under the option before them, as the script's own loop does."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return []
    if not argv or argv[0] != XEN_CMDLINE:
        return []
    ops: list[tuple[str, list[str]]] = []
    for arg in argv[1:]:
        if arg.startswith("--"):
            ops.append((arg, []))
        elif ops:
            ops[-1][1].append(arg)
    return [(opt, args) for opt, args in ops if opt in (*_DOM0, *_XEN) and args]


def _edited_args(args: Sequence[str], opt: str, values: Sequence[str]) -> list[str]:
    keys = [v.split("=")[0] for v in values]
    kept = [a for a in args if not any(a == k or a.startswith(f"{k}=") for k in keys)]
    return kept + list(values) if opt.startswith("--set") else kept


def _line(line: str, title: str, brand: str, ops: Sequence[tuple[str, Sequence[str]]]) -> str:
    if not ops or not (title == brand or title.endswith("(Serial)")):  # readGrub2's xe, xe-serial
        return line
    command, _, rest = line.strip().partition(" ")
    image, _, args_text = rest.strip().partition(" ")
    args = _ARG.findall(args_text)
    for opt, values in ops:
        args = _edited_args(args, opt, values)
    return "\t" + " ".join([command, image, *args])  # writeGrub2: "\tmultiboot2 %s %s", "\tmodule2 %s %s"


def edited(text: str, brand: str, ops: Sequence[tuple[str, Sequence[str]]]) -> str:
    """grub.cfg after these xen-cmdline edits. The real tool re-writes the whole file from its
    parse (writeGrub2); only the lines it changes matter to the boot, so only they change here."""
    out: list[str] = []
    title: str | None = None
    hypervisor = kernel = False
    for line in text.split("\n"):
        stripped = line.strip()
        if (m := _MENUENTRY.match(stripped)) is not None:
            title, hypervisor, kernel = m.group(1), False, False
        elif title is not None and stripped == "}":
            title = None
        elif title is not None and stripped.startswith(("multiboot2", "xen_hypervisor")):
            hypervisor = True
            line = _line(line, title, brand, [op for op in ops if op[0] in _XEN])
        elif (
            title is not None and stripped.startswith(("module2", "xen_module")) and hypervisor and not kernel
        ):
            kernel = True
            line = _line(line, title, brand, [op for op in ops if op[0] in _DOM0])
        out.append(line)
    return "\n".join(out)
