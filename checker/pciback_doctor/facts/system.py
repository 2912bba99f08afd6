"""Collect every fact about the target system through its root (SPEC §2). The only place, with
the CLI, that touches files; the readers it calls are pure and the checks read nothing."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from pciback_doctor.arches import names_arch
from pciback_doctor.background import in_background
from pciback_doctor.errors import UsageError
from pciback_doctor.facts.bootloader import BootEntry, find_next_boot
from pciback_doctor.facts.builtin_pci import BuiltinPciDrivers, read_builtin_pci_drivers
from pciback_doctor.facts.cmdline import Cmdline, parse_cmdline
from pciback_doctor.facts.decode import exact
from pciback_doctor.facts.domu import DomuKernel, from_config_bytes, from_image
from pciback_doctor.facts.dracutconf import DracutConfig, parse_dracut_conf
from pciback_doctor.facts.image import ImageFacts, image_facts, needed_files, wanted_file
from pciback_doctor.facts.initramfs import Initramfs, read_initramfs
from pciback_doctor.facts.kconfig import ConfigError, KernelConfig, decode_config, parse_config
from pciback_doctor.facts.limits import ALIAS_COUNT, CONFIG_FILE, KERNEL_IMAGE, MODULE_FILE, TEXT_FILE
from pciback_doctor.facts.machine import HEAD, Machine, kernel_image_machine, module_machine
from pciback_doctor.facts.modprobe import (
    CONFIG_DIRS,
    ModprobeConfig,
    config_files,
    parse_modprobe_file,
)
from pciback_doctor.facts.modules import (
    MODULE_SUFFIXES,
    ModinfoError,
    ModuleInfo,
    ModuleTree,
    decompress_module,
    module_name,
    parse_alias_file,
    parse_builtin,
    parse_builtin_modinfo,
    parse_dep,
    read_modinfo,
)
from pciback_doctor.facts.pci import PciDevice, device_from_spec
from pciback_doctor.facts.platform import detect_platform
from pciback_doctor.facts.root import NotReadable, Root, open_regular
from pciback_doctor.facts.services import (
    MODULES_LOAD_DIRS,
    BackendLoader,
    LateBinding,
    backend_loaders,
    late_bindings,
    parse_unit,
)
from pciback_doctor.facts.snapshot import open_root
from pciback_doctor.facts.standalone import inspect_domu_kernel
from pciback_doctor.facts.standalone import read_explicit as _read_explicit
from pciback_doctor.facts.sysfs import PCI_DEVICES, read_pci_devices
from pciback_doctor.facts.target import BACKEND as BACKEND
from pciback_doctor.facts.target import Options as Options
from pciback_doctor.facts.target import System as System
from pciback_doctor.facts.xl import XlConfig, parse_xl
from pciback_doctor.model import Evidence


def _release_key(release: str) -> list[tuple[int, int | str]]:
    # natural order: 6.1.0-10 < 6.1.0-9 would be wrong as plain strings
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", release) if p]


def _module_dirs(root: Root) -> dict[str, str]:
    found: dict[str, str] = {}
    for base in ("usr/lib/modules", "lib/modules"):
        for name in root.listdir(base):
            if root.is_dir(f"{base}/{name}"):
                found.setdefault(name, f"{base}/{name}")
    return found


def select_release(opts: Options, root: Root, entry: BootEntry | None) -> tuple[str | None, str, str | None]:
    """(release, why, running release): SPEC §2, the default boot entry before `uname -r`."""
    running = root.running_release
    if opts.kernel:
        return opts.kernel, "--kernel", running
    if entry is not None and entry.kernel_release:
        return entry.kernel_release, f"default boot entry '{entry.title}'", running
    if running:
        return running, "uname -r (root is /)", running
    candidates = sorted(_module_dirs(root), key=_release_key)
    if candidates:
        return candidates[-1], "newest under lib/modules", running
    configs = sorted(
        (n[len("config-") :] for n in root.listdir("boot") if n.startswith("config-")),
        key=_release_key,
    )
    if configs:
        return configs[-1], "newest boot/config-*", running
    return None, "no kernel found under the root", running


def read_config(
    opts: Options, root: Root, release: str | None, running: str | None
) -> tuple[KernelConfig | None, list[Evidence]]:
    if opts.config:
        data = _read_explicit(opts.config, "--config", TEXT_FILE, text=False)
        try:
            return parse_config(decode_config(data), opts.config), []
        except ConfigError as exc:
            raise UsageError(f"--config {opts.config}: {exc}") from None
    if release is None:
        return None, []
    candidates = [
        f"boot/config-{release}",
        f"usr/lib/modules/{release}/config",
        f"lib/modules/{release}/config",
    ]
    if release == running:
        candidates.append("proc/config.gz")  # only describes the running kernel
    problems: list[Evidence] = []
    for rel in candidates:
        found = root.read_bytes(rel)
        if found is None:
            continue
        try:
            return parse_config(decode_config(found), rel), problems
        except ConfigError as exc:
            problems.append(Evidence(rel, None, f"unreadable kernel config: {exc}"))
    # last resort: the config the kernel image carries itself (CONFIG_IKCONFIG)
    for rel in kernel_image_candidates(release):
        blob = root.read_bytes(rel, KERNEL_IMAGE)
        if blob is None:
            continue
        from pciback_doctor.facts.kimage import inspect_kernel_image  # only when this fallback runs

        image = inspect_kernel_image(blob, rel)
        if image.config is not None:
            return image.config, problems
        problems.append(Evidence(rel, None, image.error or "no IKCONFIG in the kernel image"))
    return None, problems


def kernel_image_candidates(release: str) -> tuple[str, ...]:
    return (f"boot/vmlinuz-{release}", f"usr/lib/modules/{release}/vmlinuz", f"lib/modules/{release}/vmlinuz")


def read_builtin_pci(
    opts: Options, root: Root, release: str | None, modules: ModuleTree | None
) -> BuiltinPciDrivers | None:
    """Kernels that do not record their built-in drivers' PCI ids in modules.builtin.modinfo
    (before 6.x's built-in modaliases): read the id tables from the kernel image itself."""
    if modules is None or modules.records_builtin_pci_ids:
        return None  # nothing to match against, or the module tree already lists them
    from pciback_doctor.facts.kimage import vmlinux_of  # only for such kernels (start-up)

    if opts.kernel_image:
        shown = opts.kernel_image
        data = _read_explicit(opts.kernel_image, "--kernel-image", KERNEL_IMAGE, text=False)
    else:
        candidates = kernel_image_candidates(release) if release is not None else ()
        found = next(((rel, d) for rel in candidates if (d := root.read_bytes(rel, KERNEL_IMAGE))), None)
        if found is None:
            return None
        shown, data = found
    vmlinux, error = vmlinux_of(data)
    if vmlinux is not None:
        tables = read_builtin_pci_drivers(vmlinux, shown)
    else:  # an arm64 Image is no ELF and no bzImage: its own reader
        from pciback_doctor.facts.arm64_image import arm64_builtin_pci

        no_vmlinux = BuiltinPciDrivers(shown, (), error or "no vmlinux in the kernel image")
        tables = arm64_builtin_pci(data, shown) or no_vmlinux
    if opts.kernel_image and tables.error:  # named on the command line: unusable is a usage error
        raise UsageError(f"--kernel-image {shown}: {tables.error}")
    return tables


def read_module_tree(opts: Options, root: Root, release: str | None) -> ModuleTree | None:
    if opts.modules_dir:
        base = Path(opts.modules_dir)
        if not base.is_dir():
            raise UsageError(f"--modules-dir {opts.modules_dir}: not a directory")
        tree_root, rel = Root(base), ""
        shown = opts.modules_dir.rstrip("/")
    else:
        if release is None:
            return None
        found = _module_dirs(root).get(release)
        if found is None:
            return None
        tree_root, rel, shown = root, found, found

    def text(name: str) -> str | None:
        return tree_root.read_text(f"{rel}/{name}".lstrip("/"), TEXT_FILE)

    def at(name: str) -> str:
        return f"{shown}/{name}"

    builtin = parse_builtin(text("modules.builtin") or "", at("modules.builtin"))
    modinfo_bytes = tree_root.read_bytes(
        f"{rel}/modules.builtin.modinfo" if rel else "modules.builtin.modinfo"
    )
    b_aliases, b_params = parse_builtin_modinfo(modinfo_bytes or b"", at("modules.builtin.modinfo"))
    if len(b_aliases) > ALIAS_COUNT.value:
        tree_root.unreadable.setdefault(
            at("modules.builtin.modinfo"), f"more than the {ALIAS_COUNT.describe()} limit"
        )
        b_aliases = b_aliases[: ALIAS_COUNT.value]
    alias_text = text("modules.alias")
    aliases = parse_alias_file(alias_text or "", at("modules.alias"))
    if len(aliases) > ALIAS_COUNT.value:
        tree_root.unreadable.setdefault(at("modules.alias"), f"more than the {ALIAS_COUNT.describe()} limit")
        aliases = aliases[: ALIAS_COUNT.value]
    dep_text = text("modules.dep")
    files = parse_dep(dep_text) if dep_text is not None else _scan_module_files(tree_root, rel)
    return ModuleTree(
        release=release or shown.rsplit("/", 1)[-1],
        path=shown,
        builtin=builtin,
        builtin_aliases=b_aliases,
        builtin_params=b_params,
        aliases=aliases,
        files=files,
        softdep_text=text("modules.softdep") or "",
        has_index=alias_text is not None and dep_text is not None,
    )


def _scan_module_files(tree_root: Root, rel: str) -> dict[str, str]:
    # No modules.dep (depmod has not run, as in an unpacked kernel package): walk the tree.
    files: dict[str, str] = {}
    for relpath in tree_root.files_under(rel):
        name = relpath.rsplit("/", 1)[-1]
        if name.endswith(MODULE_SUFFIXES):
            files.setdefault(module_name(name), relpath)
    return files


def read_modprobe_files(root: Root) -> dict[str, bytes]:
    """The modprobe.d files kmod reads, in its order (the keys keep that order), read once."""
    listing = {d: root.listdir(d) for d in CONFIG_DIRS}
    found = {rel: root.read_bytes(rel, CONFIG_FILE, text=True) for rel in config_files(listing)}
    return {rel: data for rel, data in found.items() if data is not None}


def read_modprobe(root: Root, modules: ModuleTree | None, files: dict[str, bytes]) -> ModprobeConfig:
    config = ModprobeConfig(())
    for rel, data in files.items():
        config = config.merged(parse_modprobe_file(data.decode("utf-8", "replace"), rel))
    if modules is not None and modules.softdep_text:
        # depmod's modules.softdep (from MODULE_SOFTDEP) is read after the config files.
        softdeps = parse_modprobe_file(modules.softdep_text, f"{modules.path}/modules.softdep")
        config = config.merged(softdeps)
    if root.exists("etc/modprobe.conf"):
        legacy = Evidence("etc/modprobe.conf", None, "kmod does not read etc/modprobe.conf")
        config = ModprobeConfig(config.directives, (*config.problems, legacy))
    return config


def _entry_line(entry: BootEntry, needle: str | None) -> tuple[str, int | None]:
    """The bootloader line an entry's kernel arguments are on (the `linux`/`module2`/options line)."""
    for e in entry.evidence:
        if (needle and needle in e.text) or e.text.startswith(("options", "kernel=")):
            return e.path, e.line
    first = entry.evidence[0] if entry.evidence else None
    return (first.path, first.line) if first else (entry.source, None)


def read_cmdline(
    opts: Options, entry: BootEntry | None, current: Cmdline | None
) -> tuple[Cmdline | None, str]:
    if opts.cmdline is not None:
        return parse_cmdline(opts.cmdline, "--cmdline"), "option"
    if opts.cmdline_file:
        data = _read_explicit(opts.cmdline_file, "--cmdline-file")
        return parse_cmdline(data.decode("utf-8", "replace").strip(), opts.cmdline_file), "option"
    if entry is not None and entry.kernel_path:
        path, line = _entry_line(entry, entry.kernel_path.rsplit("/", 1)[-1])
        return parse_cmdline(entry.cmdline, path, line), "boot-entry"
    return (current, "proc") if current is not None else (None, "none")


def offline_devices(opts: Options) -> tuple[PciDevice, ...]:
    devices = []
    for spec in opts.devices:
        try:
            bdf, vendor, device, klass = device_from_spec(spec)
        except ValueError as exc:
            raise UsageError(
                f"--device {spec}: {exc}; expected BDF[=VVVV:DDDD[:CCCCCC]], e.g. 0000:05:00.0=8086:10d3"
            ) from None
        devices.append(PciDevice(bdf, vendor, device, None, None, klass, None, None, None, None, "--device"))
    return tuple(devices)


def read_backend_modinfo(
    root: Root, modules: ModuleTree | None, opts: Options
) -> tuple[ModuleInfo | None, list[Evidence], Evidence | None]:
    """The backend module's .modinfo, the inputs that could not be read, and why a module file
    that is there cannot be loaded (empty, truncated, not a module)."""
    if modules is None or BACKEND not in modules.files:
        return None, [], None
    relfile = modules.files[BACKEND]
    if opts.modules_dir:
        data = Root(opts.modules_dir).read_bytes(relfile, MODULE_FILE)
    else:
        data = root.read_bytes(f"{modules.path}/{relfile}", MODULE_FILE)
    shown = f"{modules.path}/{relfile}"
    if data is None:
        return None, [Evidence(shown, None, "listed in modules.dep but missing or unreadable")], None
    if not data:
        broken = Evidence(shown, None, "empty file: not a kernel module")
        return None, [broken], broken
    try:
        return read_modinfo(data, shown), [], None
    except ModinfoError as exc:
        broken = Evidence(shown, None, f"unreadable module: {exc}")
        return None, [broken], broken


UNIT_DIRS = ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")


def read_loaders(root: Root) -> list[BackendLoader]:
    found: list[BackendLoader] = []
    # systemd-modules-load: same basename in a higher directory masks the lower one
    chosen: dict[str, str] = {}
    for directory in MODULES_LOAD_DIRS:
        for name in root.listdir(directory):
            if name.endswith(".conf"):
                chosen.setdefault(name, f"{directory}/{name}")
    for name in sorted(chosen):
        found += backend_loaders("modules-load.d", chosen[name], root.read_text(chosen[name]) or "")
    found += backend_loaders("etc/modules", "etc/modules", root.read_text("etc/modules") or "")
    settings = [
        (r, t) for r in ("etc/default/xencommons", "etc/sysconfig/xencommons") if (t := root.read_text(r))
    ]
    for rel in ("etc/init.d/xencommons", "etc/init.d/xen"):
        found += backend_loaders("xencommons", rel, root.read_text(rel) or "", settings)
    return found


def read_late_bindings(root: Root, domain_services: Sequence[str]) -> list[LateBinding]:
    found: list[LateBinding] = []
    units: dict[str, str] = {}
    for directory in UNIT_DIRS:
        for name in root.listdir(directory):
            if name.endswith(".wants") or name.endswith(".requires"):
                for unit in root.listdir(f"{directory}/{name}"):
                    units.setdefault(unit, "")
    # only enabled units run at boot: a unit file nothing wants (not yet `systemctl enable`d)
    # hands nothing to pciback
    for name in sorted(units):
        for directory in UNIT_DIRS:
            text = root.read_text(f"{directory}/{name}")
            if text is None:
                continue
            service = parse_unit(f"{directory}/{name}", text, domain_services)
            found += late_bindings(service.path, service.inline, service.before_domains)
            for script in service.exec_paths:
                body = _script_text(root, script.lstrip("/"))
                if body is not None:
                    found += late_bindings(script.lstrip("/"), body, service.before_domains)
            break
    rc_local = root.read_text("etc/rc.local")
    if rc_local is not None:
        found += late_bindings("etc/rc.local", rc_local, False)
    return found


def _script_text(root: Root, rel: str) -> str | None:
    """What a unit runs, if it is a script: a text file within CONFIG_FILE. Programs such as
    /sbin/lvm or systemd-udevd are binaries with nothing to say about pciback — never a finding."""
    if root.locate(rel) is not None:  # in the root (a fix's new script is only in the overlay)
        found = root.probe(rel)
        if found is None or found[0] > CONFIG_FILE.value or found[1] == b"\x7fELF":
            return None
    return root.read_text(rel)


def image_candidates(release: str) -> list[str]:
    return [f"boot/initramfs-{release}.img", f"boot/initrd.img-{release}", f"boot/initrd-{release}"]


def read_image(
    opts: Options, root: Root, release: str | None, entry: BootEntry | None
) -> tuple[ImageFacts | None, str | None]:
    """The initramfs of the next boot, streamed once; (facts, or why there are none)."""
    if opts.initramfs:
        shown = opts.initramfs
    else:
        if release is None:
            return None, "no target kernel, so no initramfs to look at"
        from_entry = [p.lstrip("/") for p in (entry.initrd_paths if entry else ())]
        candidates = from_entry[-1:] + image_candidates(release)  # the last initrd holds the root image
        found = next((rel for rel in candidates if root.exists(rel)), None)
        if found is None:
            tried = ", ".join(image_candidates(release))
            return None, f"no initramfs found for {release} (looked for {tried})"
        shown = found
    try:
        if opts.initramfs:
            stream = open_regular(opts.initramfs)
            size = os.fstat(stream.fileno()).st_size
        else:
            stream, size = root.open_file(shown)  # a snapshot's member is streamed from the archive
        with stream:
            if opts.progress is not None and size > 8 << 20:
                opts.progress(f"reading initramfs {shown} ({size >> 20} MiB)...")
            raw = read_initramfs(stream, wanted_file, needed_files)
    except (OSError, NotReadable) as exc:
        why = str(exc) if isinstance(exc, NotReadable) else exc.strerror or str(exc)
        if opts.initramfs:
            raise UsageError(f"--initramfs {opts.initramfs}: {why}") from None
        root.unreadable.setdefault(shown, why)  # PB110, as for every discovered input
        return image_facts_error(shown, f"cannot be read: {why}"), None
    return image_facts(raw, shown), None


def image_facts_error(shown: str, error: str) -> ImageFacts:
    return image_facts(Initramfs((), {}, (), error), shown)


def read_domu_configs(opts: Options, root: Root) -> list[XlConfig]:
    """xl domain configs: etc/xen/*.cfg and etc/xen/auto/* in the root, plus --domu-config."""
    found: list[XlConfig] = []
    for directory, pattern in (("etc/xen", ".cfg"), ("etc/xen/auto", "")):
        for name in root.listdir(directory):
            rel = f"{directory}/{name}"
            if name.endswith(pattern) and not root.is_dir(rel):
                text = root.read_text(rel)
                if text is not None:
                    found.append(parse_xl(text, rel))
    for path in opts.domu_configs:
        found.append(parse_xl(_read_explicit(path, "--domu-config").decode("utf-8", "replace"), path))
    # etc/xen/auto/ usually links to the configs in etc/xen: one config, one entry
    unique: dict[str, XlConfig] = {}
    for config in found:
        unique.setdefault(
            config.path if config.path in opts.domu_configs else str(root.locate(config.path)), config
        )
    return list(unique.values())


def read_domu_kernels(opts: Options, root: Root, configs: list[XlConfig]) -> list[DomuKernel]:
    kernels: list[DomuKernel] = []
    for path in opts.domu_kernels:
        host = Path(path)
        if not host.exists():
            raise UsageError(f"--domu-kernel {path}: no such file or directory")
        try:
            kernels.append(inspect_domu_kernel(host, path))
        except NotReadable as exc:
            raise UsageError(f"--domu-kernel {path}: {exc}") from None
        except OSError as exc:
            raise UsageError(f"--domu-kernel {path}: {exc.strerror or exc}") from None
    for config in configs:
        if config.guest_type != "pv" or not config.kernel or not config.pci:
            continue
        rel = config.kernel.lstrip("/")
        if root.locate(rel) is None or root.is_dir(rel):
            kernels.append(DomuKernel(rel, "unknown", note=f"kernel= of {config.path} not found in the root"))
            continue
        try:
            data = root.read_file(rel, KERNEL_IMAGE)
            kernels.append(from_config_bytes(data, rel) or from_image(data, rel))
        except NotReadable as exc:
            kernels.append(DomuKernel(rel, "unknown", note=f"unreadable: {exc}"))
        except OSError as exc:
            kernels.append(DomuKernel(rel, "unknown", note=f"unreadable: {exc.strerror or exc}"))
    return kernels


def read_dracut_conf(root: Root) -> DracutConfig:
    """dracut reads dracut.conf, then dracut.conf.d/*.conf from /usr/lib and /etc (same basename:
    /etc wins), in basename order."""
    chosen: dict[str, str] = {}
    for directory in ("etc/dracut.conf.d", "usr/lib/dracut/dracut.conf.d"):
        for name in root.listdir(directory):
            if name.endswith(".conf"):
                chosen.setdefault(name, f"{directory}/{name}")
    items = parse_dracut_conf(root.read_text("etc/dracut.conf") or "", "etc/dracut.conf")
    for name in sorted(chosen):
        items += parse_dracut_conf(root.read_text(chosen[name]) or "", chosen[name])
    return DracutConfig(tuple(items))


def read_editable(root: Root, modprobe_files: dict[str, bytes], editable: Iterable[str]) -> dict[str, str]:
    """The files the caller may rewrite (the fixes layer names them: a reader does not know who
    writes), decoded so that writing them back loses no byte."""
    # the modprobe fix also retires the admin's dead classic lines, in whatever file they are
    raw = {rel: data for rel, data in modprobe_files.items() if rel.startswith("etc/modprobe.d/")}
    for rel in editable:
        if rel not in raw and (data := root.read_bytes(rel, CONFIG_FILE, text=True)) is not None:
            raw[rel] = data
    return {rel: exact(data) for rel, data in raw.items()}


def _proc_cmdline(root: Root) -> Cmdline | None:
    text = root.read_text("proc/cmdline")
    return None if text is None else parse_cmdline(text.strip(), "proc/cmdline")


def collect(opts: Options, editable: Iterable[str] = ()) -> System:
    """`editable`: the files whose current text `System.files` keeps (fixes.EDITABLE for the CLI)."""
    root = open_root(opts.root)  # a directory, or a snapshot archive (facts/snapshot.py)
    platform = detect_platform(root)
    next_boot = find_next_boot(root)
    entry = next_boot.entry
    if opts.kernel and entry is not None and entry.kernel_release not in (None, opts.kernel):
        entry = None  # the user named another kernel: the default entry does not describe it
    release, why, running = select_release(opts, root, entry)
    # The initramfs is inflated while the rest is read: ISA-L, zlib and liblzma release the GIL.
    image_read = in_background(lambda: read_image(opts, root, release, entry))
    config, problems = read_config(opts, root, release, running)
    modules = read_module_tree(opts, root, release)
    # the built-in id tables (decompressing the kernel image) overlap the initramfs inflate too,
    # and are waited for only when a device is predicted
    builtin_pci = in_background(lambda: read_builtin_pci(opts, root, release, modules))
    if opts.kernel_image:
        builtin_pci()  # named on the command line: an unusable one is a usage error in any case
    backend_modinfo, more, broken_backend = read_backend_modinfo(root, modules, opts)
    proc_cmdline = _proc_cmdline(root)
    modprobe_files = read_modprobe_files(root)
    cmdline, kind = read_cmdline(opts, entry, proc_cmdline)
    image, image_problem = image_read()
    domu_configs = read_domu_configs(opts, root)
    if opts.xen_cmdline is not None:
        xen_cmdline: Cmdline | None = parse_cmdline(opts.xen_cmdline, "--xen-cmdline")
    elif entry is not None and entry.xen_cmdline is not None:
        path, line = _entry_line(entry, (entry.xen_path or "xen").rsplit("/", 1)[-1])
        xen_cmdline = parse_cmdline(entry.xen_cmdline, path, line)
    else:
        xen_cmdline = None
    return System(
        root=root,
        release=release,
        release_source=why,
        running_release=running,
        config=config,
        modules=modules,
        backend_modinfo=backend_modinfo,
        modprobe=read_modprobe(root, modules, modprobe_files),
        cmdline=cmdline,
        cmdline_kind=kind,
        next_boot=next_boot,
        xen_cmdline=xen_cmdline,
        files=read_editable(root, modprobe_files, editable),
        dracut_conf=read_dracut_conf(root),
        proc_cmdline=proc_cmdline,
        domu_configs=tuple(domu_configs),
        domu_kernels=tuple(read_domu_kernels(opts, root, domu_configs)),
        running_dom0="control_d" in (root.read_text("proc/xen/capabilities") or ""),
        devices=read_pci_devices(root),
        sysfs=root.is_dir(PCI_DEVICES),
        offline_devices=offline_devices(opts),
        image=image,
        image_problem=image_problem,
        loaders=tuple(read_loaders(root)),
        late_bindings=tuple(read_late_bindings(root, platform.domain_services)),
        problems=(*problems, *more),
        builtin_pci=builtin_pci,
        backend_module_problem=broken_backend,
        platform=platform,
        # the kernel's bytes, only when no config says (a defconfig-form one often does not)
        machine=read_machine(opts, root, release, modules)
        if config is None or not names_arch(config)
        else None,
    )


def _head(root: Root, rel: str) -> bytes | None:
    """The first bytes of a regular file in a root (a fallback fact: unreadable is None, never an
    error). Through the root's own API, so a snapshot answers like the directory it was taken of."""
    try:
        stream, _ = root.open_file(rel)
        with stream:
            return stream.read(HEAD) or None
    except (OSError, NotReadable):
        return None


def read_machine(
    opts: Options, root: Root, release: str | None, modules: ModuleTree | None
) -> Machine | None:
    """Which architecture the target kernel is for, when no config says (CONFIG_ARM64=y...): the
    ELF header of a module (the backend's, else the first modules.dep lists), else the header of
    the kernel image. It decides which symbol and module the backend advice names."""
    if modules is not None and modules.files:
        tree, base = (Root(opts.modules_dir), "") if opts.modules_dir else (root, f"{modules.path}/")
        relfile = modules.files.get(BACKEND) or next(iter(modules.files.values()))
        head = _head(tree, base + relfile)
        if head is not None and not head.startswith(b"\x7fELF"):  # .ko.xz, .ko.zst, .ko.gz
            try:
                head = decompress_module(tree.read_bytes(base + relfile, MODULE_FILE) or b"")[:HEAD]
            except ModinfoError:
                head = None
        if head and (found := module_machine(head, f"{modules.path}/{relfile}")) is not None:
            return found
    if opts.kernel_image:
        try:  # a host path, named on the command line
            with open_regular(opts.kernel_image) as stream:
                head = stream.read(HEAD) or None
        except (OSError, NotReadable):
            head = None
        return kernel_image_machine(head, opts.kernel_image) if head else None
    for rel in kernel_image_candidates(release) if release else ():
        if (head := _head(root, rel)) and (found := kernel_image_machine(head, rel)) is not None:
            return found
    return None
