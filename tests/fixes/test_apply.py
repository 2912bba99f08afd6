"""`fix --write`'s one write path against an attacker or an unlucky admin (issue 16, "writes outside the
root / data loss"): nothing lands outside the root, no backup is overwritten, nothing is half-applied,
no byte of a kept line is lost, a FIFO never hangs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from helpers import FIXTURES, doctor
from pciback_doctor.errors import UsageError
from pciback_doctor.facts.root import Root
from pciback_doctor.fixes import apply
from pciback_doctor.fixes.apply import write
from pciback_doctor.model import FileChange

OLD = "options xen-pciback hide=(0000:01:00.0)\n"
NEW = "options xen-pciback hide=(0000:01:00.0)(0000:02:00.0)\n"
CONF = "etc/modprobe.d/xen-pciback.conf"
STAMP = "20261126T010203"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root holding one file the fix replaces."""
    r = tmp_path / "root"
    (r / "etc/modprobe.d").mkdir(parents=True)
    (r / CONF).write_text(OLD)
    return r


@pytest.fixture
def fixed_stamp(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every run in the same second, and the backup folder's name known in advance."""
    monkeypatch.setattr(apply, "_stamp", lambda: STAMP)
    return STAMP


def tree(path: Path) -> dict[str, str]:
    """Every entry under `path` (symlinks not followed), with what it is."""
    out = {}
    for p in sorted(path.rglob("*")):
        kind = "link" if p.is_symlink() else "dir" if p.is_dir() else p.read_bytes().hex()
        out[str(p.relative_to(path))] = kind
    return out


def fix(root: Path, content: str = NEW, backup_dir: Path | None = None) -> list[str]:
    return write(Root(root), [FileChange(CONF, content)], {CONF: (root / CONF).read_text()}, backup_dir)


# -- nothing outside the root -------------------------------------------------------------------


@pytest.mark.parametrize("link", ["var", "var/backups"])
def test_a_symlink_on_the_backup_path_never_leads_out_of_the_root(
    tmp_path: Path, root: Path, link: str
) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(str(host), root / link)  # an absolute target: inside the root after chroot
    with pytest.raises(UsageError, match="points to a path missing inside the root"):
        fix(root)
    assert tree(host) == {}
    assert (root / CONF).read_text() == OLD  # nothing half-applied either

    # the same path made inside the root: that is where the backups go, as the booted system sees it
    inside = root / str(host).lstrip("/")
    inside.mkdir(parents=True)
    assert fix(root) == [CONF]
    assert tree(host) == {}
    backups = inside if link == "var/backups" else inside / "backups"
    [folder] = (backups / "pciback-doctor").iterdir()
    assert (folder / CONF).read_text() == OLD
    assert (root / CONF).read_text() == NEW


def test_relative_symlink_climbing_out_stops_at_the_root(tmp_path: Path, root: Path) -> None:
    (tmp_path / "host-var/backups").mkdir(parents=True)
    os.symlink("../host-var", root / "var")  # on the host this reaches tmp_path/host-var
    with pytest.raises(UsageError, match="missing inside the root"):
        fix(root)
    assert tree(tmp_path / "host-var") == {"backups": "dir"}
    (root / "var").unlink()
    os.symlink("var", root / "var")  # a loop ends with an error, not a hang
    with pytest.raises(UsageError, match="too many levels of symlinks"):
        fix(root)
    assert (root / CONF).read_text() == OLD


def test_a_symlink_named_like_the_backup_folder_is_never_followed(
    tmp_path: Path, root: Path, fixed_stamp: str
) -> None:
    victim = tmp_path / "host-file"
    victim.write_text("precious\n")
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    planted = root / "var/backups/pciback-doctor"
    planted.mkdir(parents=True)
    os.symlink(str(victim), planted / fixed_stamp)  # the attacker guessed this second's name
    os.symlink(str(host_dir), planted / f"{fixed_stamp}.2")  # and the next one, as a directory
    assert fix(root) == [CONF]
    assert victim.read_text() == "precious\n"
    assert tree(host_dir) == {}
    assert (planted / f"{fixed_stamp}.3" / CONF).read_text() == OLD
    assert oct((planted / f"{fixed_stamp}.3").stat().st_mode & 0o777) == oct(0o700)


def test_two_runs_in_the_same_second_keep_both_backups(root: Path, fixed_stamp: str) -> None:
    fix(root, NEW)
    fix(root, "third version\n")
    base = root / "var/backups/pciback-doctor"
    assert (base / fixed_stamp / CONF).read_text() == OLD
    assert (base / f"{fixed_stamp}.2" / CONF).read_text() == NEW
    assert (root / CONF).read_text() == "third version\n"


def test_backup_dir_is_never_overwritten(tmp_path: Path, root: Path) -> None:
    bak = tmp_path / "bak"
    fix(root, NEW, bak)
    with pytest.raises(UsageError, match="refusing to overwrite the backup"):
        fix(root, "third version\n", bak)
    assert (bak / CONF).read_text() == OLD  # the first backup is intact
    assert (root / CONF).read_text() == NEW  # and the second fix was not applied without one


def test_a_symlinked_target_is_written_where_it_resolves_inside_the_root(root: Path) -> None:
    (root / "srv").mkdir()
    (root / "srv/real.conf").write_text(OLD)
    (root / CONF).unlink()
    os.symlink("/srv/real.conf", root / CONF)
    write(Root(root), [FileChange(CONF, NEW)], {CONF: OLD}, None)
    assert (root / CONF).is_symlink()  # the admin's link stays a link
    assert (root / "srv/real.conf").read_text() == NEW


# -- nothing half-applied ---------------------------------------------------------------------------


@contextmanager
def read_only(where: Path) -> Iterator[None]:
    """`where` on a read-only mount (root ignores permission bits, not a read-only mount)."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "--bind", str(where), str(where)]).returncode:
        pytest.skip("needs root and bind mounts to make a read-only directory")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(where)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(where)], check=False)


def test_read_only_backup_dir_writes_nothing(tmp_path: Path, root: Path) -> None:
    before = tree(root)
    with read_only(tmp_path / "ro"), pytest.raises(UsageError, match="not a writable directory"):
        fix(root, NEW, tmp_path / "ro/bak")
    assert tree(root) == before


def test_read_only_default_backup_folder_writes_nothing(root: Path) -> None:
    with read_only(root / "var/backups/pciback-doctor"):
        before = tree(root)
        with pytest.raises(UsageError, match="not writable"):
            fix(root)
        assert tree(root) == before


def test_a_failing_backup_leaves_every_target_untouched(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup that fails after the checks (disk full) comes before any target is touched."""
    (root / "etc/other.conf").write_text("other\n")

    def full(self: object, step: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(apply._Backup, "keep", full)
    before = tree(root)
    with pytest.raises(UsageError, match=r"nothing was changed.*No space left"):
        write(
            Root(root),
            [
                FileChange(CONF, NEW),
                FileChange("etc/other.conf", "new other\n"),
                FileChange("etc/new/x", "x\n"),
            ],
            {CONF: OLD, "etc/other.conf": "other\n"},
            None,
        )
    assert tree(root) == before  # no temporary file, no new directory, no backup folder left


def test_a_failing_rename_puts_back_every_file_already_replaced(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (root / "etc/other.conf").write_text("other\n")
    real = os.replace
    calls = []

    def second_fails(*args: object, **kwargs: object) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(apply.os, "replace", second_fails)
    with pytest.raises(
        UsageError, match="Input/output error; every file was put back as it was; the old files"
    ):
        write(
            Root(root),
            [
                FileChange(CONF, NEW),
                FileChange("etc/other.conf", "new other\n"),
                FileChange("etc/new/x", "x\n"),
            ],
            {CONF: OLD, "etc/other.conf": "other\n"},
            None,
        )
    assert (root / CONF).read_text() == OLD
    assert (root / "etc/other.conf").read_text() == "other\n"
    assert not (root / "etc/new").exists()
    assert sorted(p.name for p in (root / "etc/modprobe.d").iterdir()) == ["xen-pciback.conf"]


# -- FIFOs and devices ------------------------------------------------------------------------------


def test_fifo_where_the_fix_writes_is_a_one_line_error_not_a_hang(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "classic-pciback-hide", root, symlinks=True)
    os.mkfifo(root / CONF)
    run = subprocess.run(
        [sys.executable, "-m", "pciback_doctor", "fix", "--root", str(root), "--write"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0
    assert f"{CONF}: it is a FIFO, not a regular file" in run.stderr


def test_fifo_on_the_backup_path_is_refused(root: Path) -> None:
    (root / "var").mkdir()
    os.mkfifo(root / "var/backups")
    with pytest.raises(UsageError, match="var/backups on its way is a FIFO"):
        fix(root)
    assert (root / CONF).read_text() == OLD


def test_device_as_target_is_refused(root: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    (root / CONF).unlink()
    os.mknod(root / CONF, 0o600 | 0o020000, os.makedev(1, 5))  # /dev/zero
    with pytest.raises(UsageError, match="it is a character device, not a regular file"):
        write(Root(root), [FileChange(CONF, NEW)], {}, None)


# -- every byte kept ---------------------------------------------------------------------------------


def test_crlf_file_is_fixed(tmp_path: Path) -> None:
    """A CRLF file was "changed since it was read" for ever: the comparison used translated text."""
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "builtin-cmdline-hide", root, symlinks=True)
    (root / "etc/default").mkdir(parents=True)
    grub = b'GRUB_DEFAULT=0\r\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\r\nGRUB_TIMEOUT=5\r\n'
    (root / "etc/default/grub").write_bytes(grub)
    (root / "proc/cmdline").write_text("ro quiet\n")
    run = doctor("fix", "--root", str(root), "--device", "0000:00:14.0", "--strategy", "cmdline", "--write")
    assert run.code == 0, run.err
    assert (root / "etc/default/grub").read_bytes() == grub.replace(
        b'"quiet"', b'"quiet xen-pciback.hide=(0000:00:14.0)"'
    )


def test_untouched_bytes_owner_and_mode_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "builtin-cmdline-hide", root, symlinks=True)
    (root / "etc/default").mkdir(parents=True)
    # a form feed, a Latin-1 byte, U+0085 and U+2028 in lines the fix must not touch
    grub = (
        b"# GRUB defaults\x0c\n# caf\xe9\n"
        + "GRUB_DISTRIBUTOR='x\u0085y\u2028z'\n".encode()
        + b'GRUB_CMDLINE_LINUX_DEFAULT="quiet" # keep me\nGRUB_TIMEOUT=5'
    )
    path = root / "etc/default/grub"
    path.write_bytes(grub)
    os.chown(path, 1234, 1234)
    os.chmod(path, 0o640)
    os.utime(path, (1_000_000_000, 1_000_000_000))
    (root / "proc/cmdline").write_text("ro quiet\n")
    run = doctor(
        "fix", "--root", str(root), "--device", "0000:00:14.0", "--strategy", "cmdline", "--write",
        "--backup-dir", str(tmp_path / "bak"),
    )  # fmt: skip
    assert run.code == 0, run.err
    assert path.read_bytes() == grub.replace(b'"quiet"', b'"quiet xen-pciback.hide=(0000:00:14.0)"')
    info = path.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (1234, 1234, 0o640)
    assert (tmp_path / "bak/etc/default/grub").read_bytes() == grub
    assert (tmp_path / "bak/etc/default/grub").stat().st_uid == 1234
    assert (tmp_path / "bak/etc/default/grub").stat().st_mtime == 1_000_000_000


def test_a_file_changed_on_bytes_only_is_refused(root: Path) -> None:
    (root / CONF).write_bytes(OLD.encode().replace(b"\n", b"\r\n"))
    with pytest.raises(UsageError, match="changed since it was read"):
        write(Root(root), [FileChange(CONF, NEW)], {CONF: OLD}, None)
    assert (root / CONF).read_bytes() == OLD.encode().replace(b"\n", b"\r\n")


def test_a_shell_file_that_would_not_read_as_intended_is_not_written(root: Path) -> None:
    (root / "etc/default").mkdir()
    (root / "etc/default/grub").write_text('A="x"\n')
    change = FileChange("etc/default/grub", 'A="x" # y\n', sets=(("A", "x y"),))
    with pytest.raises(UsageError, match="A would read as 'x', not 'x y'"):
        write(Root(root), [change], {"etc/default/grub": 'A="x"\n'}, None)
    assert (root / "etc/default/grub").read_text() == 'A="x"\n'


def test_an_edit_made_while_writing_is_not_lost(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = apply._stage

    def admin_edits_meanwhile(*args: Any) -> str:
        (root / CONF).write_text("edited by the admin meanwhile\n")
        return real(*args)

    monkeypatch.setattr(apply, "_stage", admin_edits_meanwhile)
    with pytest.raises(UsageError, match="changed while the fix was being written"):
        fix(root)
    assert (root / CONF).read_text() == "edited by the admin meanwhile\n"
    assert sorted(p.name for p in (root / "etc/modprobe.d").iterdir()) == ["xen-pciback.conf"]


def test_diff_keeps_lines_whole_and_marks_a_missing_final_newline() -> None:
    old = "a\x0cb\u2028c\nGRUB_X=1"
    diff = apply.unified_diff([FileChange("etc/default/grub", old + " # y")], {"etc/default/grub": old})
    assert diff.split("\n")[3:] == [
        " a\x0cb\u2028c",
        "-GRUB_X=1",
        "\\ No newline at end of file",
        "+GRUB_X=1 # y",
        "\\ No newline at end of file",
        "",
    ]


def test_extended_attributes_are_kept(root: Path) -> None:
    """ACLs and SELinux labels live in xattrs: a replaced file keeps them (here a user.* one)."""
    try:
        os.setxattr(root / CONF, "user.pciback-test", b"kept")
    except OSError:
        pytest.skip("no user xattrs on this file system")
    fix(root)
    assert (root / CONF).read_text() == NEW
    assert os.getxattr(root / CONF, "user.pciback-test") == b"kept"


def test_a_newline_in_a_symlink_target_stays_one_line(tmp_path: Path, root: Path) -> None:
    os.symlink("/no\nsuch\x1b[2J", root / "var")
    with pytest.raises(UsageError) as error:
        fix(root)
    assert "\n" not in str(error.value) and "\x1b" not in str(error.value)
