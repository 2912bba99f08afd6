"""Systems made of inputs given alone, without a root: a kernel build for the CI gate (`kernel`)
and domU kernels and xl configs (`domu`). Kept apart from the collector (facts/system.py) so that
these commands do not import the bootloader, initramfs and image readers (start-up, issue 17)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from pciback_doctor.errors import UsageError
from pciback_doctor.facts.domu import DomuKernel, from_config, from_config_bytes, from_image, from_image_file
from pciback_doctor.facts.kconfig import ConfigError, decode_config, parse_config
from pciback_doctor.facts.limits import CONFIG_FILE, KERNEL_IMAGE, TEXT_FILE, Limit
from pciback_doctor.facts.modprobe import ModprobeConfig
from pciback_doctor.facts.modules import ModuleTree, module_name, parse_builtin, parse_builtin_modinfo
from pciback_doctor.facts.root import NotReadable, Root, check_lines, open_regular, read_regular
from pciback_doctor.facts.target import Options, System

if TYPE_CHECKING:
    from pciback_doctor.facts.xl import XlConfig


def read_explicit(path: str, what: str, limit: Limit = CONFIG_FILE, *, text: bool = True) -> bytes:
    """A file named on the command line: a regular file within `limit` (and LINE with `text`)."""
    try:
        data = read_regular(path, limit)
        if text:
            check_lines(data)
        return data
    except NotReadable as exc:
        raise UsageError(f"{what} {path}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror or exc}") from None


def inspect_domu_kernel(host: Path, shown: str) -> DomuKernel:
    """A domU kernel given as a module tree, a config file, a bzImage or a vmlinux."""
    if host.is_dir():
        from pciback_doctor.facts.domu import from_module_tree
        from pciback_doctor.facts.system import read_machine, read_module_tree  # the collector's readers

        tree_opts = Options(modules_dir=str(host))
        tree = read_module_tree(tree_opts, Root(host), None)
        assert tree is not None
        return from_module_tree(tree, read_machine(tree_opts, Root(host), None, tree))
    data = read_regular(host, KERNEL_IMAGE)
    return from_config_bytes(data, shown) or from_image(data, shown)


def kernel_build(
    config_path: str | None,
    modules_builtin: str | None,
    build_dir: str | None = None,
    source_dir: str | None = None,
    arch: str | None = None,
) -> System:
    """A kernel build for the CI gate: its `.config` and `modules.builtin`, or a whole build tree
    (`make O=DIR`): .config, modules.builtin(.modinfo), modules.order and the built modules."""
    if build_dir is not None:
        if not Path(build_dir).is_dir():
            raise UsageError(f"--build-dir {build_dir}: not a directory")
        if config_path is not None:
            raise UsageError("kernel: give --config F or --build-dir D, not both")
        config_path = str(Path(build_dir) / ".config")
        if not Path(config_path).is_file():
            raise UsageError(f"--build-dir {build_dir}: no .config in it (is it a kernel build tree?)")
    if config_path is None:
        raise UsageError("kernel: give --config F or --build-dir D")
    data = read_explicit(config_path, "--config", TEXT_FILE, text=False)
    try:
        text = decode_config(data)
        config = parse_config(text, config_path)
    except ConfigError as exc:
        raise UsageError(f"--config {config_path}: {exc}") from None
    if config.minimal:  # defconfig form: only the tree's Kconfig knows what is absent
        from pciback_doctor.facts.kexpand import expand_minimal

        config = expand_minimal(config, text, source_dir, build_dir, arch)
    modules = None
    if build_dir is not None:
        modules = read_build_tree(Path(build_dir))
    elif modules_builtin is not None:
        text = read_explicit(modules_builtin, "--modules-builtin", TEXT_FILE).decode("utf-8", "replace")
        modules = ModuleTree(
            release="build",
            path=str(Path(modules_builtin).parent),
            builtin=parse_builtin(text, modules_builtin),
            builtin_aliases=(),
            builtin_params={},
            aliases=(),
            files={},
            has_index=False,
        )
    return replace(
        bare_system(Path(config_path).absolute().parent),
        release_source="--config",
        config=config,
        modules=modules,
        domu_kernels=(from_config(config, config_path),),
    )


def read_build_tree(base: Path) -> ModuleTree:
    """A kernel build directory: modules.order lists what `make modules` built (`.o` names in
    newer trees, `.ko` in older ones); the `.ko` files sit next to their objects."""
    tree = Root(base)
    builtin_text = tree.read_text("modules.builtin", TEXT_FILE) or ""
    order = tree.read_text("modules.order", TEXT_FILE) or ""
    files = {}
    for line in order.splitlines():
        rel = line.strip()
        if rel.endswith(".o"):
            rel = rel[:-2] + ".ko"
        if rel and tree.exists(rel):
            files[module_name(rel)] = rel
    aliases, params = parse_builtin_modinfo(
        tree.read_bytes("modules.builtin.modinfo") or b"", f"{base}/modules.builtin.modinfo"
    )
    return ModuleTree(
        release="build",
        path=str(base),
        builtin=parse_builtin(builtin_text, f"{base}/modules.builtin"),
        builtin_aliases=aliases,
        builtin_params=params,
        aliases=(),
        files=files,
        has_index=bool(order),
    )


def bare_system(root: Path) -> System:
    """A system with no facts yet, for the commands that look at one input (kernel, domu)."""
    return System(
        root=Root(root),
        release=None,
        release_source="none",
        running_release=None,
        config=None,
        modules=None,
        backend_modinfo=None,
        modprobe=ModprobeConfig(()),
        cmdline=None,
        cmdline_kind="none",
        devices=(),
        sysfs=False,
    )


def domu_inputs(paths: list[str]) -> System:
    """`pciback-doctor domu ARGS...`: each argument a kernel image, config, module tree or xl config."""
    kernels: list[DomuKernel] = []
    configs: list[XlConfig] = []
    for path in paths:
        host = Path(path)
        if not host.exists():
            raise UsageError(f"{path}: no such file or directory")
        try:
            if host.is_dir():
                kernels.append(inspect_domu_kernel(host, path))
                continue
            with open_regular(host) as stream:
                head = stream.read(0x1000)
                if head[:4] == b"\x7fELF" or head[0x202:0x206] == b"HdrS" or head[:2] == b"MZ":
                    kernels.append(from_image_file(stream, path))  # read in pieces: memory stays flat
                    continue
            data = read_regular(host, KERNEL_IMAGE)
        except NotReadable as exc:
            raise UsageError(f"{path}: {exc}") from None
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror or exc}") from None
        if (config := from_config_bytes(data, path)) is not None:
            kernels.append(config)
        elif b"\0" in data[:4096]:
            raise UsageError(f"{path}: not a kernel image, kernel config, module tree or xl config")
        else:
            try:  # an xl config is text: the limits of every text input apply
                if len(data) > CONFIG_FILE.value:
                    raise NotReadable(f"larger than the {CONFIG_FILE.describe()} limit")
                check_lines(data)
            except NotReadable as exc:
                raise UsageError(f"{path}: {exc}") from None
            from pciback_doctor.facts.xl import parse_xl  # only `domu` with an xl config needs it

            configs.append(parse_xl(data.decode("utf-8", "replace"), path))
    return replace(bare_system(Path.cwd()), domu_kernels=tuple(kernels), domu_configs=tuple(configs))
