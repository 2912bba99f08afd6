"""The CI gate (`pciback-doctor kernel`) per architecture and config form, and the domU verdicts."""

from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import doctor, finding_ids
from pciback_doctor.facts.kconfig import ConfigError, decode_config, parse_config
from pciback_doctor.facts.limits import TEXT_FILE

HEADER = "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/{arch} 6.1.0 Kernel Configuration\n#\n"
X86_DOM0 = HEADER.format(arch="x86") + (
    "CONFIG_X86_64=y\nCONFIG_PCI=y\nCONFIG_XEN=y\nCONFIG_XEN_PV=y\nCONFIG_XEN_DOM0=y\nCONFIG_XEN_BACKEND=y\n"
    "CONFIG_XEN_PCIDEV_BACKEND=m\nCONFIG_XEN_PCIDEV_FRONTEND=m\n"
)
ARM64_DOM0 = HEADER.format(arch="arm64") + (
    "CONFIG_ARM64=y\nCONFIG_64BIT=y\nCONFIG_PCI=y\nCONFIG_XEN_DOM0=y\nCONFIG_XEN=y\nCONFIG_XEN_BACKEND=y\n"
    "CONFIG_XEN_PCIDEV_STUB=m\nCONFIG_XEN_PCI_STUB=y\n"
)
# a 2.6.18-xen .config (drivers/xen/Kconfig of the XenLinux tree): dom0 is XEN_PRIVILEGED_GUEST,
# XEN_BACKEND a tristate, the backend module `pciback`
XENLINUX = (
    "#\n# Automatically generated make config: don't edit\n# Linux kernel version: 2.6.18-xen\n#\n"
    "CONFIG_X86_64=y\nCONFIG_X86_64_XEN=y\nCONFIG_XEN=y\nCONFIG_XEN_PRIVILEGED_GUEST=y\n"
    "# CONFIG_XEN_UNPRIVILEGED_GUEST is not set\nCONFIG_XEN_BACKEND=m\nCONFIG_XEN_PCIDEV_BACKEND=m\n"
    "CONFIG_XEN_PCIDEV_FRONTEND=y\n"
)
HVM_ONLY = HEADER.format(arch="x86") + (
    "CONFIG_X86_64=y\nCONFIG_XEN=y\n# CONFIG_XEN_PV is not set\nCONFIG_XEN_PVHVM=y\nCONFIG_XEN_PVH=y\n"
)


def gate(tmp_path: Path, text: str | bytes, *args: str, name: str = "config") -> tuple[int, dict, str]:  # type: ignore[type-arg]
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    run = doctor("kernel", "--config", str(path), "--format", "json", *args)
    return run.code, (run.json() if run.out else {}), run.err


def test_arm64_stub_is_the_backend(tmp_path: Path) -> None:
    """Debian's arm64 kernel: CONFIG_XEN_PCIDEV_STUB=m builds xen-pciback.ko; no PB101/PB104, and no
    advice about CONFIG_XEN_PCIDEV_BACKEND, which arm64 does not have."""
    build = tmp_path / "build"
    (build / "drivers/xen/xen-pciback").mkdir(parents=True)
    (build / ".config").write_text(ARM64_DOM0)
    (build / "modules.order").write_text("drivers/xen/xen-pciback/xen-pciback.o\n")
    (build / "drivers/xen/xen-pciback/xen-pciback.ko").write_bytes(b"\x7fELF")
    run = doctor("kernel", "--build-dir", str(build), "--role", "both", "--format", "json")
    assert run.code == 0, run.out
    assert run.json()["backend"]["mode"] == "module"
    ids = finding_ids(run)
    assert "PB101" not in ids and "PB104" not in ids and "PB501" not in ids
    pb103 = next(f for f in run.json()["findings"] if f["id"] == "PB103")
    assert "XEN_PCIDEV_STUB" in pb103["message"] and "stub" in pb103["message"]
    assert "PB503" in ids  # an arm64 guest is never PV: the domU role passes without a frontend

    code, doc, _ = gate(
        tmp_path, ARM64_DOM0.replace("CONFIG_XEN_PCIDEV_STUB=m", "# CONFIG_XEN_PCIDEV_STUB is not set")
    )
    assert code == 1
    pb101 = next(f for f in doc["findings"] if f["id"] == "PB101")
    assert "CONFIG_XEN_PCIDEV_STUB is not set" in pb101["message"]
    commands = [c for f in doc["findings"] for fix in f["fixes"] for c in fix["commands"]]
    assert commands == ["scripts/config --module XEN_PCIDEV_STUB", "make olddefconfig"]
    assert "XEN_PCIDEV_BACKEND" not in str(doc["findings"])


