"""PB4xx: the initramfs the next boot will use."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pciback_doctor.checks import Check, check
from pciback_doctor.model import Evidence, Finding, Fix, Severity

if TYPE_CHECKING:  # annotations only: `explain` must not import the boot model and readers
    from pciback_doctor.boot.analysis import Analysis


@check(
    "PB401",
    Severity.WARNING,
    "No initramfs found for the target kernel",
    """The doctor looks for the default boot entry's initrd, then boot/initramfs-K.img, boot/initrd.img-K and
    boot/initrd-K. Without it, it cannot tell whether a native driver loads from the initramfs before the
    backend; predictions that depend on it are 'unknown'. Name it with --initramfs.""",
)
def no_image(chk: Check, a: Analysis) -> Iterator[Finding]:
    if a.image is None and a.image_problem:
        yield chk.finding(a.image_problem)


@check(
    "PB403",
    Severity.ERROR,
    "initramfs unreadable",
    """The image is not a sequence of cpio archives in a compression the kernel knows (gzip, zstd, xz, lzma,
    bzip2, lz4, lzo), or it is truncated or corrupt. The kernel would fail to unpack it the same way. Or
    reading it hit one of the doctor's limits (decompressed size, entry count, compression ratio, size of a
    file it reads inside): the message names the limit; no real image comes near them.""",
)
def unreadable(chk: Check, a: Analysis) -> Iterator[Finding]:
    if a.image is not None and a.image.error:
        yield chk.finding(f"{a.image.path}: {a.image.error}", evidence=[a.image.where("")])


def _relevant(a: Analysis) -> set[str]:
    """Modules whose modprobe.d settings decide the outcome: the backend and the natives in play.
    Not `pciback`: kmod applies options to the module's own name (after alias resolution), so an
    `options pciback` line is dead on every kernel since 3.1 (PB105) and no image needs a copy."""
    names = {a.backend.backend.module}
    names.update(d.native.name for d in a.devices if d.native.name)
    return names


def _missing_in_image(a: Analysis) -> tuple[list[Evidence], list[Evidence]]:
    """Host directives that matter for the boot and that the image's modprobe.d lacks, split into
    (stale: the image has an older copy of the file or copies /etc anyway, not copied: a
    non-hostonly dracut image never took /etc/modprobe.d)."""
    image = a.image
    assert image is not None
    have = {(d.command, d.module, " ".join(d.args.split())) for d in image.modprobe.directives}
    files_in_image = {d.evidence.path.split("!", 1)[1] for d in image.modprobe.directives}
    # dracut copies /etc/modprobe.d only in hostonly mode (modules.d/90kernel-modules);
    # initramfs-tools and mkinitcpio always copy it.
    copies_etc = not (image.generator == "dracut" and image.hostonly is False)
    install_items = {w.lstrip("/") for w in a.system.dracut_conf.words("install_items")}
    relevant = _relevant(a)
    stale: list[Evidence] = []
    not_copied: list[Evidence] = []
    for d in a.system.modprobe.directives:
        if d.command not in ("options", "softdep", "install", "blacklist") or d.module not in relevant:
            continue
        if d.evidence.path.endswith("modules.softdep"):
            continue  # depmod's file, not a setting of the admin
        if (d.command, d.module, " ".join(d.args.split())) in have:
            continue
        path = d.evidence.path
        copied = copies_etc or path in files_in_image or path in install_items or not path.startswith("etc/")
        (stale if copied else not_copied).append(d.evidence)
    return stale, not_copied


@check(
    "PB402",
    Severity.ERROR,
    "initramfs older than the host's settings",
    """The image holds its own copy of modprobe.d. A softdep or options line added on the host since the
    image was built is not in it, so the initramfs still loads the native driver first. Rebuild the image
    (dracut -f, update-initramfs -u, mkinitcpio -P) after changing modprobe.d.""",
)
def stale(chk: Check, a: Analysis) -> Iterator[Finding]:
    if a.image is None or a.image.error:
        return
    missing, _ = _missing_in_image(a)
    if a.image.generator == "dracut":
        missing += _dracut_config_not_in_image(a)
    if missing:
        yield chk.finding(
            f"{len(missing)} modprobe.d setting(s) that matter are on the host but not in {a.image.path}: it was built before they were written",
            evidence=missing,
            fixes=[Fix("rebuild", "rebuild the initramfs", commands=(_rebuild(a),))],
        )


@check(
    "PB404",
    Severity.WARNING,
    "Host modprobe.d not copied into a non-hostonly dracut image",
    """dracut copies /etc/modprobe.d into the image only in hostonly mode; a generic (--no-hostonly) image
    carries /usr/lib/modprobe.d and /lib/modprobe.d only. Add the file with install_items+=" /etc/modprobe.d/
    FILE " in a dracut.conf.d snippet, or use the pciback dracut module.""",
)
def not_copied(chk: Check, a: Analysis) -> Iterator[Finding]:
    if a.image is None or a.image.error:
        return
    _, missing = _missing_in_image(a)
    if missing:
        yield chk.finding(
            f"{a.image.path} is a non-hostonly dracut image: these host settings are not in it",
            evidence=missing,
        )


def _dracut_config_not_in_image(a: Analysis) -> list[Evidence]:
    """dracut.conf.d asks for what the image lacks: it was built before the setting was written."""
    image = a.image
    assert image is not None
    conf = a.system.dracut_conf
    missing = []
    for setting in ("add_drivers", "force_drivers"):
        for word, evidence in conf.words(setting).items():
            if word.replace("-", "_") == "xen_pciback" and "xen_pciback" not in image.modules:
                missing.append(evidence)
    for word, evidence in conf.words("add_dracutmodules").items():
        if word == "xen-pciback" and image.pciback_hook is None:
            missing.append(evidence)
    return missing


def _rebuild(a: Analysis) -> str:
    from pciback_doctor.fixes import rebuild_command  # the fix layer, only when a finding needs it

    return rebuild_command(a)
