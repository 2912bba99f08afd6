"""Is the PCI backend built in, a module, or missing in the target kernel? Which symbol builds it
and what the module is called depend on the architecture (pciback_doctor/arches.py): the config's,
else the one the kernel's own bytes show (a module's ELF header, the image's header)."""

from __future__ import annotations

from dataclasses import dataclass

from pciback_doctor.arches import Arch, arch_evidence, arch_named, arch_of, names_arch
from pciback_doctor.facts.target import BACKEND, System
from pciback_doctor.model import Backend, Evidence


@dataclass(frozen=True)
class BackendVerdict:
    backend: Backend
    disagreement: tuple[Evidence, ...]  # config, modules.builtin and module files disagree
    arch: Arch | None = None  # the kernel's architecture row; None when nothing says
    arch_evidence: Evidence | None = None  # what says so


def architecture(system: System) -> tuple[Arch | None, Evidence | None]:
    """The target kernel's architecture and the fact it rests on: the config decides (it also tells
    XenLinux trees apart); without one, the kernel's own bytes (facts/machine.py)."""
    if system.config is not None and (system.machine is None or names_arch(system.config)):
        arch = arch_of(system.config)
        return arch, arch_evidence(arch, system.config)
    if system.machine is not None:
        return arch_named(system.machine.arch), system.machine.evidence
    return None, None


def backend_state(system: System) -> BackendVerdict:
    config = system.config
    arch, arch_source = architecture(system)
    module = arch.module if arch is not None else BACKEND
    tree = system.modules
    by_tree: str | None = None
    tree_evidence: list[Evidence] = []
    if tree is not None:
        if tree.is_builtin(module):
            by_tree = "builtin"
            tree_evidence.append(tree.builtin[module])
        if tree.has_file(module):
            tree_evidence.append(Evidence(f"{tree.path}/{tree.files[module]}", None, "module file"))
            by_tree = "both" if by_tree else "module"
        if by_tree is None and tree.has_index:
            by_tree = "missing"
            tree_evidence.append(Evidence(f"{tree.path}/modules.dep", None, f"no {module} module"))
        elif by_tree is None and tree.builtin:
            # only modules.builtin to go by (a kernel build for the CI gate): it says "not built in"
            by_tree = "not-builtin"
            tree_evidence.append(Evidence(f"{tree.path}/modules.builtin", None, f"{module} not listed"))
    by_config: str | None = None
    config_evidence: list[Evidence] = []
    if arch is not None and arch.backend_kind == "none" and arch_source is not None:
        by_config = "missing"  # no Xen in this architecture: nothing can build a backend
        config_evidence.append(arch_source)
    elif config is not None and arch is not None:
        symbol = arch.backend
        config_evidence.append(config.evidence(symbol))
        if config.known(symbol):  # a minimal config's absent symbol is its default: unknown here
            by_config = {"y": "builtin", "m": "module"}.get(config.get(symbol), "missing")

    evidence = tuple(config_evidence + tree_evidence)
    if by_config is not None:
        mode = by_config
        agree = by_tree in (None, by_config) or (by_tree == "not-builtin" and by_config != "builtin")
    elif by_tree is not None:
        mode = "unknown" if by_tree in ("both", "not-builtin") else by_tree
        agree = by_tree != "both"
    else:
        mode, agree = "unknown", True
    broken = system.backend_module_problem
    if mode == "module" and broken is not None:
        # kmod's init_module fails on an empty or non-ELF file (ENOEXEC), but a half-written file
        # may be replaced before the reboot: whether the backend loads is not known
        mode, evidence = "unknown", (*evidence, broken)
    return BackendVerdict(Backend(mode, module, evidence), () if agree else evidence, arch, arch_source)