def test_xenlinux_dom0_is_recognised(tmp_path: Path) -> None:
    code, doc, _ = gate(tmp_path, XENLINUX, "--role", "both")
    assert code == 0, doc["findings"]
    assert doc["backend"] == {**doc["backend"], "mode": "module", "module": "pciback"}
    assert "PB106" not in [f["id"] for f in doc["findings"]]
    code, doc, _ = gate(
        tmp_path,
        XENLINUX.replace("CONFIG_XEN_PRIVILEGED_GUEST=y", "# CONFIG_XEN_PRIVILEGED_GUEST is not set"),
    )
    pb106 = next(f for f in doc["findings"] if f["id"] == "PB106")
    assert pb106["message"].startswith("CONFIG_XEN_PRIVILEGED_GUEST is not set:")
    assert code == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dom0=st.sampled_from(["y", "m", "n", None]),
    backend=st.sampled_from(["y", "m", "n", None]),
    arch=st.sampled_from(["x86", "arm64", "xenlinux"]),
)
def test_pb106_says_what_its_evidence_quotes(
    tmp_path: Path, dom0: str | None, backend: str | None, arch: str
) -> None:
    """Every symbol PB106 names is named in the words of the line it quotes (issue 11: "not set"
    while quoting CONFIG_XEN_BACKEND=m)."""
    base = {"x86": X86_DOM0, "arm64": ARM64_DOM0, "xenlinux": XENLINUX}[arch]
    dom0_symbol = "CONFIG_XEN_PRIVILEGED_GUEST" if arch == "xenlinux" else "CONFIG_XEN_DOM0"
    lines = [
        line for line in base.splitlines() if not line.startswith((f"{dom0_symbol}=", "CONFIG_XEN_BACKEND="))
    ]
    for symbol, value in ((dom0_symbol, dom0), ("CONFIG_XEN_BACKEND", backend)):
        if value is not None:
            lines.append(f"# {symbol} is not set" if value == "n" else f"{symbol}={value}")
    _, doc, _ = gate(tmp_path, "\n".join(lines) + "\n")
    for finding in (f for f in doc["findings"] if f["id"] == "PB106"):
        for ev in finding["evidence"]:
            symbol = (
                ev["text"].split()[1] if ev["text"].startswith("# ") else ev["text"].split("=")[0].split()[0]
            )
            said = (
                f"{symbol} is not set"
                if ("is not set" in ev["text"] or "absent" in ev["text"])
                else ev["text"]
            )
            assert said in finding["message"], (finding["message"], ev["text"])
    ok_backend = {"x86": "y", "arm64": "y", "xenlinux": "ym"}[arch]
    pb106 = "PB106" in [f["id"] for f in doc["findings"]]
    assert pb106 == (dom0 != "y" or (backend or "n") not in ok_backend)


def test_defconfig_form_is_refused_without_a_tree(tmp_path: Path) -> None:
    """`make savedefconfig` output: absent symbols take Kconfig defaults (XEN_PCIDEV_BACKEND's is m),
    never read as n; without a tree the gate says what to pass, in one line, exit 2."""
    code, doc, err = gate(tmp_path, "CONFIG_XEN=y\nCONFIG_XEN_PVH=y\n", name="defconfig")
    assert code == 2 and doc == {}
    assert len(err.strip().splitlines()) == 1 and "defconfig-form" in err and "--source-dir" in err
    code, _, err = gate(tmp_path, "CONFIG_XEN=y\n", "--source-dir", str(tmp_path), name="defconfig")
    assert code == 2 and "not a kernel source tree" in err


def test_defconfig_form_domu_kernel_is_not_called_frontend_less(tmp_path: Path) -> None:
    minimal = tmp_path / "domu-defconfig"
    minimal.write_text("CONFIG_XEN=y\nCONFIG_XEN_PV=y\n")
    run = doctor("domu", str(minimal), "--format", "json")
    ids = finding_ids(run)
    assert "PB501" not in ids and ids.count("PB507") == 1
    assert run.code == 0


