"""The default boot entry of the NEXT boot (SPEC §4): GRUB, BLS (systemd-boot or grub's blscfg) and
Xen's own EFI loader (`xen.efi` + `xen.cfg`), read through a root.

The answer is what the boot loader will do, not what its configuration tools would generate: GRUB
runs `grub.cfg`, so `grub.cfg` decides and `etc/default/grub` only explains (and, when the two
disagree, shows that `update-grub` was not run: a `Staleness`). Nothing here raises on bad input;
whatever cannot be understood becomes a `BootProblem`.

One module per loader or input:
- `grub_script`: the GRUB script language (lexer, parser, interpreter) that runs `grub.cfg`;
- `grub_menu`: `grub.cfg` as a menu of entries and the one its `default` picks;
- `grub_defaults`: `etc/default/grub` (+ `grub.d`) as grub-mkconfig sources it, and `grubenv`;
- `stale`: whether `grub.cfg` still carries what `etc/default/grub` says;
- `bls`: Boot Loader Specification entries (systemd-boot, blscfg);
- `xen_cfg`: Xen's EFI loader and its `xen.cfg`;
- `efivars`: which loader the firmware starts next;
- `next_boot`: the choice among them (`find_next_boot`); `entry`: what they all produce.
"""

from pciback_doctor.facts.bootloader.entry import BootEntry, BootProblem, kernel_release_of
from pciback_doctor.facts.bootloader.grub_defaults import grub_variables, shell_variables
from pciback_doctor.facts.bootloader.next_boot import NextBoot, find_next_boot
from pciback_doctor.facts.bootloader.stale import Staleness

__all__ = [
    "BootEntry",
    "BootProblem",
    "NextBoot",
    "Staleness",
    "find_next_boot",
    "grub_variables",
    "kernel_release_of",
    "shell_variables",
]
