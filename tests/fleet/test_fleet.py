"""`pciback-doctor fleet`: one report for many hosts, each host exactly what `check --format json`
says on its root; a host that cannot be analysed is a row; exit 1 when any host would lose a device."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource

from helpers import FIXTURES, doctor
from pciback_doctor import fleet
from pciback_doctor.fleet import host_name
from pciback_doctor.fleet.document import DocumentError, read_document

# five hosts with different outcomes, and what the fleet must say of each
HOSTS = {
    "example": "fail",  # the USB controller is hidden the wiki's way: xhci_pci keeps it
    "malformed-hide": "fail",  # a comma in hide: the built-in backend never registers
    "builtin-cmdline-hide": "pass",  # every device claimed at fs_initcall
    "module-modprobe-options": "pass",  # unknown (no initramfs), no error: not a loss
    "classic-pciback-hide": "fail",  # pciback.hide= on a xen_pciback kernel
}


def schema(name: str) -> dict[str, Any]:
    text = resources.files("pciback_doctor").joinpath(f"schema/{name}.schema.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def validate_fleet(document: dict[str, Any]) -> None:
    """Against the fleet schema, each host's report against the package's pciback-doctor/1 schema."""
    single = schema("pciback-doctor-1")
    registry: Registry[Any] = Registry().with_resource(single["$id"], Resource.from_contents(single))
    fleet = schema("pciback-doctor-fleet-1")
    cls = jsonschema.validators.validator_for(fleet)
    cls.check_schema(fleet)
    cls(fleet, registry=registry, format_checker=cls.FORMAT_CHECKER).validate(document)


def check_json(root: Path) -> dict[str, Any]:
    run = doctor("check", "--root", str(root), "--format", "json")
    assert run.code in (0, 1), run.err
    return run.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def fleet_run() -> tuple[int, dict[str, Any]]:
    roots = [str(FIXTURES / name) for name in HOSTS]
    run = doctor("fleet", *roots, "/nonexistent/ghost", "--format", "json", "--jobs", "2")
    return run.code, run.json()


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["name"]: h for h in document["hosts"]}


def test_fleet_json_validates_and_each_host_is_its_check_json(fleet_run: tuple[int, dict[str, Any]]) -> None:
    code, document = fleet_run
    validate_fleet(document)
    hosts = by_name(document)
    assert list(hosts) == [*HOSTS, "ghost"]  # the command line's order
    for name, status in HOSTS.items():
        assert hosts[name]["status"] == status, name
        assert hosts[name]["report"] == check_json(FIXTURES / name), name
    assert code == 1 and document["exit_code"] == 1


def test_a_host_that_cannot_be_analysed_is_a_row_and_fails_the_fleet(
    fleet_run: tuple[int, dict[str, Any]],
) -> None:
    ghost = by_name(fleet_run[1])["ghost"]
    assert ghost["status"] == "error" and ghost["report"] is None
    # check's own one-line error, as `check --root` prints it
    said = doctor("check", "--root", "/nonexistent/ghost")
    assert said.code == 2 and ghost["error"] == said.err.removeprefix("pciback-doctor: ").strip()
    assert fleet_run[1]["summary"] == {
        "hosts": 6,
        "pass": 2,
        "fail": 3,
        "error": 1,
        "devices": {"claimed": 6, "not-claimed": 4, "unknown": 1},
    }


def test_lost_devices_and_failing_findings_name_what_the_host_loses(
    fleet_run: tuple[int, dict[str, Any]],
) -> None:
    hosts = by_name(fleet_run[1])
    assert hosts["example"]["lost_devices"] == ["0000:00:14.0"]
    assert hosts["malformed-hide"]["lost_devices"] == ["0000:01:00.0", "0000:05:00.0"]
    assert "PB201" in hosts["malformed-hide"]["failing_findings"]
    assert hosts["builtin-cmdline-hide"]["lost_devices"] == []


def test_every_host_keeping_its_devices_exits_0() -> None:
    run = doctor("fleet", str(FIXTURES / "builtin-cmdline-hide"), str(FIXTURES / "module-modprobe-options"))
    assert run.code == 0, run.out
    assert "2 hosts: 0 would lose a device, 0 could not be analysed, 2 pass; exit status 0" in run.out


def test_fail_on_is_the_fleets_own() -> None:
    # builtin-cmdline-hide has a warning (PB401) but claims every device
    root = str(FIXTURES / "builtin-cmdline-hide")
    assert doctor("fleet", root, "--fail-on", "warning").code == 1
    # a lost device fails the host even when no finding may
    run = doctor("fleet", str(FIXTURES / "example"), "--fail-on", "never", "--format", "json")
    host = run.json()["hosts"][0]
    assert run.code == 1 and host["failing_findings"] == [] and host["lost_devices"] == ["0000:00:14.0"]


def test_from_json_gives_the_same_hosts_as_the_roots(tmp_path: Path) -> None:
    files = []
    for name in HOSTS:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(check_json(FIXTURES / name)))
        files.append(str(path))
    run = doctor("fleet", "--from-json", *files, "--format", "json")
    from_roots = doctor("fleet", *(str(FIXTURES / n) for n in HOSTS), "--format", "json").json()
    assert run.code == 1
    got = by_name(run.json())
    for name, host in by_name(from_roots).items():
        assert got[name]["input"] == "json" and host["input"] == "root"
        for key in ("status", "lost_devices", "failing_findings", "devices", "report"):
            assert got[name][key] == host[key], (name, key)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe{", "not JSON"),
        (b"[1, 2]", "not a pciback-doctor/1 document: the JSON is not an object"),
        (b'{"schema": "sarif"}', "not a pciback-doctor/1 document: its schema is 'sarif'"),
        (b'{"schema": "pciback-doctor/1"}', "$.target: missing or of the wrong type"),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_a_document_that_is_not_one_is_an_error_row(tmp_path: Path, content: bytes, error: str) -> None:
    bad = tmp_path / "h1.json"
    bad.write_bytes(content)
    good = tmp_path / "h2.json"
    good.write_text(json.dumps(check_json(FIXTURES / "builtin-cmdline-hide")))
    run = doctor("fleet", "--from-json", str(bad), str(good), "--format", "json")
    assert run.code == 1 and run.err == ""
    hosts = by_name(run.json())
    assert hosts["h1"]["status"] == "error" and error in hosts["h1"]["error"]
    assert hosts["h2"]["status"] == "pass"


def test_a_missing_document_and_a_host_error_are_rows(tmp_path: Path) -> None:
    run = doctor(
        "fleet",
        "--from-json",
        str(tmp_path / "gone.json"),
        "--host-error",
        "db7=UNREACHABLE: ssh: connect to host db7 port 22: No route to host",
        "--format",
        "json",
    )
    hosts = by_name(run.json())
    assert run.code == 1
    assert hosts["gone"]["error"] == f"{tmp_path}/gone.json: No such file or directory"
    assert hosts["db7"]["input"] == "none" and hosts["db7"]["error"].startswith("UNREACHABLE: ssh")
    validate_fleet(run.json())


def test_document_fields_of_the_wrong_type_are_named() -> None:
    doc = check_json(FIXTURES / "example")
    doc["devices"][0]["prediction"] = "stolen"
    with pytest.raises(DocumentError, match=r"\$\.devices\[0\]: unknown prediction"):
        read_document(json.dumps(doc).encode())
    doc = check_json(FIXTURES / "example")
    doc["findings"][0]["severity"] = "fatal"
    with pytest.raises(DocumentError, match=r"\$\.findings\[0\]\.severity"):
        read_document(json.dumps(doc).encode())
    doc = check_json(FIXTURES / "example")
    doc["exit_code"] = True
    with pytest.raises(DocumentError, match=r"\$\.exit_code"):
        read_document(json.dumps(doc).encode())


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=300)
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    ).map(lambda v: json.dumps({"schema": "pciback-doctor/1", "target": v, "devices": v}).encode())
)
def test_the_document_reader_only_ever_raises_document_error(data: bytes) -> None:
    try:
        read_document(data)
    except DocumentError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("snapshots/host7.tar.zst", "host7"),
        ("host7.tar.gz", "host7"),
        ("db1.example.org.tgz", "db1.example.org"),
        ("out/xen-03.json", "xen-03"),
        ("/srv/roots/xen-04/", "xen-04"),
        (".tar.gz", ".tar.gz"),
        ("/", "/"),
    ],
)
def test_host_names_come_from_the_file_name(path: str, name: str) -> None:
    assert host_name(path) == name


def test_name_gives_the_host_its_name() -> None:
    root = str(FIXTURES / "example")
    run = doctor("fleet", root, "--name", f"{root}=xen-07.example.org", "--format", "json")
    assert [h["name"] for h in run.json()["hosts"]] == ["xen-07.example.org"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no host"),
        (["EX", "EX"], "two hosts are named example"),
        (["EX", "--name", "other=x"], "--name other=x: other is not one of the ROOTs"),
        (["EX", "--name", "EX"], "expected ROOT=NAME"),
        (["EX", "--output", "fleet.pdf"], "--output fleet.pdf: name it .html, .json or .txt"),
        (["EX", "--jobs", "0"], "not a positive number: 0"),
        (["EX", "--host-error", "nobody"], "expected NAME=WHY"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    root = str(FIXTURES / "example")
    run = doctor("fleet", *[root if a == "EX" else a.replace("EX", root) for a in args])
    assert run.code == 2 and run.out == ""
    assert message in run.err and run.err.count("\n") == 1


def test_outputs_by_suffix_and_text_on_stdout(tmp_path: Path) -> None:
    html_file, json_file = tmp_path / "fleet.html", tmp_path / "fleet.json"
    roots = [str(FIXTURES / n) for n in ("example", "builtin-cmdline-hide")]
    run = doctor("fleet", *roots, "--output", str(html_file), "--output", str(json_file))
    assert run.code == 1
    assert "example: FAIL: loses 0000:00:14.0" in run.out
    assert json.loads(json_file.read_text())["schema"] == "pciback-doctor-fleet/1"
    assert html_file.read_text().startswith("<!DOCTYPE html>")


def test_html_shows_every_host_device_and_prediction(tmp_path: Path) -> None:
    roots = [str(FIXTURES / n) for n in HOSTS]
    page = doctor("fleet", *roots, "/nonexistent/ghost", "--format", "html").out
    for name in [*HOSTS, "ghost"]:
        assert f">{name}</a>" in page
    assert page.count("✘ NOT CLAIMED") == 4 and page.count("? UNKNOWN") == 1
    assert "--root /nonexistent/ghost: " in page
    assert "PB201" in page and "Do not reboot these hosts yet" in page
    # the device's row names the findings about it
    row = next(r for r in re.findall(r"<tr>.*?</tr>", page) if "0000:00:14.0" in r)
    assert "NOT CLAIMED" in row and "<code>PB308</code>" in row
    # self-contained: nothing fetched, nothing run
    assert not re.search(r"<script|<link|src=|url\(|@import", page)


def test_html_shows_hostile_text_never_runs_it(tmp_path: Path) -> None:
    doc = check_json(FIXTURES / "example")
    doc["devices"][0]["reason"] = "<img src=x onerror=alert(1)>\x1b[31m\u202e"
    doc["findings"][0]["title"] = "</td></table><script>alert(2)</script>"
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(doc))
    page = doctor("fleet", "--from-json", str(path), "--name", f"{path}=<b>x</b>", "--format", "html").out
    assert "<img" not in page and "<script>" not in page and "<b>x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;\\x1b[31m\\u202e" in page
    assert "&lt;/td&gt;&lt;/table&gt;&lt;script&gt;" in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "\x1b" not in page and "\u202e" not in page


def test_parallel_and_serial_agree() -> None:
    roots = [str(FIXTURES / n) for n in HOSTS]
    serial = doctor("fleet", *roots, "--format", "json", "--jobs", "1")
    parallel = doctor("fleet", *roots, "--format", "json", "--jobs", "4")
    assert serial.json() == parallel.json()


_check_document = fleet.check_document


def _dies_on_malformed(root: str) -> tuple[str | None, str | None]:
    """A worker that the kernel kills (OOM) on one host; runs in the pool's forked processes."""
    if root.endswith("malformed-hide"):
        os._exit(137)
    return _check_document(root)


@pytest.mark.skipif(
    multiprocessing.get_start_method() != "fork", reason="the patch reaches forked workers only"
)
def test_a_worker_that_dies_loses_only_its_own_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet, "check_document", _dies_on_malformed)
    roots = [str(FIXTURES / n) for n in HOSTS]
    run = doctor("fleet", *roots, "--format", "json", "--jobs", "2")
    hosts = by_name(run.json())
    assert hosts["malformed-hide"]["status"] == "error"
    assert "died" in hosts["malformed-hide"]["error"]
    assert all(hosts[n]["status"] == s for n, s in HOSTS.items() if n != "malformed-hide")
