"""The Ansible role for real: ansible-core (PyPI) drives hosts over SSH to an openssh-server this test
starts on a free port of 127.0.0.1 (its own host key, user key and config; nothing of the system's).
Each inventory alias is 127.0.0.1 with a different fixture copy as its `pciback_doctor_root`. The
fleet JSON must hold, per host, exactly what `check --format json` says on that root."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import FIXTURES, copy_fixture, doctor, unavailable

pytestmark = pytest.mark.realworld

ROLE_DIR = Path(__file__).resolve().parents[2] / "integrations" / "ansible"
BIN = Path(sys.executable).parent
# host alias -> fixture, and the status the fleet must give it
HOSTS = {
    "xen-example": ("example", "fail"),  # not-claimed: xhci_pci keeps the USB controller
    "xen-malformed": ("malformed-hide", "fail"),  # not-claimed: a comma breaks hide
    "xen-builtin": ("builtin-cmdline-hide", "pass"),  # claimed at fs_initcall
    "xen-module": ("module-modprobe-options", "pass"),  # unknown: no initramfs
    "xen-grub": ("boot-debian-grub-xen", "pass"),
    "xen-gone": (None, "error"),  # its root does not exist: check exits 2
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Sshd:
    port: int
    key: Path
    user: str


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    binary = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    if binary is None or shutil.which("ansible-playbook", path=str(BIN)) is None:
        unavailable("needs Debian's openssh-server and ansible-core (pip install -e '.[test]')")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    shutil.copy(d / "user_key.pub", d / "authorized_keys")
    port = _free_port()
    config = d / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        "Subsystem sftp internal-sftp\n"
    )
    if os.geteuid() == 0:  # sshd run as root insists on its privilege separation directory
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    with open(d / "sshd.log", "wb") as log:
        proc = subprocess.Popen([binary, "-D", "-e", "-f", str(config)], stderr=log, stdin=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError((d / "sshd.log").read_text()) from None
                time.sleep(0.1)
        yield Sshd(port, d / "user_key", getpass.getuser())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _tree_digest(root: Path) -> str:
    """Every name, mode and content under root: the hosts must be left as they were."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        h.update(f"{path.relative_to(root)}\0{st.st_mode}\0".encode())
        if path.is_file() and not path.is_symlink():
            h.update(path.read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Play:
    code: int
    output: str
    results: Path
    roots: dict[str, Path]
    host_tmp: Path
    where: Path

    def fleet(self) -> dict[str, Any]:
        return json.loads((self.results / "fleet.json").read_text())  # type: ignore[no-any-return]


def play(
    sshd: Sshd, where: Path, mode: str, *extra: str, hosts: dict[str, tuple[str | None, str]] = HOSTS
) -> Play:
    roots: dict[str, Path] = {}
    host_tmp = where / "host-tmp"  # the hosts' temporary space: empty again after the play
    host_tmp.mkdir(parents=True, exist_ok=True)
    lines = ["[dom0s]"]
    for alias, (fixture, _) in hosts.items():
        root = copy_fixture(fixture, where / "roots" / alias) if fixture else where / "roots" / alias / "none"
        if fixture:
            roots[alias] = root
        # a host without a fixture and named `-down` listens nowhere: Ansible finds it unreachable
        port = f" ansible_port={_free_port()}" if alias.endswith("-down") else ""
        lines.append(f"{alias} ansible_host=127.0.0.1 pciback_doctor_root={root}{port}")
    lines += [
        "[dom0s:vars]",
        f"ansible_port={sshd.port}",
        f"ansible_user={sshd.user}",
        f"ansible_ssh_private_key_file={sshd.key}",
        "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'",
        f"ansible_python_interpreter={sys.executable}",
        f"ansible_remote_tmp={host_tmp}/ansible",
        f"pciback_doctor_mode={mode}",
        f"pciback_doctor_command={BIN / 'pciback-doctor'}",
        f"pciback_doctor_controller_command={BIN / 'pciback-doctor'}",
        f"pciback_doctor_tmp_parent={host_tmp}",
        f"pciback_doctor_results_dir={where / 'results'}",
    ]
    inventory = where / "inventory.ini"
    inventory.write_text("\n".join(lines) + "\n")
    playbook = where / "site.yml"
    # the example playbook, without become: the test's ssh user reads its own fixture copies
    playbook.write_text((ROLE_DIR / "site.yml").read_text().replace("  become: true", "  become: false"))
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(ROLE_DIR / "roles"),
        "ANSIBLE_HOME": str(where / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(where / "ansible-local"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(where / "cp"),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }
    run = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=where,
    )
    return Play(run.returncode, run.stdout + run.stderr, where / "results", roots, host_tmp, where)


def assert_fleet_is_each_hosts_check(p: Play, mode: str) -> None:
    fleet = p.fleet()
    assert fleet["schema"] == "pciback-doctor-fleet/1"
    hosts = {h["name"]: h for h in fleet["hosts"]}
    assert set(hosts) == set(HOSTS), p.output[-3000:]
    for alias, (_, status) in HOSTS.items():
        assert hosts[alias]["status"] == status, (alias, hosts[alias]["error"], p.output[-3000:])
        if alias in p.roots:
            direct = doctor("check", "--root", str(p.roots[alias]), "--format", "json").json()
            report = hosts[alias]["report"]
            if mode == "collector":  # the snapshot names itself as the root, on the controller
                report = {**report, "target": {**report["target"], "root": direct["target"]["root"]}}
            assert report == direct, alias
    # the host's own one-line error: the doctor's (or the collector's), naming the root it could not read
    assert f"--root {p.where / 'roots' / 'xen-gone' / 'none'}: " in hosts["xen-gone"]["error"], p.output[
        -3000:
    ]
    assert fleet["exit_code"] == 1


def test_doctor_mode_brings_every_hosts_report_back_and_fails_the_play(sshd: Sshd, tmp_path: Path) -> None:
    before = {alias: _tree_digest(FIXTURES / fixture) for alias, (fixture, _) in HOSTS.items() if fixture}
    p = play(sshd, tmp_path, "doctor")
    assert p.code == 2, p.output[-3000:]  # a failed task: the fleet loses devices
    assert "some hosts would lose a passthrough device" in p.output
    assert_fleet_is_each_hosts_check(p, "doctor")
    html = (p.results / "fleet.html").read_text()
    assert all(f">{alias}</a>" in html for alias in HOSTS)
    # read-only: no step reports a change, the roots are untouched, nothing is left in temp space
    assert "changed=0" in p.output and "changed=1" not in p.output
    for alias, root in p.roots.items():
        assert _tree_digest(root) == before[alias], alias
    assert [x for x in p.host_tmp.rglob("*") if x.is_file()] == []


def test_doctor_mode_under_check_gives_the_same_report(sshd: Sshd, tmp_path: Path) -> None:
    p = play(sshd, tmp_path, "doctor", "--check")
    assert p.code == 2, p.output[-3000:]
    assert_fleet_is_each_hosts_check(p, "doctor")
    assert "changed=0" in p.output and "changed=1" not in p.output


def test_a_fleet_that_keeps_every_device_passes(sshd: Sshd, tmp_path: Path) -> None:
    p = play(sshd, tmp_path, "doctor", hosts={a: v for a, v in HOSTS.items() if v[1] == "pass"})
    assert p.code == 0, p.output[-3000:]
    assert {h["status"] for h in p.fleet()["hosts"]} == {"pass"} and p.fleet()["exit_code"] == 0


def test_collector_mode_fetches_snapshots_and_analyses_them_centrally(sshd: Sshd, tmp_path: Path) -> None:
    if doctor("collector").code != 0:  # the collector lands with issue 15's snapshot half
        pytest.skip("this build has no `pciback-doctor collector` yet")
    p = play(sshd, tmp_path, "collector")
    assert p.code == 2, p.output[-3000:]
    assert_fleet_is_each_hosts_check(p, "collector")
    assert sorted(x.name for x in p.results.glob("*.tar.gz")) == sorted(f"{a}.tar.gz" for a in p.roots)
    assert "changed=0" in p.output and "changed=1" not in p.output
    assert [x for x in p.host_tmp.rglob("*") if x.is_file()] == []


def test_an_unreachable_host_is_a_row_of_the_report(sshd: Sshd, tmp_path: Path) -> None:
    hosts = {"xen-builtin": HOSTS["xen-builtin"], "xen-down": (None, "error")}
    p = play(sshd, tmp_path, "doctor", hosts=hosts)
    assert p.code == 4, p.output[-3000:]  # ansible-playbook's status for an unreachable host
    rows = {h["name"]: h for h in p.fleet()["hosts"]}
    assert rows["xen-builtin"]["status"] == "pass"
    assert rows["xen-down"]["status"] == "error" and rows["xen-down"]["input"] == "none"
    assert rows["xen-down"]["error"] == "unreachable, or failed before pciback-doctor ran"
