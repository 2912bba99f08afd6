"""Snapshots (issue 15): the POSIX-sh collector, and `--root SNAPSHOT` giving the live root's answers.

Every fixture root is collected under dash and under busybox sh and checked both ways; the JSON must
be the same but for `target.root`. Then hostile archives, one row each: the reader refuses them with
one line, or leaves the hostile member out and says so — it never reads outside the snapshot.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import FIXTURES, copy_fixture, doctor, unavailable
from pciback_doctor.collector import COLLECTOR
from pciback_doctor.facts.limits import CONFIG_FILE, Limit
from pciback_doctor.facts.snapshot import MANIFEST, SnapshotError, SnapshotRoot

SHELLS = {"dash": ["dash"], "busybox": ["busybox", "sh"], "bash-posix": ["bash", "--posix"]}


def collect(root: Path, out: Path, shell: str = "dash", *args: str) -> Path:
    command = SHELLS[shell]
    if shutil.which(command[0]) is None:
        unavailable(f"{command[0]} is not installed")
    env = {"PATH": os.environ["PATH"], "TMPDIR": str(out.parent)}
    if shell == "busybox":  # busybox's own applets, not coreutils (as on a minimal dom0)
        applets = out.parent / "busybox-bin"
        if not applets.exists():
            applets.mkdir()
            for name in subprocess.run(["busybox", "--list"], capture_output=True, text=True).stdout.split():
                os.symlink(shutil.which("busybox") or "busybox", applets / name)
        env["PATH"] = str(applets)
    result = subprocess.run(
        [*command, str(COLLECTOR), "--root", str(root), "--output", str(out), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return out


def check_json(*args: str) -> dict[str, Any]:
    run = doctor("check", *args, "--format", "json")
    assert run.code in (0, 1), run.err
    found: dict[str, Any] = run.json()
    found["target"].pop("root")
    return found


def manifest(snapshot: Path) -> dict[str, Any]:
    with tarfile.open(snapshot) as archive:
        member = archive.extractfile(MANIFEST)
        assert member is not None
        found: dict[str, Any] = json.load(member)
    return found


FIXTURE_ROOTS = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


@pytest.mark.parametrize("shell", ["dash", "busybox"])
@pytest.mark.parametrize("fixture", FIXTURE_ROOTS)
def test_snapshot_answers_like_the_root_it_was_taken_from(fixture: str, shell: str, tmp_path: Path) -> None:
    snapshot = collect(FIXTURES / fixture, tmp_path / f"{fixture}.tar.gz", shell)
    live = check_json("--root", str(FIXTURES / fixture))
    assert check_json("--root", str(snapshot)) == live
    assert live["devices"] or live["findings"]  # the comparison compares something


def test_snapshot_members_are_root_relative_with_links_kept(tmp_path: Path) -> None:
    snapshot = collect(FIXTURES / "example", tmp_path / "s.tgz")
    with tarfile.open(snapshot) as archive:
        members = {m.name: m for m in archive.getmembers()}
    assert next(iter(members)) == MANIFEST  # first: a reader learns what was left out before the rest
    assert "etc/modprobe.d/xen-pciback.conf" in members
    link = members["sys/bus/pci/devices/0000:05:00.0"]
    assert link.issym() and link.linkname.startswith("../../../devices/")
    assert not any(n.startswith(("/", "./")) or ".." in n.split("/") for n in members)
    info = manifest(snapshot)
    assert info["root"] == str(FIXTURES / "example") and info["collector"]
    assert info["files"]["etc/modprobe.d/xen-pciback.conf"] == {
        "status": "read",
        "size": (FIXTURES / "example/etc/modprobe.d/xen-pciback.conf").stat().st_size,
    }
    assert info["files"]["etc/default/grub"] == {"status": "missing"}


@pytest.mark.parametrize("codec", ["gzip", "zstd", "xz", "bzip2", "none"])
def test_any_compression_is_found_by_its_magic_not_its_name(codec: str, tmp_path: Path) -> None:
    if codec not in ("gzip", "none") and shutil.which(codec) is None:
        unavailable(f"{codec} is not installed")
    snapshot = collect(FIXTURES / "classic-pciback-hide", tmp_path / "host7.bin", "dash", "--compress", codec)
    assert check_json("--root", str(snapshot)) == check_json("--root", str(FIXTURES / "classic-pciback-hide"))


def test_collector_under_bash_posix_writes_the_same_files(tmp_path: Path) -> None:
    names = []
    for shell in ("dash", "bash-posix"):
        with tarfile.open(collect(FIXTURES / "boot-fedora-bls", tmp_path / f"{shell}.tgz", shell)) as archive:
            names.append(sorted(archive.getnames()))
    assert names[0] == names[1]


def test_unreadable_on_the_host_is_the_same_finding_from_the_snapshot(tmp_path: Path) -> None:
    root = copy_fixture("classic-pciback-hide", tmp_path)
    os.mkfifo(root / "etc/modprobe.d/fifo.conf")  # reading it would block forever
    (root / "etc/modprobe.d/huge.conf").write_bytes(b"# x\n" * (CONFIG_FILE.value // 4 + 1))
    snapshot = collect(root, tmp_path / "s.tgz")
    live = check_json("--root", str(root))
    unreadable = [f for f in live["findings"] if f["id"] == "PB110"]
    assert {"etc/modprobe.d/fifo.conf", "etc/modprobe.d/huge.conf"} <= {
        e["path"] for f in unreadable for e in f["evidence"]
    }
    assert check_json("--root", str(snapshot)) == live
    assert manifest(snapshot)["files"]["etc/modprobe.d/fifo.conf"] == {
        "status": "unreadable",
        "why": "a FIFO, not a regular file",
    }


def test_a_kernel_left_out_by_kernel_option_says_so(tmp_path: Path) -> None:
    root = copy_fixture("example", tmp_path)
    (root / "boot/initrd.img-6.1.0-99-amd64").write_bytes(b"\0" * (2 << 20))
    (root / "boot/initrd.img-6.1.0-56-xendom0").write_bytes(b"\0" * (2 << 20))
    snapshot = collect(root, tmp_path / "s.tgz", "dash", "--kernel", "6.1.0-56-xendom0")
    files = manifest(snapshot)["files"]
    assert files["boot/initrd.img-6.1.0-99-amd64"]["status"] == "skipped"
    assert files["boot/initrd.img-6.1.0-56-xendom0"]["status"] == "read"
    other = check_json("--root", str(snapshot), "--kernel", "6.1.0-99-amd64")
    assert any(
        f["id"] == "PB110" and "not in the snapshot" in json.dumps(f) and "6.1.0-99" in json.dumps(f)
        for f in other["findings"]
    )


def test_collector_command_prints_its_path_and_its_script(tmp_path: Path) -> None:
    assert doctor("collector").out.strip() == str(COLLECTOR)
    script = doctor("collector", "--print").out
    assert script == COLLECTOR.read_text()
    piped = subprocess.run(
        ["sh", "-s", "--", "--root", str(FIXTURES / "example")],
        input=script.encode(),
        capture_output=True,
        check=True,
    )
    (tmp_path / "piped.tgz").write_bytes(piped.stdout)
    assert check_json("--root", str(tmp_path / "piped.tgz")) == check_json(
        "--root", str(FIXTURES / "example")
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--root", "/nonexistent-root"], "--root /nonexistent-root: not a directory"),
        (["--kernel", "../x"], "--kernel ../x: not a kernel release"),
        (["--compress", "rar"], "--compress rar: use gzip"),
        (["--bogus"], "unknown argument '--bogus'"),
        (
            ["--root", str(FIXTURES / "example"), "--output", "/nonexistent/dir/x.tgz"],
            "--output /nonexistent/dir/x.tgz: cannot be written",
        ),
    ],
)
def test_collector_usage_errors_are_one_line(args: list[str], message: str) -> None:
    result = subprocess.run(["dash", str(COLLECTOR), *args], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_collector_is_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        unavailable("shellcheck is not installed")
    result = subprocess.run(["shellcheck", "-s", "sh", str(COLLECTOR)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_fix_write_on_a_snapshot_is_a_usage_error(tmp_path: Path) -> None:
    snapshot = collect(FIXTURES / "classic-pciback-hide", tmp_path / "s.tgz")
    run = doctor("fix", "--write", "--root", str(snapshot))
    assert run.code == 2 and "is a snapshot, not a directory" in run.err and run.err.count("\n") == 1
    assert doctor("fix", "--root", str(snapshot)).code == 0  # showing the fix is fine


# --- hostile archives ------------------------------------------------------------------------------


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, None if data is None else io.BytesIO(data))
    return out.getvalue()


def _file(
    name: str, data: bytes = b"options xen-pciback hide=(0000:05:00.0)\n"
) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _header(name: str, size: int, typeflag: bytes = b"0") -> bytes:
    """One raw ustar header (for sizes Python's tarfile would not write without the data)."""
    block = bytearray(512)
    block[:100] = name.encode().ljust(100, b"\0")
    block[100:108] = b"0000644\0"
    block[124:136] = f"{size:011o}\0".encode() if size < 8**11 else b"\x80" + size.to_bytes(11, "big")
    block[156:157] = typeflag
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    return bytes(block)


def _bomb(size: int) -> bytes:
    """A gzip'd tar with one member of `size` zero bytes, built without holding it."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(_header("etc/modprobe.d/zero.conf", size))]
    chunk = bytes(1 << 20)
    for _ in range(size >> 20):
        parts.append(packer.compress(chunk))
    parts.append(packer.flush())
    return b"".join(parts)


def _many_entries(n: int) -> bytes:
    # gzip members one after another are one gzip stream (RFC 1952): 1,000 entries, n/1,000 times
    return gzip.compress(_header("etc/x", 0) * 1000) * (n // 1000)


def _valid() -> bytes:
    return gzip.compress(
        _tar([_file(f"etc/modprobe.d/f{i}.conf", os.urandom(3000).hex().encode()) for i in range(20)])
    )


@pytest.mark.parametrize(
    ("case", "archive", "outcome"),
    [
        # names and links that would leave the root if it were unpacked: placed inside it, or left out
        (
            "absolute name",
            lambda o: _tar([_file("/etc/modprobe.d/x.conf")]),
            ("reads", "etc/modprobe.d/x.conf"),
        ),
        (
            "dotdot name",
            lambda o: _tar([_file("../../etc/modprobe.d/x.conf")]),
            ("left out", "../../etc/modprobe.d/x.conf"),
        ),
        (
            "symlink out, then a member through it",
            lambda o: _tar([_link("etc/modprobe.d", f"/../../..{o}"), _file("etc/modprobe.d/x.conf")]),
            ("left out", "etc/modprobe.d/x.conf"),
        ),
        (
            "hard link to outside",
            lambda o: _tar([_link("etc/modprobe.d/x.conf", f"../../..{o}/secret", tarfile.LNKTYPE)]),
            ("left out", "etc/modprobe.d/x.conf"),
        ),
        (
            "sparse member of 20 GiB",
            lambda o: _header("etc/modprobe.d/x.conf", 0, b"S") + bytes(1024),
            ("left out", "etc/modprobe.d/x.conf"),
        ),
        # archives that cannot be a root: refused with one line naming the limit or the damage
        (
            "member claiming 20 GiB",
            lambda o: gzip.compress(_header("boot/initrd.img-6.1", 20 << 30) + bytes(4096)),
            ("refused", "snapshot member size"),
        ),
        ("gzip bomb", lambda o: _bomb(128 << 20), ("refused", "decompression bomb")),
        ("a million entries", lambda o: _many_entries(1_000_000), ("refused", "limit")),
        ("not a tar", lambda o: b"\x7fELF" + os.urandom(4000), ("refused", "not a tar archive")),
        ("gzip of not a tar", lambda o: gzip.compress(b"hello\n" * 500), ("refused", "not a tar archive")),
        ("truncated", lambda o: _valid()[: len(_valid()) // 2], ("refused", "cut short")),
        ("empty", lambda o: b"", ("refused", "not a tar archive")),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_hostile_archives(case: str, archive: Any, outcome: tuple[str, str], tmp_path: Path) -> None:
    outside = tmp_path / "outside"  # what a link or a name could reach if the archive were unpacked
    outside.mkdir()
    (outside / "x.conf").write_text("options xen-pciback hide=(0000:66:00.0)\n")
    (outside / "secret").write_text("s3cret\n")
    path = tmp_path / "hostile"
    path.write_bytes(archive(str(outside)))
    before = sorted(p.name for p in tmp_path.iterdir())
    start = time.perf_counter()
    run = doctor("check", "--root", str(path), "--format", "json")
    took = time.perf_counter() - start
    assert took < 30, case
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing unpacked anywhere
    assert "66:00.0" not in run.out and "s3cret" not in run.out  # nothing read from outside
    what, detail = outcome
    if what == "refused":
        assert run.code == 2, run.out
        assert run.err.startswith(f"pciback-doctor: --root {path}: ") and detail in run.err, run.err
        assert run.err.count("\n") == 1
        return
    assert run.code in (0, 1), run.err
    root = SnapshotRoot(path)
    if what == "reads":
        assert root.read_text(detail) is not None
    else:
        assert root.read_text(detail.lstrip("./")) is None
        assert detail in root.unreadable  # reported (PB110), not silently dropped
        assert any(f["id"] == "PB110" for f in run.json()["findings"])


def test_the_entry_count_limit_stops_the_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pciback_doctor.facts import snapshot

    monkeypatch.setattr(snapshot, "SNAPSHOT_ENTRIES", Limit("snapshot entry count", 1000, "", is_size=False))
    (tmp_path / "s.tar").write_bytes(_header("etc/x", 0) * 1001)
    with pytest.raises(SnapshotError, match=r"stopped at the snapshot entry count \(1,000\) limit"):
        SnapshotRoot(tmp_path / "s.tar")


def test_a_big_member_is_streamed_not_held(tmp_path: Path) -> None:
    payload = os.urandom(1 << 20) * 20  # 20 MiB: over what is held in memory
    path = tmp_path / "s.tar"
    path.write_bytes(_tar([_file("boot/initrd.img-6.1", payload), _file("etc/modprobe.d/x.conf")]))
    root = SnapshotRoot(path)
    assert not root._held.keys() - {1}  # only the small member is held
    stream, size = root.open_file("boot/initrd.img-6.1")
    with stream:
        assert size == len(payload)
        assert stream.read(10) == payload[:10]
        stream.seek(0)  # the initramfs reader's second pass re-reads from the start
        assert stream.read() == payload


def test_a_plain_tar_of_a_root_is_a_snapshot_too(tmp_path: Path) -> None:
    path = tmp_path / "root.tar"
    with tarfile.open(path, "w") as archive:
        archive.add(FIXTURES / "example", arcname=".")
    assert check_json("--root", str(path)) == check_json("--root", str(FIXTURES / "example"))


def test_snapshot_errors_are_one_line() -> None:
    with pytest.raises(SnapshotError, match="not a directory, and not a tar archive"):
        SnapshotRoot(COLLECTOR)


def test_a_module_tree_without_modules_dep_is_walked_the_same(tmp_path: Path) -> None:
    root = copy_fixture("example", tmp_path)
    tree = root / "lib/modules/6.1.0-56-xendom0"
    (tree / "modules.dep").unlink()
    for rel in ("kernel/drivers/xen/xen-pciback/xen-pciback.ko", "kernel/drivers/net/e1000e/e1000e.ko.xz"):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(b"\x7fELF not really a module")
    snapshot = collect(root, tmp_path / "s.tgz", "busybox")
    files = manifest(snapshot)["files"]
    assert (
        files["lib/modules/6.1.0-56-xendom0/kernel/drivers/xen/xen-pciback/xen-pciback.ko"]["status"]
        == "read"
    )
    assert files["lib/modules/6.1.0-56-xendom0/kernel/drivers/net/e1000e/e1000e.ko.xz"]["status"] == "skipped"
    live = check_json("--root", str(root))
    assert "xen-pciback.ko" in json.dumps(live)  # the walk found the backend (and could not load it)
    assert check_json("--root", str(snapshot)) == live


def _parity_tree(root: Path) -> None:
    (root / "usr/lib/modules/6.1/kernel").mkdir(parents=True)
    (root / "usr/lib/modules/6.1/modules.dep").write_text("kernel/a.ko:\n")
    (root / "usr/lib/modules/6.1/kernel/a.ko").write_bytes(b"\x7fELF" + bytes(60))
    os.symlink("/usr/lib", root / "lib")  # merged /usr, absolute: resolves inside the root
    (root / "etc/xen/auto").mkdir(parents=True)
    (root / "etc/xen/vm.cfg").write_text('pci = ["05:00.0"]\n')
    os.symlink("../vm.cfg", root / "etc/xen/auto/vm.cfg")
    os.symlink("../../../../../etc", root / "etc/xen/up")  # `..` stops at the root
    os.symlink("loop2", root / "etc/loop1")
    os.symlink("loop1", root / "etc/loop2")
    os.symlink("/nowhere", root / "etc/dangling")
    os.symlink("/usr/lib/modules", root / "etc/xen/mods")  # a link to a directory in a walked tree
    os.mkfifo(root / "etc/fifo")
    (root / "etc/empty").mkdir()
    os.link(root / "etc/xen/vm.cfg", root / "etc/xen/hard.cfg")  # tar writes a hard link member


PARITY_PATHS = [
    "lib/modules/6.1/modules.dep", "lib/modules", "lib", "etc/xen/auto/vm.cfg", "etc/xen/up/xen/vm.cfg",
    "etc/xen/up/xen/up/xen", "etc/loop1", "etc/dangling", "etc/fifo", "etc/empty", "etc", "",
    "../../etc/xen/vm.cfg", "/etc/xen/vm.cfg", "etc/xen/vm.cfg/x", "usr/lib/modules/6.1/kernel/a.ko",
    "etc/xen/mods/6.1/modules.dep", "nothing/here", "etc/xen/hard.cfg",
]  # fmt: skip


@pytest.mark.parametrize("rel", PARITY_PATHS)
def test_snapshot_root_api_matches_the_directory_root(rel: str, tmp_path: Path) -> None:
    from pciback_doctor.facts.root import Root

    tree = tmp_path / "root"
    tree.mkdir()
    _parity_tree(tree)
    whole = tmp_path / "whole.tar"
    with tarfile.open(whole, "w") as archive:
        archive.add(tree, arcname=".")
    direct, packed = Root(tree), SnapshotRoot(whole)

    def answers(root: Root) -> tuple[Any, ...]:
        return (
            root.locate(rel),
            root.exists(rel),
            root.is_dir(rel),
            root.listdir(rel),
            root.readlink(rel),
            root.read_bytes(rel),
            root.probe(rel),
            sorted(root.files_under(rel)) if root.is_dir(rel) else None,
        )

    assert answers(packed) == answers(direct)
    assert packed.unreadable == direct.unreadable  # the FIFO: "a FIFO, not a regular file"


@pytest.fixture
def request_cleanup() -> Any:
    made: list[Path] = []
    yield made
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def test_permission_denied_on_the_host_is_the_same_finding_from_the_snapshot(
    request_cleanup: list[Path],
) -> None:
    """The collector and the doctor run as `nobody` on a root with a 0600 grub.cfg and a 0700
    directory of BLS entries: both say "Permission denied" for the same paths (PB110)."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run as another user")  # FIFO/limit cases run everywhere
    as_nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    base = Path(tempfile.mkdtemp(prefix="pciback-doctor-"))  # pytest's tmp_path is root's alone (0700)
    request_cleanup.append(base)
    base.chmod(0o755)
    root = copy_fixture("boot-fedora-bls", base)
    (root / "boot/grub2/grub.cfg").chmod(0o600)
    (root / "boot/loader/entries").chmod(0o700)
    out = base / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    snapshot = out / "s.tgz"
    subprocess.run(
        [*as_nobody, "dash", str(COLLECTOR), "--root", str(root), "--output", str(snapshot)],
        check=True,
        env={"PATH": os.environ["PATH"], "TMPDIR": str(out)},
    )

    def check(where: Path) -> dict[str, Any]:
        run = subprocess.run(
            [
                *as_nobody,
                sys.executable,
                "-m",
                "pciback_doctor",
                "check",
                "--root",
                str(where),
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode in (0, 1), run.stderr
        found: dict[str, Any] = json.loads(run.stdout)
        found["target"].pop("root")
        return found

    live = check(root)
    denied = {f["message"] for f in live["findings"] if f["id"] == "PB110"}
    assert denied == {"boot/grub2/grub.cfg: Permission denied", "boot/loader/entries: Permission denied"}
    assert check(snapshot) == live


def test_a_fifo_as_the_root_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    run = doctor("check", "--root", str(tmp_path / "fifo"))
    assert run.code == 2 and "not a snapshot: a FIFO, not a regular file" in run.err


_SEED_ARCHIVE = _tar(
    [
        _file("etc/modprobe.d/x.conf"),
        _link("etc/modprobe.d/y.conf", "x.conf"),
        _link("lib", "/usr/lib"),
        _file("usr/lib/modules/6.1/modules.dep", b"kernel/a.ko:\n"),
        _file("p" * 150 + "/long-name", b"gnu long name\n"),
    ]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cut=st.integers(min_value=0, max_value=len(_SEED_ARCHIVE)),
    flips=st.lists(st.tuples(st.integers(0, len(_SEED_ARCHIVE) - 1), st.integers(0, 255)), max_size=8),
)
def test_damaged_archives_give_a_snapshot_or_one_error(
    cut: int, flips: list[tuple[int, int]], tmp_path: Path
) -> None:
    data = bytearray(_SEED_ARCHIVE[:cut])
    for at, value in flips:
        if at < len(data):
            data[at] = value
    path = tmp_path / "damaged.tar"
    path.write_bytes(bytes(data))
    try:
        root = SnapshotRoot(path)
    except SnapshotError as exc:
        assert "\n" not in str(exc)
        return
    for rel in ("etc/modprobe.d/x.conf", "etc/modprobe.d/y.conf", "lib/modules/6.1/modules.dep", "etc"):
        root.read_bytes(rel)
        root.listdir(rel)
        root.probe(rel)
    assert list(root.files_under("")) is not None


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_names_with_odd_bytes_come_through_the_snapshot(shell: str, tmp_path: Path) -> None:
    """A modprobe.d name with a non-UTF-8 byte, quotes and a tab: busybox's ls would print '?'."""
    root = copy_fixture("classic-pciback-hide", tmp_path)
    name = b'caf\xe9 "q"\tx.conf'
    (root / "etc/modprobe.d").joinpath(os.fsdecode(name)).write_text(
        "options xen-pciback hide=(0000:05:00.0)\n"
    )
    snapshot = collect(root, tmp_path / "s.tgz", shell)
    live = check_json("--root", str(root))
    assert "caf" in json.dumps(live)
    assert check_json("--root", str(snapshot)) == live


def test_xl_configs_and_the_pv_kernels_they_name_are_taken(tmp_path: Path) -> None:
    root = copy_fixture("example", tmp_path)
    (root / "etc/xen/my vm.cfg").write_text(
        'name="a"\ntype="pv"\nkernel="/boot/vmlinuz-domu"\npci=["0000:01:00.0"]\n'
    )
    (root / "etc/xen/auto").mkdir()
    os.symlink("../my vm.cfg", root / "etc/xen/auto/my vm.cfg")
    (root / "boot/vmlinuz-domu").write_text("CONFIG_XEN_PCIDEV_FRONTEND=y\n")
    (root / "etc/xen/scripts").mkdir()
    (root / "etc/xen/scripts/block").write_text("#!/bin/sh\n")
    snapshot = collect(root, tmp_path / "s.tgz", "busybox")
    with tarfile.open(snapshot) as archive:
        names = set(archive.getnames())
    assert {"etc/xen/my vm.cfg", "etc/xen/auto/my vm.cfg", "boot/vmlinuz-domu"} <= names
    assert "etc/xen/scripts/block" not in names  # the doctor does not read it
    live = check_json("--root", str(root))
    assert "boot/vmlinuz-domu" in json.dumps(live)
    assert check_json("--root", str(snapshot)) == live


def test_the_collector_changes_nothing_in_the_root_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    root = copy_fixture("boot-fedora-bls", tmp_path)

    def state() -> list[tuple[str, int, int, float]]:
        return sorted(
            (str(p.relative_to(root)), p.lstat().st_mode, p.lstat().st_size, p.lstat().st_mtime)
            for p in [root, *root.rglob("*")]
        )

    before = state()
    work = tmp_path / "tmp"
    work.mkdir()
    out = work / "s.tgz"
    subprocess.run(
        ["dash", str(COLLECTOR), "--root", str(root), "--output", str(out)],
        check=True,
        env={"PATH": os.environ["PATH"], "TMPDIR": str(work)},
    )
    assert state() == before
    assert [p.name for p in work.iterdir()] == ["s.tgz"]  # the staging directory is gone


def test_a_stopped_collector_leaves_neither_staging_nor_a_partial_snapshot(tmp_path: Path) -> None:
    if shutil.which("xz") is None:
        unavailable("xz is not installed")
    root = copy_fixture("example", tmp_path)
    (root / "boot/initrd.img-6.1.0-56-xendom0").write_bytes(os.urandom(8 << 20))  # xz takes seconds
    work = tmp_path / "tmp"
    work.mkdir()
    out = work / "s.txz"
    proc = subprocess.Popen(
        ["dash", str(COLLECTOR), "--root", str(root), "--output", str(out), "--compress", "xz"],
        env={"PATH": os.environ["PATH"], "TMPDIR": str(work)},
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and out.stat().st_size > 0):
        time.sleep(0.05)  # the archive is being written
    proc.terminate()
    assert proc.wait(timeout=60) != 0
    assert list(work.iterdir()) == []
