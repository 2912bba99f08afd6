"""A domU kernel's PCI frontend (CONFIG_XEN_PCIDEV_FRONTEND, module xen-pcifront), from whatever the
admin has: a config file, a module tree, a bzImage or a vmlinux; and, without a config, the
architecture its bytes show (facts/machine.py): an Arm kernel is never a PV guest."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, BinaryIO

from pciback_doctor.facts.kconfig import ConfigError, KernelConfig, decode_config, parse_config
from pciback_doctor.facts.machine import HEAD, Machine, kernel_image_machine
from pciback_doctor.facts.modules import ModuleTree
from pciback_doctor.model import Evidence

if TYPE_CHECKING:  # the kernel image reader is imported when an image is read (start-up time)
    from pciback_doctor.facts.kimage import KernelImage

FRONTEND = "CONFIG_XEN_PCIDEV_FRONTEND"
FRONTEND_MODULE = "xen_pcifront"
# pcifront_init() is the frontend's initcall: in kallsyms only when it is built in.
FRONTEND_SYMBOL = "pcifront_init"


@dataclass(frozen=True)
class DomuKernel:
    path: str
    frontend: str  # builtin | module | missing | unknown
    evidence: tuple[Evidence, ...] = ()
    note: str = ""  # what would decide an `unknown`, or how it was decided
    module_present: bool | None = None  # the frontend module is in the domU's module tree
    config: KernelConfig | None = None  # its config, when known: guest types (XEN_PV) and arch
    machine: Machine | None = None  # its architecture from its bytes, when there is no config


def from_config(config: KernelConfig, path: str) -> DomuKernel:
    if not config.known(FRONTEND):  # defconfig form: absent is Kconfig's default, not n
        note = f"a defconfig-form config without {FRONTEND}: give the expanded .config (make olddefconfig)"
        return DomuKernel(path, "unknown", (config.evidence(FRONTEND),), note=note, config=config)
    value = config.get(FRONTEND)
    mode = {"y": "builtin", "m": "module"}.get(value, "missing")
    return DomuKernel(path, mode, (config.evidence(FRONTEND),), config=config)


def from_module_tree(tree: ModuleTree, machine: Machine | None = None) -> DomuKernel:
    """`machine`: what one of the tree's modules was built for (an arm64 tree has no xen-pcifront
    because Arm has no PV guests, not because the frontend was left out)."""
    if tree.is_builtin(FRONTEND_MODULE):
        return DomuKernel(
            tree.path, "builtin", (tree.builtin[FRONTEND_MODULE],), module_present=False, machine=machine
        )
    if tree.has_file(FRONTEND_MODULE):
        where = Evidence(f"{tree.path}/{tree.files[FRONTEND_MODULE]}", None, "module file")
        return DomuKernel(tree.path, "module", (where,), module_present=True, machine=machine)
    if tree.has_index or tree.files:
        no = Evidence(tree.path, None, "no xen-pcifront")
        return DomuKernel(tree.path, "missing", (no,), module_present=False, machine=machine)
    return DomuKernel(
        tree.path, "unknown", note="the module tree has no modules.dep and no module files", machine=machine
    )


def from_image(data: bytes, path: str) -> DomuKernel:
    from pciback_doctor.facts.kimage import inspect_kernel_image

    kernel = _from_kernel_image(inspect_kernel_image(data, path), path)
    return (
        replace(kernel, machine=kernel_image_machine(data[:HEAD], path)) if kernel.config is None else kernel
    )


def from_image_file(stream: BinaryIO, path: str) -> DomuKernel:
    """The same from an open image file, read in pieces (bounded memory whatever its size)."""
    from pciback_doctor.facts.kimage import inspect_kernel_file

    kernel = _from_kernel_image(inspect_kernel_file(stream, path), path)
    if kernel.config is not None:
        return kernel
    stream.seek(0)
    return replace(kernel, machine=kernel_image_machine(stream.read(HEAD), path))


def _from_kernel_image(image: KernelImage, path: str) -> DomuKernel:
    if image.config is not None:
        return from_config(image.config, image.config.path)
    if image.error and not image.symbols:
        return DomuKernel(path, "unknown", note=f"cannot read the kernel image: {image.error}")
    if FRONTEND_SYMBOL in image.symbols:
        return DomuKernel(
            path,
            "builtin",
            (Evidence(path, None, f"symbol {FRONTEND_SYMBOL}"),),
            note="from the image's symbols",
        )
    if image.symbols:
        return DomuKernel(
            path,
            "unknown",
            note=f"{FRONTEND_SYMBOL} is not built in; whether xen-pcifront is a module needs the kernel's config or module tree",
        )
    return DomuKernel(
        path, "unknown", note="no IKCONFIG and no symbols in the image: give its config or module tree"
    )


def from_config_bytes(data: bytes, path: str) -> DomuKernel | None:
    """A kernel config file, or None when the bytes are not one."""
    try:
        return from_config(parse_config(decode_config(data), path), path)
    except ConfigError:
        return None