def test_hvm_only_kernel_passes_the_domu_gate(tmp_path: Path) -> None:
    code, doc, _ = gate(tmp_path, HVM_ONLY, "--role", "domu")
    assert code == 0
    (pb503,) = [f for f in doc["findings"] if f["id"] == "PB503"]
    assert pb503["severity"] == "info" and "HVM" in pb503["message"]
    assert pb503["evidence"][0]["text"] == "# CONFIG_XEN_PV is not set"
    assert not [f for f in doc["findings"] if f["id"] in ("PB501", "PB506", "PB507")]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pv=st.sampled_from(["CONFIG_XEN_PV=y\n", "# CONFIG_XEN_PV is not set\n", ""]),
    frontend=st.sampled_from(
        [
            "CONFIG_XEN_PCIDEV_FRONTEND=y\n",
            "CONFIG_XEN_PCIDEV_FRONTEND=m\n",
            "# CONFIG_XEN_PCIDEV_FRONTEND is not set\n",
            "",
        ]
    ),
    full=st.booleans(),
)
def test_one_verdict_per_domu_kernel(tmp_path: Path, pv: str, frontend: str, full: bool) -> None:
    text = (HEADER.format(arch="x86") if full else "") + "CONFIG_X86_64=y\nCONFIG_XEN=y\n" + pv + frontend
    path = tmp_path / "kernel-config"
    path.write_text(text)
    run = doctor("domu", str(path), str(path), "--format", "json")  # the same kernel twice: one verdict
    verdicts = [f["id"] for f in run.json()["findings"] if f["id"] in ("PB501", "PB503", "PB506", "PB507")]
    assert len(verdicts) == 1, run.json()["findings"]
    pv_capable = pv.startswith("CONFIG_XEN_PV=y")
    if pv_capable and frontend.startswith("CONFIG_") and full:
        assert verdicts == ["PB506"]
    if pv_capable and not frontend.startswith("CONFIG_") and full:
        assert verdicts == ["PB501"]
    if not full and (not pv or (pv_capable and not frontend)):
        assert verdicts == ["PB507"]  # defconfig form: absent is a default, not n


@pytest.mark.parametrize(
    "pack",
    [
        gzip.compress,
        lzma.compress,
        bz2.compress,
        zstandard.ZstdCompressor().compress,
        lambda b: b"\xef\xbb\xbf" + b,
    ],
    ids=["gz", "xz", "bz2", "zst", "bom"],
)
def test_compressed_configs_and_bom(tmp_path: Path, pack) -> None:  # type: ignore[no-untyped-def]
    code, doc, err = gate(tmp_path, pack(X86_DOM0.encode()), "--role", "both")
    assert code == 0, err
    assert doc["backend"]["mode"] == "module"


def test_config_bomb_is_bounded() -> None:
    bomb = lzma.compress(b"CONFIG_XEN=y\n" + b"\n" * (TEXT_FILE.value + 10))
    with pytest.raises(ConfigError, match="text file size"):
        decode_config(bomb)
    bomb = zstandard.ZstdCompressor().compress(b"#" * (TEXT_FILE.value + 1))
    with pytest.raises(ConfigError, match="limit"):
        decode_config(bomb)


def test_config_forms() -> None:
    full = parse_config(X86_DOM0, "f")
    assert not full.minimal and full.header_arch == "x86" and full.version == "6.1.0"
    assert full.known("CONFIG_ABSENT") and full.evidence("CONFIG_ABSENT").text == "CONFIG_ABSENT absent (= n)"
    minimal = parse_config("CONFIG_XEN=y\n# CONFIG_XEN_PV is not set\n", "m")
    assert minimal.minimal and minimal.known("CONFIG_XEN_PV") and not minimal.known("CONFIG_XEN_DOM0")
    assert "Kconfig's default" in minimal.evidence("CONFIG_XEN_DOM0").text
    old = parse_config(XENLINUX, "x")
    assert old.version == "2.6.18-xen" and not old.minimal


