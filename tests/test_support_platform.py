"""The support report names the platform (os-release's PRETTY_NAME, the tools its fixes use) and the
target kernel's architecture; redaction keeps the distribution's name, which names no machine."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from pciback_doctor import support
from pciback_doctor.boot.analysis import analyse
from pciback_doctor.checks import run_checks
from pciback_doctor.facts.system import Options, collect
from pciback_doctor.outcome import build_report
from pciback_doctor.support import html as support_html
from pciback_doctor.support import markdown as support_markdown
from test_support_report import make_root

PRETTY = "Debian GNU/Linux 12 (bookworm)"


def reports(root: Path, redact: bool) -> dict[str, str]:
    system = collect(Options(root=str(root)))
    analysis = analyse(system)
    sr = support.build(
        system, analysis, build_report(analysis, run_checks(analysis, frozenset({"dom0"}))), redact=redact
    )
    return {"html": support_html.render(sr), "markdown": support_markdown.render(sr)}


def text_of(document: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", document))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The support report's Debian dom0 (GRUB menu titles "Debian GNU/Linux, with Xen ..."), its host
    called `debian`, Debian's default host name."""
    root = make_root(tmp_path_factory.mktemp("platform") / "root")
    (root / "etc/hostname").write_text("debian\n")
    return root


@pytest.mark.parametrize("redact", [False, True])
def test_platform_and_tools_are_shown(root: Path, redact: bool) -> None:
    for fmt, document in reports(root, redact).items():
        shown = text_of(document) if fmt == "html" else document
        assert PRETTY in shown, fmt  # also in the redacted file: os-release names no machine
        assert "update-grub" in shown, fmt  # Debian's own command, not grub-mkconfig
        assert "update-initramfs -u -k" in shown, fmt
        assert "etc/os-release" in shown, fmt  # where the profile was read


def test_redaction_still_hides_a_host_named_like_the_distribution(root: Path) -> None:
    """The host name is a pseudonym; the distribution's names (PRETTY_NAME, and NAME in the boot menu
    titles) are not: "Debian GNU/Linux, with Xen" stays, never "host-1 GNU/Linux, with Xen"."""
    for fmt, document in reports(root, redact=True).items():
        shown = text_of(document) if fmt == "html" else document
        assert re.search(r"host name\W+host-1\b", shown), fmt
        assert "Debian GNU/Linux, with Xen" in shown, fmt
        assert "host-1 GNU/Linux" not in shown, fmt
        assert PRETTY in shown, fmt


def test_architecture_is_shown(root: Path) -> None:
    """The config (module-modprobe-options') has a `Linux/x86` header and no CONFIG_X86_64 line: x86."""
    for fmt, document in reports(root, redact=True).items():
        shown = text_of(document) if fmt == "html" else document
        assert re.search(r"kernel\W+6\.1\.0-17-amd64\W*\(x86\)", shown), (fmt, shown[:400])
        assert "header: Linux/x86" in shown, fmt
