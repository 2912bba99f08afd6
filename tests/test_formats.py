"""The machine formats (SARIF, JUnit, GitHub annotations, Markdown) on reports of the fixture roots."""

from __future__ import annotations

import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from importlib import resources
from typing import Any

import jsonschema
import pytest

from helpers import FIXTURES, doctor
from pciback_doctor.boot.analysis import analyse
from pciback_doctor.checks import Check, all_checks, run_checks
from pciback_doctor.facts.system import Options, collect
from pciback_doctor.fixes import EDITABLE
from pciback_doctor.model import Evidence, FileChange, Finding, Fix, Report, Severity
from pciback_doctor.outcome import build_report
from pciback_doctor.render import github, junit, markdown, sarif

ROLES = frozenset({"dom0", "domu"})
IMAGE_PATH = "boot/initrd.img-6.1.0-56-amd64!etc/modprobe.d/pciback.conf"


def report_of(fixture: str) -> Report:
    """What `pciback-doctor --root fixtures/FIXTURE` reports, as the CLI builds it."""
    analysis = analyse(collect(Options(root=str(FIXTURES / fixture)), EDITABLE))
    return build_report(analysis, run_checks(analysis, ROLES))


def catalogue() -> dict[str, Check]:
    return {id: c for id, c in all_checks().items() if c.role in ROLES}


def one(report: Report, id: str) -> Finding:
    (found,) = [f for f in report.findings if f.id == id]
    return found


def with_finding(report: Report, id: str, **changes: Any) -> Report:
    """The report with finding `id` changed (a waiver, evidence inside an image, a tricky message)."""
    findings = tuple(dataclasses.replace(f, **changes) if f.id == id else f for f in report.findings)
    return dataclasses.replace(report, findings=findings)


# SARIF