def test_one_verdict_per_kernel_across_its_inputs(tmp_path: Path) -> None:
    """issue 11: `domu vmlinuz-R lib/modules/R config-R` said "lacks", "has" and "cannot tell" for one
    kernel; its inputs now give one verdict, from the config (it knows XEN_PV)."""
    release = "6.1.0-56-amd64"
    config = tmp_path / f"config-{release}"
    config.write_text(HVM_ONLY)
    tree = tmp_path / "lib/modules" / release
    (tree / "kernel/drivers/net").mkdir(parents=True)
    (tree / "kernel/drivers/net/e1000e.ko").write_bytes(b"\x7fELF")
    (tree / "modules.dep").write_text("kernel/drivers/net/e1000e.ko:\n")
    other = tmp_path / "config-6.2.0"
    other.write_text(X86_DOM0)
    run = doctor("domu", str(tree), str(config), str(other), "--format", "json")
    verdicts = [
        (f["id"], f["message"])
        for f in run.json()["findings"]
        if f["id"] in ("PB501", "PB503", "PB506", "PB507")
    ]
    assert [v[0] for v in verdicts] == ["PB503", "PB506"], verdicts
    assert f"one verdict for kernel {release}" in verdicts[0][1]
    assert run.code == 0


def test_trees_older_than_the_symbols(tmp_path: Path) -> None:
    """An x86 tree before XEN_PV (Linux 4.14): CONFIG_XEN=y is PV guest support, so it needs the
    frontend. An Arm tree before XEN_PCIDEV_STUB (2021) has no backend to enable: no command names it."""
    old_x86 = HEADER.format(arch="x86").replace("6.1.0", "3.16.0") + (
        "CONFIG_X86_64=y\nCONFIG_PCI=y\nCONFIG_XEN=y\nCONFIG_XEN_DOM0=y\nCONFIG_XEN_BACKEND=y\n"
        "CONFIG_XEN_PCIDEV_BACKEND=m\n# CONFIG_XEN_PCIDEV_FRONTEND is not set\n"
    )
    code, doc, _ = gate(tmp_path, old_x86, "--role", "domu")
    (pb501,) = [f for f in doc["findings"] if f["id"] == "PB501"]
    assert "CONFIG_XEN=y" in pb501["message"] and code == 1
    old_arm = ARM64_DOM0.replace("6.1.0", "5.10.0").replace(
        "CONFIG_XEN_PCIDEV_STUB=m\nCONFIG_XEN_PCI_STUB=y\n", ""
    )
    code, doc, _ = gate(tmp_path, old_arm)
    (pb101,) = [f for f in doc["findings"] if f["id"] == "PB101"]
    assert "tree has no CONFIG_XEN_PCIDEV_STUB" in pb101["message"] and code == 1
    assert [c for fix in pb101["fixes"] for c in fix["commands"]] == []


TRISTATE = st.sampled_from(["y", "m", "n", None])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    arch=st.sampled_from(["x86_64", "i386", "arm64"]),
    xen=st.sampled_from(["y", "n"]),
    symbols=st.fixed_dictionaries(
        {s: TRISTATE for s in ("XEN_PV", "XEN_DOM0", "XEN_BACKEND", "BACKEND", "XEN_PCIDEV_FRONTEND")}
    ),
)
def test_gate_follows_the_truth_table(
    tmp_path: Path, arch: str, xen: str, symbols: dict[str, str | None]
) -> None:
    """The README's truth table, over every combination of the symbols it names: each role's exit
    status is what kconfig_corpus.truth (the corpus' reading of Kconfig's values) says."""
    import kconfig_corpus

    backend = "XEN_PCIDEV_STUB" if arch == "arm64" else "XEN_PCIDEV_BACKEND"
    values = {"PCI": "y", "XEN": xen, **{backend if k == "BACKEND" else k: v for k, v in symbols.items()}}
    if arch == "arm64":  # arch/arm64/Kconfig: XEN_DOM0 is def_bool y, depends on XEN; no XEN_PV
        values.update(XEN_DOM0=xen, XEN_PV=None, XEN_PCIDEV_FRONTEND=None)
    head = {"x86_64": ("x86", "X86_64"), "i386": ("x86", "X86_32"), "arm64": ("arm64", "ARM64")}[arch]
    lines = [HEADER.format(arch=head[0]), f"CONFIG_{head[1]}=y\n"]
    lines += [
        f"# CONFIG_{k} is not set\n" if v == "n" else f"CONFIG_{k}={v}\n" for k, v in values.items() if v
    ]
    truth = kconfig_corpus.truth({k: v for k, v in values.items() if v}, arch)
    for role in ("dom0", "domu", "both"):
        code, doc, err = gate(tmp_path, "".join(lines), "--role", role)
        assert (code == 0) == truth[role], (role, values, [f["message"] for f in doc["findings"]], err)
