"""Command line (SPEC §5). Parses arguments, runs collect → analyse → check → render, maps
usage errors to one line and exit status 2."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pciback_doctor import __version__
from pciback_doctor.errors import UsageError
from pciback_doctor.model import STRATEGIES
from pciback_doctor.outcome import FAIL_ON

# Each command imports what it uses, in its handler: `--help` and `explain` must not pay for the
# readers, the boot model and the renderers (start-up budget, issue 17).
if TYPE_CHECKING:
    from pciback_doctor.boot.analysis import Analysis
    from pciback_doctor.checks import Check
    from pciback_doctor.facts.system import Options
    from pciback_doctor.fleet import Fleet
    from pciback_doctor.model import Report

COMMANDS = ("check", "fix", "report", "kernel", "domu", "initramfs", "explain", "collector", "fleet")
FORMATS = ("text", "json", "sarif", "junit", "github", "markdown")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _ids(value: str) -> list[str]:
    return [v.strip().upper() for v in value.split(",") if v.strip()]


def _jobs(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"not a positive number: {value}")
    return int(value)


def _output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    p.add_argument("--output", metavar="F", help="write the output to F instead of standard output")
    p.add_argument(
        "--fail-on",
        choices=list(FAIL_ON),
        default="error",
        help="lowest severity that makes the exit status 1",
    )
    p.add_argument(
        "--select",
        type=_ids,
        default=[],
        metavar="ID,...",
        help="only these checks (IDs or prefixes like PB3)",
    )
    p.add_argument(
        "--ignore", type=_ids, default=[], metavar="ID,...", help="skip these checks (IDs or prefixes)"
    )
    p.add_argument(
        "--waivers", metavar="F", help="TOML file of accepted findings, [[waiver]] tables (explain PB109)"
    )


def _system_options(p: argparse.ArgumentParser) -> None:
    """What describes the system and its next boot: shared by check, fix and report."""
    p.add_argument(
        "--root",
        default="/",
        metavar="DIR",
        help="read the system under DIR (default /), or in a snapshot the collector made (see `collector`)",
    )
    p.add_argument("--kernel", metavar="K", help="target kernel release")
    p.add_argument("--config", metavar="F", help="kernel config file of the target kernel")
    p.add_argument("--modules-dir", metavar="D", help="module tree of the target kernel (lib/modules/K)")
    p.add_argument("--initramfs", metavar="F", help="the initramfs the next boot uses")
    p.add_argument(
        "--kernel-image",
        metavar="F",
        help="the target kernel's image (bzImage or vmlinux; default boot/vmlinuz-K): its built-in drivers",
    )
    cmd = p.add_mutually_exclusive_group()
    cmd.add_argument("--cmdline", metavar="S", help="dom0 kernel command line of the next boot")
    cmd.add_argument("--cmdline-file", metavar="F", help="read the dom0 kernel command line from F")
    p.add_argument("--xen-cmdline", metavar="S", help="Xen hypervisor command line of the next boot")
    p.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="BDF[=VVVV:DDDD[:CCCCCC]]",
        help="a device meant for passthrough (repeatable)",
    )
    p.add_argument(
        "--domu-config", action="append", default=[], metavar="F", help="an xl domain config (repeatable)"
    )
    p.add_argument(
        "--domu-kernel",
        action="append",
        default=[],
        metavar="F",
        help="a domU kernel: bzImage, vmlinux, config or module tree (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pciback-doctor", description="Will pciback own each passthrough device after the next Xen boot?"
    )
    parser.add_argument("--version", action="version", version=f"pciback-doctor {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    check = sub.add_parser("check", help="predict the next boot (the default command)")
    _system_options(check)
    _output_options(check)

    fix = sub.add_parser("fix", help="show (or --write) the fix for the devices the next boot will not claim")
    _system_options(fix)
    fix.add_argument(
        "--strategy", choices=STRATEGIES, help="how to fix (default: the first that fits every device)"
    )
    fix.add_argument(
        "--write",
        action="store_true",
        help="apply the file changes under the root (atomically, with backups)",
    )
    fix.add_argument(
        "--backup-dir",
        metavar="D",
        help="where --write keeps the old files (default ROOT/var/backups/pciback-doctor/TIME)",
    )

    report = sub.add_parser("report", help="one self-contained HTML (or Markdown) file for a support ticket")
    _system_options(report)
    report.add_argument(
        "--output",
        metavar="F.html|F.md",
        help="write the report to F (Markdown for .md); default: HTML on stdout",
    )
    report.add_argument(
        "--no-redact",
        action="store_true",
        help="keep host names, UUIDs, MAC/IP addresses, serials and user names",
    )

    kernel = sub.add_parser("kernel", help="CI gate: does this kernel build have the PCI backend / frontend?")
    kernel.add_argument("--config", metavar="F", help="the build's .config")
    where = kernel.add_mutually_exclusive_group()
    where.add_argument(
        "--build-dir",
        metavar="D",
        help="a kernel build tree (make O=D): .config, modules.builtin, modules.order, built modules",
    )
    where.add_argument("--modules-builtin", metavar="F", help="the build's modules.builtin")
    kernel.add_argument(
        "--source-dir",
        metavar="SRC",
        help="kernel source tree whose Kconfig expands a defconfig-form --config (make savedefconfig)",
    )
    kernel.add_argument(
        "--arch",
        metavar="ARCH",
        help="make's ARCH= for that expansion, and the architecture the advice is for, when the config does not say",
    )
    kernel.add_argument("--role", choices=("dom0", "domu", "both"), default="dom0")
    _output_options(kernel)

    domu = sub.add_parser("domu", help="guest-side checks: PCI frontend, guest type, pci= entries")
    domu.add_argument("inputs", nargs="+", metavar="KERNEL-IMAGE|CONFIG|MODULE-DIR|XL-CFG")
    _output_options(domu)

    image = sub.add_parser("initramfs", help="what an initramfs holds that matters for pciback")
    image.add_argument("image", metavar="IMAGE")
    image.add_argument("--list", action="store_true", help="list every entry, like lsinitrd")

    fleet = sub.add_parser(
        "fleet", help="one report for many hosts: which would lose a device at the next reboot"
    )
    fleet.add_argument(
        "roots", nargs="*", metavar="ROOT", help="a host's root: a directory or a collector snapshot"
    )
    fleet.add_argument(
        "--from-json",
        nargs="+",
        action="extend",
        default=[],
        metavar="F",
        help="documents that `check --format json` wrote on the hosts (ROOTs go before this option)",
    )
    fleet.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="ROOT=NAME",
        help="the host's name (default: the file name without .tar.gz, .json, ...)",
    )
    fleet.add_argument(
        "--host-error",
        action="append",
        default=[],
        metavar="NAME=WHY",
        help="a host that gave nothing to analyse (unreachable): a row of its own, and a failure",
    )
    fleet.add_argument(
        "--format", choices=("text", "json", "html"), default="text", help="standard output's format"
    )
    fleet.add_argument(
        "--output",
        action="append",
        default=[],
        metavar="F.html|F.json|F.txt",
        help="also write the report to F, in the format its suffix names (repeatable)",
    )
    fleet.add_argument(
        "--fail-on",
        choices=list(FAIL_ON),
        default="error",
        help="lowest severity of a finding that fails a host (a lost device always does)",
    )
    fleet.add_argument("--jobs", type=_jobs, metavar="N", help="hosts analysed at once (default: the CPUs)")

    explain = sub.add_parser("explain", help="what a check means, why, and how to fix it")
    explain.add_argument("id", metavar="ID")

    collector = sub.add_parser(
        "collector", help="the POSIX-sh snapshot collector for hosts without Python: its path (or --print)"
    )
    collector.add_argument(
        "--print", action="store_true", help="print the script itself (pipe it to `ssh HOST sh -s -- ARGS`)"
    )
    return parser


def _emit(text: str, output: str | None = None, exact: bool = False) -> None:
    """Write UTF-8 whatever the locale (LANG=C, LC_ALL=POSIX, PYTHONIOENCODING unset or ASCII).

    Renderers have escaped what they show (render/escape.py). `exact` is for text that carries the
    inspected files' own bytes (`fix` diffs, as surrogateescape): written back byte for byte, so that
    `patch` applies the diff, except to a terminal, which is shown its controls, never sent them."""
    if exact and output is None and sys.stdout.isatty():
        from pciback_doctor.render.escape import visible

        text = visible(text)
    data = text.encode("utf-8", "surrogateescape" if exact else "backslashreplace")
    if output is not None:
        try:
            Path(output).write_bytes(data)
        except OSError as exc:
            raise UsageError(f"--output {output}: {exc.strerror or exc}") from None
        return
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a text-only stream (tests' StringIO): it takes any str
        sys.stdout.write(data.decode("utf-8", "surrogateescape"))
        return
    sys.stdout.flush()  # what was printed before goes first
    buffer.write(data)
    buffer.flush()


def _finish(args: argparse.Namespace, analysis: Analysis, roles: frozenset[str], scope: str = "dom0") -> int:
    from pciback_doctor.checks import all_checks, run_checks
    from pciback_doctor.outcome import build_report, selected

    known = all_checks()
    for given in [*args.select, *args.ignore]:
        if not any(i.startswith(given) for i in known):
            raise UsageError(
                f"no check matches '{given}' (see 'pciback-doctor explain ID'; IDs run PB101 to PB707)"
            )
    findings = run_checks(analysis, roles)
    if args.waivers:
        from datetime import date

        from pciback_doctor.facts.waivers import WaiverError, apply_waivers, read_waivers

        try:
            waivers = read_waivers(args.waivers)
        except WaiverError as exc:
            raise UsageError(f"--waivers {exc}") from None
        findings, expired = apply_waivers(findings, waivers, date.today())
        findings += expired
    report = build_report(
        analysis, findings, select=args.select, ignore=args.ignore, fail_on=args.fail_on, scope=scope
    )
    catalogue = {
        i: c for i, c in all_checks().items() if c.role in roles and selected(i, args.select, args.ignore)
    }
    _emit(_render(args.format, report, catalogue, colour=args.output is None), args.output)
    return report.exit_code


def _render(fmt: str, report: Report, catalogue: dict[str, Check], colour: bool) -> str:
    # renderers are imported when chosen: rich alone costs a tenth of a second at start-up
    if fmt == "json":
        from pciback_doctor.render import json

        return json.render(report)
    if fmt == "sarif":
        from pciback_doctor.render import sarif

        return sarif.render(report, catalogue)
    if fmt == "junit":
        from pciback_doctor.render import junit

        return junit.render(report, catalogue)
    if fmt == "github":
        from pciback_doctor.render import github

        return github.render(report)
    if fmt == "markdown":
        from pciback_doctor.render import markdown

        return markdown.render(report)
    from pciback_doctor.render import text

    return text.render(report, colour=colour and text.wants_colour(sys.stdout))


def _options(args: argparse.Namespace) -> Options:
    from pciback_doctor.facts.system import Options

    return Options(
        root=args.root,
        kernel=args.kernel,
        config=args.config,
        modules_dir=args.modules_dir,
        initramfs=args.initramfs,
        kernel_image=args.kernel_image,
        cmdline=args.cmdline,
        cmdline_file=args.cmdline_file,
        xen_cmdline=args.xen_cmdline,
        devices=tuple(args.device),
        domu_configs=tuple(args.domu_config),
        domu_kernels=tuple(args.domu_kernel),
        progress=_progress if sys.stderr.isatty() else None,
    )


def _progress(message: str) -> None:
    from pciback_doctor.render.escape import one_line

    print(one_line(message), file=sys.stderr, flush=True)  # it names files of the inspected system


def run_check(args: argparse.Namespace) -> int:
    from pciback_doctor.boot.analysis import analyse
    from pciback_doctor.facts.system import collect
    from pciback_doctor.fixes import EDITABLE

    return _finish(args, analyse(collect(_options(args), EDITABLE)), frozenset({"dom0", "domu"}))


def run_report(args: argparse.Namespace) -> int:
    from pciback_doctor import support
    from pciback_doctor.boot.analysis import analyse
    from pciback_doctor.checks import run_checks
    from pciback_doctor.facts.system import collect
    from pciback_doctor.fixes import EDITABLE
    from pciback_doctor.outcome import build_report

    system = collect(_options(args), EDITABLE)
    analysis = analyse(system)
    roles = frozenset({"dom0", "domu"})
    report = build_report(analysis, run_checks(analysis, roles))
    built = support.build(system, analysis, report, redact=not args.no_redact)
    if args.output and args.output.endswith(".md"):
        from pciback_doctor.support import markdown

        _emit(markdown.render(built), args.output)
    else:
        from pciback_doctor.support import html

        _emit(html.render(built), args.output)
    return report.exit_code


def run_fix(args: argparse.Namespace) -> int:
    from pciback_doctor.boot.analysis import analyse
    from pciback_doctor.checks import run_checks
    from pciback_doctor.facts.system import collect
    from pciback_doctor.fixes import EDITABLE, decision, offers
    from pciback_doctor.fixes.apply import pending, unified_diff, write
    from pciback_doctor.model import Fix, Severity

    if args.write and Path(args.root).exists() and not Path(args.root).is_dir():
        raise UsageError(
            f"fix --write: --root {args.root} is a snapshot, not a directory: run `fix` on it to see the"
            " changes, and `fix --write` on the host"
        )
    system = collect(_options(args), EDITABLE)
    analysis = analyse(system)
    found = offers(analysis, only=args.strategy)
    out: list[str] = []
    notes: list[str] = []  # the strategies not chosen, each with its verdict
    fixes: list[Fix] = []
    if args.strategy and found:
        chosen = found[0]
        if chosen.fix is None:
            others = [o.strategy for o in offers(analysis) if o.offered]
            raise UsageError(
                f"no '{args.strategy}' fix here: {chosen.why_not}; these do: {', '.join(others) or 'none'}"
            )
        if chosen.why_not:  # asked for by name: shown, with what the model expects of it
            out.append(f"# warning: this fix is not proven to work — {chosen.why_not}\n")
        fixes.append(chosen.fix)
    elif found:
        proven = [o.fix for o in found if o.offered and o.fix is not None]
        if not proven:
            undecided = decision(found)
            steps = "".join(f"{c}\n" for c in undecided.commands)
            _emit(
                f"# {undecided.description}\n" + (f"# due anyway:\n{steps}" if steps else ""),
                None,
                exact=True,
            )
            return 1
        fixes.append(proven[0])
        # the other strategies, each with its verdict: the admin may prefer another one
        others = [o.strategy for o in found if o.offered and o.fix is not proven[0]]
        if others:
            notes.append(f"# also proven: {', '.join(others)} (fix --strategy NAME)\n")
        notes += [
            f"# not offered: {o.strategy}: {o.why_not}\n"
            for o in found
            if not o.offered and o.strategy != "regenerate"
        ]
    else:
        # every device is claimed: only generated files older than their settings may be left
        for finding in run_checks(analysis, frozenset({"dom0", "domu"})):
            if finding.severity is Severity.ERROR or finding.id in ("PB402", "PB605"):
                fixes += [f for f in finding.fixes if not f.files and f.commands]
    changes = [c for f in fixes for c in f.files]
    commands = list(dict.fromkeys(c for f in fixes for c in f.commands))
    todo = pending(changes, system.files)
    out += [f"# {f.strategy}: {f.description}\n" for f in fixes]
    out += notes
    if fixes and not changes:
        out.append(
            "# no file to change: "
            + ("run the commands below\n" if commands else "a step to do by hand (above)\n")
        )
    elif args.write:
        written = write(system.root, todo, system.files, Path(args.backup_dir) if args.backup_dir else None)
        out.append("".join(f"wrote {p}\n" for p in written) or "nothing to change: already applied\n")
    else:
        out.append(unified_diff(todo, system.files) or "# no file changes\n")
    if commands:
        out.append("# then run (not run by the doctor):\n" + "".join(f"{c}\n" for c in commands))
    if not fixes:
        out.append(
            "nothing to fix: every device meant for passthrough is predicted claimed\n"
            if analysis.devices
            else "nothing to fix: no device is meant for passthrough (no hide value, xl pci= or --device)\n"
        )
    # the diff carries the files' own bytes: written back exactly, so that `patch` applies it
    _emit("".join(out), None, exact=True)
    return 0


def run_kernel(args: argparse.Namespace) -> int:
    from pciback_doctor.arches import names_arch
    from pciback_doctor.boot.analysis import analyse
    from pciback_doctor.facts.machine import Machine
    from pciback_doctor.facts.standalone import kernel_build
    from pciback_doctor.model import Evidence

    system = kernel_build(args.config, args.modules_builtin, args.build_dir, args.source_dir, args.arch)
    if args.arch and system.config is not None and not names_arch(system.config):
        # --arch names the architecture of a config that does not say (no header, no CONFIG_ARM64):
        # the backend and frontend advice follow it; a config that says wins
        machine = Machine(args.arch, Evidence("--arch", None, f"ARCH={args.arch}"))
        kernels = tuple(replace(k, machine=machine) for k in system.domu_kernels)
        system = replace(system, machine=machine, domu_kernels=kernels)
    roles = frozenset({"dom0", "domu"}) if args.role == "both" else frozenset({args.role})
    return _finish(args, analyse(system), roles, scope="kernel")


def run_domu(args: argparse.Namespace) -> int:
    from pciback_doctor.background import in_background
    from pciback_doctor.facts.standalone import domu_inputs

    # a kernel image inflates on a thread (liblzma and zlib release the GIL) while the boot model,
    # the checks and the renderer are imported: start-up hides behind the decompression
    inputs = in_background(lambda: domu_inputs(args.inputs))
    from pciback_doctor.boot.analysis import analyse
    from pciback_doctor.checks import all_checks

    all_checks()
    importlib.import_module(f"pciback_doctor.render.{args.format}")  # FORMATS are its module names
    # guest-side checks only: without a dom0 there is no prediction for the pci= devices
    analysis = replace(analyse(inputs()), devices=())
    return _finish(args, analysis, frozenset({"domu"}), scope="domu")


def run_initramfs(args: argparse.Namespace) -> int:
    from pciback_doctor.facts.image import image_facts, open_image
    from pciback_doctor.facts.root import NotReadable
    from pciback_doctor.render import image as image_render

    path = Path(args.image)
    try:
        raw = open_image(path, list_only=args.list)
    except NotReadable as exc:
        raise UsageError(f"{args.image}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{args.image}: {exc.strerror or exc}") from None
    if raw.error and not raw.entries:  # nothing at all could be read: the named input is unusable
        raise UsageError(f"{args.image}: {raw.error}")
    if args.list:
        _emit(image_render.listing(raw))
    else:
        _emit(image_render.summary(image_facts(raw, args.image), raw))
    return 1 if raw.error else 0


FLEET_SUFFIXES = {".html": "html", ".htm": "html", ".json": "json", ".txt": "text"}


def run_fleet(args: argparse.Namespace) -> int:
    from pciback_doctor.fleet import analyse_fleet, sources

    outputs = [(o, FLEET_SUFFIXES.get(Path(o).suffix.lower())) for o in args.output]
    for name, fmt in outputs:
        if fmt is None:
            raise UsageError(f"--output {name}: name it .html, .json or .txt (the suffix says the format)")
    hosts = sources(args.roots, args.from_json, args.name, args.host_error)
    fleet = analyse_fleet(hosts, args.fail_on, args.jobs, _progress if sys.stderr.isatty() else None)
    for name, fmt in outputs:
        _emit(_render_fleet(fmt or "text", fleet), name)
    _emit(_render_fleet(args.format, fleet))
    return fleet.exit_code


def _render_fleet(fmt: str, fleet: Fleet) -> str:
    if fmt == "json":
        from pciback_doctor.fleet import json

        return json.render(fleet)
    if fmt == "html":
        from pciback_doctor.fleet import html

        return html.render(fleet)
    from pciback_doctor.fleet import text

    return text.render(fleet)


def run_explain(args: argparse.Namespace) -> int:
    from pciback_doctor.checks import all_checks

    checks = all_checks()
    chk = checks.get(args.id.upper())
    if chk is None:
        raise UsageError(f"no check {args.id}; known: {', '.join(checks)}")
    sys.stdout.write(f"{chk.id} ({chk.severity.label}): {chk.title}\n\n{chk.explanation}\n")
    return 0


def run_collector(args: argparse.Namespace) -> int:
    from pciback_doctor.collector import COLLECTOR

    if args.print:
        _emit(COLLECTOR.read_text(encoding="utf-8"))
    else:
        _emit(f"{COLLECTOR}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "check")  # `check` is the default command
    try:
        args = build_parser().parse_args(argv)
        handlers = {
            "check": run_check,
            "fix": run_fix,
            "report": run_report,
            "kernel": run_kernel,
            "domu": run_domu,
            "initramfs": run_initramfs,
            "explain": run_explain,
            "collector": run_collector,
            "fleet": run_fleet,
        }
        return handlers[args.command](args)
    except UsageError as exc:
        from pciback_doctor.render.escape import one_line

        # the message may name a hostile path: shown on one line, its controls never obeyed
        print(f"pciback-doctor: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug, not bad input: still one line unless asked for the traceback
        if os.environ.get("PCIBACK_DOCTOR_DEBUG"):
            raise
        from pciback_doctor.render.escape import one_line

        print(
            f"pciback-doctor: internal error: {type(exc).__name__}: {one_line(str(exc))} (set PCIBACK_DOCTOR_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 2