def sarif_schema() -> dict[str, Any]:
    text = resources.files("pciback_doctor").joinpath("schema/sarif-2.1.0.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def valid_sarif(report: Report) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(sarif.render(report, catalogue()))
    schema = sarif_schema()
    validator = jsonschema.validators.validator_for(schema)
    validator(schema, format_checker=validator.FORMAT_CHECKER).validate(document)
    return document


def results_of(document: dict[str, Any], rule_id: str) -> list[dict[str, Any]]:
    return [r for r in document["runs"][0]["results"] if r["ruleId"] == rule_id]


def test_vendored_sarif_schema_is_the_official_one() -> None:
    schema = sarif_schema()
    assert (
        schema["id"]
        == "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
    )
    jsonschema.validators.validator_for(schema).check_schema(schema)
    # the schema is strict enough to catch a broken document
    bad = json.loads(sarif.render(report_of("classic-pciback-hide"), catalogue()))
    bad["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


@pytest.mark.parametrize("fixture", ["classic-pciback-hide", "example", "malformed-hide"])
def test_sarif_validates_against_the_official_schema(fixture: str) -> None:
    report = report_of(fixture)
    document = valid_sarif(report)
    run = document["runs"][0]
    assert run["tool"]["driver"]["name"] == "pciback-doctor"
    assert len(run["results"]) == len(report.findings)
    rules = run["tool"]["driver"]["rules"]
    assert {r["id"] for r in rules} >= set(catalogue())
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]


def test_sarif_points_pb304_at_the_install_line() -> None:
    document = valid_sarif(report_of("classic-pciback-hide"))
    (result,) = results_of(document, "PB304")
    assert result["level"] == "error"
    assert result["properties"]["device"] == "0000:05:00.0"
    (location,) = result["locations"]
    physical = location["physicalLocation"]
    assert physical["artifactLocation"] == {"uri": "etc/modprobe.d/pciback.conf", "uriBaseId": "ROOT"}
    assert physical["region"]["startLine"] == 3
    root = document["runs"][0]["originalUriBaseIds"]["ROOT"]["uri"]
    assert root == (FIXTURES / "classic-pciback-hide").as_uri() + "/"


def test_sarif_rules_carry_the_catalogue() -> None:
    document = valid_sarif(report_of("classic-pciback-hide"))
    rules = {r["id"]: r for r in document["runs"][0]["tool"]["driver"]["rules"]}
    pb304 = catalogue()["PB304"]
    assert rules["PB304"]["shortDescription"]["text"] == pb304.title
    assert rules["PB304"]["fullDescription"]["text"] == pb304.explanation
    assert rules["PB304"]["help"]["text"] == pb304.explanation
    assert rules["PB304"]["defaultConfiguration"]["level"] == "error"
    assert rules["PB306"]["defaultConfiguration"]["level"] == "note"
    assert re.fullmatch(r"[A-Za-z0-9]+", rules["PB304"]["name"])


def test_sarif_line_unknown_means_no_region() -> None:
    document = valid_sarif(report_of("classic-pciback-hide"))
    cmdline = [
        loc["physicalLocation"]
        for r in results_of(document, "PB105")
        for loc in r["locations"]
        if loc["physicalLocation"]["artifactLocation"]["uri"] == "proc/cmdline"
    ]
    assert cmdline and all("region" not in p for p in cmdline)


def test_sarif_file_inside_an_initramfs_is_located_at_the_image() -> None:
    report = with_finding(
        report_of("classic-pciback-hide"), "PB304", evidence=(Evidence(IMAGE_PATH, 3, "install e1000e ..."),)
    )
    (result,) = results_of(valid_sarif(report), "PB304")
    (location,) = result["locations"]
    assert location["physicalLocation"]["artifactLocation"]["uri"] == "boot/initrd.img-6.1.0-56-amd64"
    assert "region" not in location["physicalLocation"]  # line 3 is of the inner file, not of the image
    assert location["logicalLocations"][0]["name"] == "etc/modprobe.d/pciback.conf:3"
    assert location["logicalLocations"][0]["fullyQualifiedName"] == IMAGE_PATH


def test_sarif_waived_finding_is_suppressed() -> None:
    report = with_finding(report_of("classic-pciback-hide"), "PB304", waiver="the e1000e rule is ours")
    (result,) = results_of(valid_sarif(report), "PB304")
    assert result["suppressions"] == [{"kind": "external", "justification": "the e1000e rule is ours"}]
    assert all("suppressions" not in r for r in results_of(valid_sarif(report), "PB302"))


# JUnit


def junit_of(report: Report) -> ET.Element:
    return ET.fromstring(junit.render(report, catalogue()))


def cases(root: ET.Element) -> list[ET.Element]:
    return root.findall("./testsuite/testcase")


@pytest.mark.parametrize("fixture", ["classic-pciback-hide", "example"])
def test_junit_failures_are_the_errors_and_warnings(fixture: str) -> None:
    report = report_of(fixture)
    json_findings = doctor("--root", str(FIXTURES / fixture), "--format", "json").json()["findings"]
    failing = sum(1 for f in json_findings if f["severity"] in ("error", "warning"))
    assert failing > 0
    root = junit_of(report)
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "pciback-doctor"
    assert int(suite.get("failures", "-1")) == failing == len(suite.findall("testcase/failure"))
    assert int(suite.get("tests", "-1")) == len(cases(root))
    assert int(root.get("failures", "-1")) == failing


def test_junit_failure_names_check_device_and_evidence() -> None:
    root = junit_of(report_of("classic-pciback-hide"))
    (case,) = [c for c in cases(root) if c.get("classname") == "PB304"]
    assert case.get("name") == "0000:05:00.0"
    failure = case.find("failure")
    assert failure is not None and failure.get("type") == "error"
    assert (
        failure.get("message")
        == "the install rule loads 'pciback', but no module of that name exists any more"
    )
    assert "at etc/modprobe.d/pciback.conf:3: install e1000e" in (failure.text or "")


def test_junit_every_check_that_ran_is_a_testcase() -> None:
    report = report_of("classic-pciback-hide")
    root = junit_of(report)
    names = [(c.get("classname"), c.get("name")) for c in cases(root)]
    assert len(names) == len(set(names))  # dashboards key testcases by classname and name
    assert {c for c, _ in names} == set(catalogue()) | {f.id for f in report.findings}
    (passed,) = [c for c in cases(root) if c.get("classname") == "PB101"]
    assert list(passed) == []  # no failure, no skipped: passed


def test_junit_info_is_output_not_failure() -> None:
    root = junit_of(report_of("example"))
    infos = [c for c in cases(root) if c.get("classname") == "PB306"]
    assert len(infos) == 4
    for case in infos:
        assert case.find("failure") is None
        assert "bound to" in (case.findtext("system-out") or "")


def test_junit_waived_is_skipped() -> None:
    report = with_finding(report_of("classic-pciback-hide"), "PB304", waiver="ours")
    root = junit_of(report)
    (case,) = [c for c in cases(root) if c.get("classname") == "PB304"]
    skipped = case.find("skipped")
    assert skipped is not None and skipped.get("message") == "waived: ours"
    assert case.find("failure") is None
    suite = root.find("testsuite")
    assert suite is not None and suite.get("skipped") == "1"


def test_junit_repeated_check_on_one_subject_gets_distinct_names() -> None:
    root = junit_of(report_of("classic-pciback-hide"))
    names = sorted(c.get("name") or "" for c in cases(root) if c.get("classname") == "PB105")
    assert names == ["system @ etc/modprobe.d/pciback.conf:2", "system @ proc/cmdline"]


# GitHub annotations


def test_github_escapes_exactly_like_the_toolkit() -> None:
    finding = Finding(
        "PB304",
        Severity.WARNING,
        "Broken: rule, really",
        "first line\r\nsecond, with: a colon at 100%",
        evidence=(Evidence("etc/modprobe.d/a,b:c.conf", 7, "x"),),
    )
    assert github.annotation(finding) == (
        "::warning file=etc/modprobe.d/a%2Cb%3Ac.conf,line=7,title=PB304 Broken%3A rule%2C really"
        "::first line%0D%0Asecond, with: a colon at 100%25%0Aat etc/modprobe.d/a,b:c.conf:7: x"
    )


def test_github_one_line_per_finding_on_the_fixture() -> None:
    report = report_of("classic-pciback-hide")
    lines = github.render(report).splitlines()
    assert len(lines) == len(report.findings)
    pb304 = [line for line in lines if "title=PB304 " in line]
    assert pb304 == [
        "::error file=etc/modprobe.d/pciback.conf,line=3,title=PB304 Broken install or softdep rule"
        "::the install rule loads 'pciback', but no module of that name exists any more"
        "%0Adevice 0000:05:00.0"
        "%0Aat etc/modprobe.d/pciback.conf:3: install e1000e /sbin/modprobe pciback ; "
        "/sbin/modprobe --first-time --ignore-install e1000e"
    ]
    (pb302,) = [line for line in lines if "title=PB302 " in line]
    assert pb302.startswith("::error title=PB302 ")  # no evidence: no file, no line
    (cmdline,) = [line for line in lines if "file=proc/cmdline" in line and "PB105" in line]
    assert ",line=" not in cmdline.split("::")[1]  # the line is unknown
    assert all(line.startswith("::notice ") for line in lines if "title=PB306 " in line)
    assert all(line.startswith("::warning ") for line in lines if "title=PB401 " in line)


def test_github_file_inside_an_initramfs_is_the_image() -> None:
    finding = Finding("PB402", Severity.ERROR, "Stale", "differs", evidence=(Evidence(IMAGE_PATH, 3, "x"),))
    line = github.annotation(finding)
    assert line.startswith("::error file=boot/initrd.img-6.1.0-56-amd64,title=PB402 Stale::")
    assert "pciback.conf:3" in line  # the inner file and line stay in the message


def test_github_waived_finding_is_not_annotated() -> None:
    report = with_finding(report_of("classic-pciback-hide"), "PB304", waiver="ours")
    assert "PB304" not in github.render(report)


# Markdown


def test_markdown_table_escapes_pipes() -> None:
    report = report_of("classic-pciback-hide")
    device = report.devices[0]
    prediction = dataclasses.replace(device.prediction, reason="install a|b\nthen c")
    report = dataclasses.replace(report, devices=(dataclasses.replace(device, prediction=prediction),))
    (row,) = [line for line in markdown.render(report).splitlines() if line.startswith("| `0000:05:00.0`")]
    assert "install a\\|b<br>then c" in row
    assert len(re.findall(r"(?<!\\)\|", row)) == 7  # six cells, still


def test_markdown_table_has_every_device() -> None:
    text = markdown.render(report_of("example"))
    assert "| device | id | native driver | prediction | phase | reason |" in text
    rows = [line for line in text.splitlines() if line.startswith("| `0000:")]
    assert len(rows) == 4
    (usb,) = [row for row in rows if "0000:00:14.0" in row]
    assert "**not-claimed** → xhci\\_pci" in usb


def test_markdown_findings_by_severity_with_evidence_and_fixes() -> None:
    text = markdown.render(report_of("classic-pciback-hide"))
    order = [text.index(h) for h in ("### Errors (5)", "### Warnings (1)", "### Notes (")]
    assert order == sorted(order)
    assert "- `etc/modprobe.d/pciback.conf:3` `install e1000e" in text
    assert "```\n# Written by pciback-doctor" in text  # a fix's file in a fenced block
    assert "```sh\nrebuild the initramfs for 6.1.0-56-amd64" in text


def test_markdown_fence_survives_backticks_in_a_file() -> None:
    fix = Fix("x", "write it", files=(FileChange("etc/x.sh", "echo ```\n"),), commands=("echo `uname -r`",))
    report = with_finding(report_of("classic-pciback-hide"), "PB304", fixes=(fix,), waiver="ours")
    text = markdown.render(report)
    assert "````\necho ```\n````\n" in text
    assert "```sh\necho `uname -r`\n```" in text
    waived = text[text.index("### Waived (1)") :]
    assert "#### PB304" in waived and "Waived: ours" in waived


def test_sarif_file_outside_the_root_is_a_file_uri() -> None:
    # an expired waiver (PB109) points into the --waivers file, which the user named by a host path
    report = with_finding(
        report_of("classic-pciback-hide"),
        "PB304",
        evidence=(Evidence("/srv/ci/waivers.toml", 6, "[[waiver]]"),),
    )
    (result,) = results_of(valid_sarif(report), "PB304")
    physical = result["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"] == {"uri": "file:///srv/ci/waivers.toml"}
    assert physical["region"]["startLine"] == 6
