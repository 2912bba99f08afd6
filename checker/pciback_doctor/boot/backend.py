"""Is the PCI backend built in, a module, or missing in the target kernel?"""

from __future__ import annotations

from dataclasses import dataclass

from pciback_doctor.facts.system import BACKEND, System
from pciback_doctor.model import Backend, Evidence

CONFIG_SYMBOL = "CONFIG_XEN_PCIDEV_BACKEND"


@dataclass(frozen=True)
class BackendVerdict:
    backend: Backend
    disagreement: tuple[Evidence, ...]  # config, modules.builtin and module files disagree


def backend_state(system: System) -> BackendVerdict:
    tree = system.modules
    by_tree: str | None = None
    tree_evidence: list[Evidence] = []
    if tree is not None:
        if tree.is_builtin(BACKEND):
            by_tree = "builtin"
            tree_evidence.append(tree.builtin[BACKEND])
        if tree.has_file(BACKEND):
            tree_evidence.append(Evidence(f"{tree.path}/{tree.files[BACKEND]}", None, "module file"))
            by_tree = "both" if by_tree else "module"
        if by_tree is None and tree.has_index:
            by_tree = "missing"
            tree_evidence.append(Evidence(f"{tree.path}/modules.dep", None, "no xen-pciback module"))
        elif by_tree is None and tree.builtin:
            # only modules.builtin to go by (a kernel build for the CI gate): it says "not built in"
            by_tree = "not-builtin"
            tree_evidence.append(Evidence(f"{tree.path}/modules.builtin", None, "xen-pciback not listed"))
    by_config: str | None = None
    config_evidence: list[Evidence] = []
    if system.config is not None:
        value = system.config.get(CONFIG_SYMBOL)
        by_config = {"y": "builtin", "m": "module"}.get(value, "missing")
        config_evidence.append(system.config.evidence(CONFIG_SYMBOL))

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
    return BackendVerdict(Backend(mode, BACKEND, evidence), () if agree else evidence)
