"""The CI gate on a corpus of real configs (tests/kconfig_corpus.py): Debian's kernels and what
Kconfig generates from linux-source-6.1 for x86_64, i386 and arm64. The expected verdict of every
role comes from Kconfig's own expansion of the config, read without the doctor."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

import debian
import kconfig_corpus as corpus
from helpers import doctor, unavailable

pytestmark = pytest.mark.realworld

ROLES = ("dom0", "domu", "both")
_TABLE: list[str] = []


def _entries() -> list[corpus.Entry]:
    try:
        return [*corpus.debian_entries(), *(e for arch in corpus.ARCHES for e in corpus.generated(arch))]
    except (debian.Unavailable, subprocess.CalledProcessError) as exc:
        unavailable(str(exc))
        raise AssertionError("unreachable") from exc


@pytest.fixture(scope="module")
def entries() -> list[corpus.Entry]:
    return _entries()


def _gate(entry: corpus.Entry, role: str, *extra: str) -> tuple[int, dict[str, object], float]:
    args = ["kernel", "--config", str(entry.config), "--role", role, "--format", "json", *extra]
    if entry.minimal:
        args += ["--source-dir", str(corpus.kernel_source()), "--arch", entry.arch]
    start = time.perf_counter()
    run = doctor(*args)
    elapsed = time.perf_counter() - start
    assert run.code in (0, 1), run.err
    return run.code, run.json(), elapsed


def test_corpus_gate_matches_kconfig(entries: list[corpus.Entry]) -> None:
    mismatches = []
    for entry in entries:
        truth = corpus.truth(corpus.kconfig_values(entry.expanded), entry.arch)
        verdicts, times, backend = [], [], ""
        for role in ROLES:
            code, doc, elapsed = _gate(entry, role)
            backend = f"{doc['backend']['mode']} ({doc['backend']['module']})"  # type: ignore[index]
            verdicts.append("pass" if code == 0 else "fail")
            times.append(elapsed)
            if (code == 0) != truth[role]:
                ids = [f["id"] for f in doc["findings"] if f["severity"] == "error"]  # type: ignore[attr-defined]
                mismatches.append(
                    f"{entry.name} --role {role}: gate {code}, Kconfig says {truth[role]} ({ids})"
                )
        truths = " ".join(f"{r}={'pass' if truth[r] else 'fail'}" for r in ROLES)
        _TABLE.append(
            f"| {entry.name} | {entry.arch} | {backend} | {truths} | {' / '.join(verdicts)} | "
            f"{' / '.join(f'{t * 1000:.0f}' for t in times)} ms |"
        )
    assert not mismatches, "\n".join(mismatches)


def test_corpus_has_every_kind(entries: list[corpus.Entry]) -> None:
    """The corpus is worth something only if it holds passing and failing configs of each role."""
    seen = {
        (r, v) for e in entries for r, v in corpus.truth(corpus.kconfig_values(e.expanded), e.arch).items()
    }
    assert {(r, v) for r in ROLES for v in (True, False)} <= seen
    assert {e.arch for e in entries} == set(corpus.ARCHES)


def test_minimal_configs_need_their_tree(entries: list[corpus.Entry]) -> None:
    for entry in (e for e in entries if e.minimal):
        run = doctor("kernel", "--config", str(entry.config))
        assert run.code == 2 and run.out == ""
        assert len(run.err.strip().splitlines()) == 1 and "--source-dir" in run.err
    # an x86_64 savedefconfig says its architecture itself (ARCH=x86's 64BIT prompt defaults to y)
    x86 = next(e for e in entries if e.minimal and e.arch == "x86_64")
    run = doctor(
        "kernel", "--config", str(x86.config), "--source-dir", str(corpus.kernel_source()), "--role", "both"
    )
    truth = corpus.truth(corpus.kconfig_values(x86.expanded), "x86_64")
    assert (run.code == 0) == truth["both"], run.out


def test_minimal_config_evidence_cites_kconfig(entries: list[corpus.Entry]) -> None:
    arm = next(e for e in entries if e.minimal and e.arch == "arm64")
    _, doc, _ = _gate(arm, "dom0")
    evidence = [ev["text"] for f in doc["findings"] for ev in f["evidence"]]  # type: ignore[attr-defined]
    assert any("XEN_PCIDEV_STUB" in t and "Kconfig's default" in t for t in evidence), evidence


def test_print_corpus_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    if not _TABLE:
        pytest.skip("run with the corpus test (-k corpus)")
    table = "\n".join(
        [
            "| config | arch | backend line | truth per role (Kconfig) | gate dom0 / domu / both | gate time |",
            "| --- | --- | --- | --- | --- | --- |",
            *_TABLE,
        ]
    )
    (debian.cache_dir() / "kconfig-corpus" / "table.md").write_text(table + "\n")
    with capsys.disabled():
        print("\n" + table)


def test_minimal_config_in_a_build_tree(entries: list[corpus.Entry], tmp_path: Path) -> None:
    """`--build-dir` of a `make O=` tree whose .config is minimal: expanded with the tree behind its
    `source` link; neither the build tree nor the source tree is written."""
    import shutil

    source = corpus.kernel_source()
    arm = next(e for e in entries if e.minimal and e.arch == "arm64")
    build = tmp_path / "build"
    subprocess.run(["make", "-s", "-C", str(source), f"O={build}", "ARCH=arm64", "defconfig"], check=True)
    shutil.copy(arm.config, build / ".config")
    before = sorted((p, p.stat().st_mtime_ns) for p in [*build.rglob("*"), *source.rglob("*")] if p.is_file())
    run = doctor("kernel", "--build-dir", str(build), "--role", "both")
    truth = corpus.truth(corpus.kconfig_values(arm.expanded), "arm64")
    assert (run.code == 0) == truth["both"], run.out
    assert "CONFIG_XEN_PCIDEV_STUB=m (Kconfig's default, make ARCH=arm64 olddefconfig" in run.out
    after = sorted((p, p.stat().st_mtime_ns) for p in [*build.rglob("*"), *source.rglob("*")] if p.is_file())
    assert before == after


def test_fixes_name_only_symbols_the_architecture_has(entries: list[corpus.Entry]) -> None:
    """Every symbol a fix command sets exists on that architecture: Kconfig's allmodconfig there
    (every symbol whose dependencies can be met) lists it."""
    import re

    for entry in entries:
        if entry.minimal:  # its expansion is the defconfig+xen entry
            continue
        allmod = (
            corpus.kconfig_values(entry.config.parent / "allmodconfig.config")
            if not entry.name.startswith("debian")
            else None
        )
        if allmod is None:
            continue
        for role in ROLES:
            _, doc, _ = _gate(entry, role)
            commands = [c for f in doc["findings"] for fix in f["fixes"] for c in fix["commands"]]  # type: ignore[attr-defined]
            for command in commands:
                for symbol in re.findall(r"--(?:enable|module|disable) (?:CONFIG_)?(\w+)", command):
                    assert symbol in allmod, f"{entry.name} --role {role}: '{command}' names {symbol}"
