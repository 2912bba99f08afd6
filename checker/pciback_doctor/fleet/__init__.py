"""`pciback-doctor fleet`: which hosts lose which passthrough devices at the next reboot.

A host is the check pipeline's own JSON document (`check --format json`, SPEC §6): made here from a
root or a snapshot (one worker process per host, bounded by the CPUs), or made on the host itself and
brought back (`--from-json`, what the Ansible role's doctor mode fetches). Both go through one reader
(`document.py`), so a host's part of the fleet report is exactly what `check --format json` says on
that host. A host that cannot be analysed is a row with its error, never the end of the run."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pciback_doctor import outcome
from pciback_doctor.errors import UsageError
from pciback_doctor.model import Report, Verdict

# what `check` analyses: the dom0's own checks and its domUs' (cli.run_check)
ROLES = frozenset({"dom0", "domu"})

# how the collector and tar name a snapshot: the host name is what comes before
SNAPSHOT_SUFFIXES = (
    ".tar.gz",
    ".tgz",
    ".tar.zst",
    ".tzst",
    ".tar.xz",
    ".txz",
    ".tar.bz2",
    ".tbz2",
    ".tar.lz4",
    ".tar",
)


@dataclass(frozen=True)
class HostSource:
    """One host of the fleet: where its answer comes from."""

    name: str
    path: str | None  # the root, snapshot or JSON document; None for a host that gave nothing
    kind: str  # root | snapshot | json | none
    error: str | None = None  # why a `none` host gave nothing (--host-error)


@dataclass(frozen=True)
class HostResult:
    source: HostSource
    document: dict[str, Any] | None  # the pciback-doctor/1 document, as `check --format json` wrote it
    report: Report | None  # the same document, read back
    error: str | None  # why there is no document
    lost: tuple[str, ...] = ()  # wanted devices predicted not-claimed
    failing: tuple[str, ...] = ()  # IDs of unwaived findings at or above --fail-on

    @property
    def status(self) -> str:
        """pass | fail (would lose a device) | error (could not be analysed: nobody can say it won't)."""
        if self.report is None:
            return "error"
        return "fail" if self.lost or self.failing else "pass"


@dataclass(frozen=True)
class Fleet:
    hosts: tuple[HostResult, ...]
    fail_on: str

    @property
    def exit_code(self) -> int:
        return 1 if any(h.status != "pass" for h in self.hosts) else 0

    def count(self, status: str) -> int:
        return sum(1 for h in self.hosts if h.status == status)

    def devices(self, verdict: Verdict) -> int:
        return sum(
            1 for h in self.hosts if h.report for d in h.report.devices if d.prediction.verdict is verdict
        )


def host_name(path: str) -> str:
    """The file name without a snapshot's or a document's suffix (`host7.tar.zst` → `host7`)."""
    base = Path(path.rstrip("/")).name or path
    for suffix in (*SNAPSHOT_SUFFIXES, ".json"):
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return base


def sources(
    roots: Sequence[str], documents: Sequence[str], names: Sequence[str], host_errors: Sequence[str]
) -> list[HostSource]:
    """The hosts named on the command line, each with its name (`--name ROOT=NAME` or the file's)."""
    given: dict[str, str] = {}
    for spec in names:
        path, sep, name = spec.rpartition("=")
        if not sep or not path or not name.strip():
            raise UsageError(f"--name {spec}: expected ROOT=NAME")
        if path not in (*roots, *documents):
            raise UsageError(f"--name {spec}: {path} is not one of the ROOTs or --from-json files")
        given[path] = name.strip()
    hosts = [
        HostSource(given.get(r) or host_name(r), r, "snapshot" if _is_snapshot(r) else "root") for r in roots
    ]
    hosts += [HostSource(given.get(d) or host_name(d), d, "json") for d in documents]
    for spec in host_errors:
        name, sep, why = spec.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--host-error {spec}: expected NAME=WHY")
        hosts.append(HostSource(name.strip(), None, "none", why.strip() or "no result"))
    if not hosts:
        raise UsageError("no host: give ROOTs (directories or snapshots) or --from-json documents")
    seen: set[str] = set()
    for h in hosts:
        if h.name in seen:
            raise UsageError(f"two hosts are named {h.name}: tell them apart with --name ROOT=NAME")
        seen.add(h.name)
    return hosts


def _is_snapshot(root: str) -> bool:
    return Path(root).is_file() or root.endswith(SNAPSHOT_SUFFIXES)


def check_document(root: str) -> tuple[str | None, str | None]:
    """`check --root ROOT --format json`, in a worker process: (the document, None) or (None, why).
    The same pipeline as `check`: collect, analyse, run the checks, build the report."""
    try:
        from pciback_doctor.boot.analysis import analyse
        from pciback_doctor.checks import run_checks
        from pciback_doctor.facts.system import Options, collect
        from pciback_doctor.outcome import build_report
        from pciback_doctor.render import json

        analysis = analyse(collect(Options(root=root)))
        return json.render(build_report(analysis, run_checks(analysis, ROLES))), None
    except UsageError as exc:
        return None, str(exc)
    except Exception as exc:  # a bug or an exhausted resource on one host: a row, never the end
        return None, f"internal error: {type(exc).__name__}: {exc}"


def workers(wanted: int | None, hosts: int) -> int:
    """At most one per CPU this process may use (cgroup and affinity aware), and per host."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(wanted or cpus, cpus, hosts))


def analyse_fleet(
    hosts: Sequence[HostSource],
    fail_on: str,
    jobs: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Fleet:
    answers: dict[int, tuple[str | bytes | None, str | None]] = {}
    local = [i for i, h in enumerate(hosts) if h.kind in ("root", "snapshot")]
    for i, h in enumerate(hosts):
        if h.kind == "json":
            answers[i] = _read_file(h.path or "")
        elif h.kind == "none":
            answers[i] = (None, h.error)
    for done, (i, answer) in enumerate(_check_roots(hosts, local, jobs), 1):
        answers[i] = answer
        if progress is not None:
            progress(f"fleet: {done}/{len(local)} analysed ({hosts[i].name})")
    return Fleet(tuple(_result(h, *answers[i], fail_on) for i, h in enumerate(hosts)), fail_on)


def _check_roots(
    hosts: Sequence[HostSource], local: list[int], jobs: int | None
) -> Iterable[tuple[int, tuple[str | None, str | None]]]:
    n = workers(jobs, len(local))
    if n == 1:  # no pool for one host or one CPU: a process start costs more than it saves
        for i in local:
            yield i, check_document(hosts[i].path or "")
        return
    # the pipeline imported once, here: forked workers inherit it instead of each importing it
    for module in ("boot.analysis", "checks", "facts.system", "outcome", "render.json"):
        importlib.import_module(f"pciback_doctor.{module}")
    broken: list[int] = []
    with ProcessPoolExecutor(max_workers=n) as pool:
        futures: dict[Future[tuple[str | None, str | None]], int] = {
            pool.submit(check_document, hosts[i].path or ""): i for i in local
        }
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except BrokenProcessPool:
                broken.append(futures[future])
            except Exception as exc:  # the answer could not come back (pickling): a row, not the end
                yield futures[future], (None, f"internal error: {type(exc).__name__}: {exc}")
    # a worker that dies (the OOM killer) takes the pool and every host still in it down: each of
    # those again in a process of its own, so that only the host that kills it is lost
    for i in broken:
        with ProcessPoolExecutor(max_workers=1) as alone:
            try:
                yield i, alone.submit(check_document, hosts[i].path or "").result()
            except BrokenProcessPool:
                yield i, (None, "the process analysing this host died (killed, or out of memory)")
            except Exception as exc:
                yield i, (None, f"internal error: {type(exc).__name__}: {exc}")


def _read_file(path: str) -> tuple[bytes | None, str | None]:
    from pciback_doctor.facts.limits import TEXT_FILE
    from pciback_doctor.facts.root import NotReadable, read_regular

    try:
        return read_regular(path, TEXT_FILE), None
    except NotReadable as exc:
        return None, f"{path}: {exc}"
    except OSError as exc:
        return None, f"{path}: {exc.strerror or exc}"


def _result(host: HostSource, data: str | bytes | None, error: str | None, fail_on: str) -> HostResult:
    from pciback_doctor.fleet.document import DocumentError, read_document

    if data is None:
        return HostResult(host, None, None, error or "no result")
    try:
        document, report = read_document(data.encode() if isinstance(data, str) else data)
    except DocumentError as exc:
        return HostResult(host, None, None, f"{host.path}: {exc}")
    lost = tuple(d.bdf for d in report.devices if d.prediction.verdict is Verdict.NOT_CLAIMED and d.wanted_by)
    # the fleet's --fail-on, not the one the host's document was made with
    failing = tuple(dict.fromkeys(f.id for f in report.findings if outcome.exit_code([f], fail_on)))
    return HostResult(host, document, report, None, lost, failing)
