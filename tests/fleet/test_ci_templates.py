"""The kernel gate's CI templates, exercised by running the very command line each one runs: the
GitHub Action's gate step (its `run` script, its `env` resolved from the inputs) and the GitLab job's
script, on the repository's kernel configs. The SARIF must validate, the JUnit must parse, and the
exit status must be the gate's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from helpers import FIXTURES

INTEGRATIONS = Path(__file__).resolve().parents[2] / "integrations"
BIN = Path(sys.executable).parent
PASSING = FIXTURES / "module-modprobe-options" / "boot" / "config-6.1.0-56-amd64"  # Debian 12's stock
BUILTIN = FIXTURES / "builtin-cmdline-hide" / "boot" / "config-6.1.0-56-xendom0"


def no_backend(where: Path) -> Path:
    """Debian's config with the PCI backend switched off: a kernel that cannot pass devices through."""
    text = PASSING.read_text()
    assert "CONFIG_XEN_PCIDEV_BACKEND=m" in text
    path = where / "config-no-backend"
    path.write_text(text.replace("CONFIG_XEN_PCIDEV_BACKEND=m", "# CONFIG_XEN_PCIDEV_BACKEND is not set"))
    return path


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", **extra}


# -- GitHub ---------------------------------------------------------------------------------------


def action() -> dict[str, Any]:
    return yaml.safe_load((INTEGRATIONS / "github" / "action.yml").read_text())  # type: ignore[no-any-return]


def gate_step() -> dict[str, Any]:
    return next(s for s in action()["runs"]["steps"] if s.get("id") == "gate")  # type: ignore[no-any-return]


def resolve(value: str, inputs: dict[str, str]) -> str:
    """`${{ inputs.NAME }}` as the runner expands it (only what the gate step uses)."""
    return re.sub(r"\$\{\{\s*inputs\.([\w-]+)\s*\}\}", lambda m: inputs[m.group(1)], value)


def run_action_gate(tmp_path: Path, **given: str) -> tuple[int, dict[str, str]]:
    inputs = {name: str(spec.get("default", "")) for name, spec in action()["inputs"].items()}
    inputs.update({k.replace("_", "-"): v for k, v in given.items()})
    step = gate_step()
    env = {k: resolve(str(v), inputs) for k, v in step["env"].items()}
    outputs = tmp_path / "github_output"
    outputs.write_text("")
    run = subprocess.run(
        ["bash", "-e", "-c", step["run"]],  # the runner's `shell: bash`: bash --noprofile --norc -eo pipefail
        env=_env({**env, "GITHUB_OUTPUT": str(outputs)}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert step["shell"] == "bash"
    assert run.returncode == 0 or run.stderr, run.stderr
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    return run.returncode, values


def valid_sarif(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text())
    schema = json.loads(resources.files("pciback_doctor").joinpath("schema/sarif-2.1.0.json").read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(document)
    return document  # type: ignore[no-any-return]


def test_action_inputs_reach_the_gate_as_variables_never_as_shell_text() -> None:
    step = gate_step()
    assert "${{" not in step["run"]  # a config path with `$(...)` in it stays a path
    assert all("${{ inputs." in str(v) for v in step["env"].values())


@pytest.mark.parametrize("config", [PASSING, BUILTIN], ids=["module", "builtin"])
def test_action_gate_passes_a_dom0_kernel_and_writes_valid_sarif(tmp_path: Path, config: Path) -> None:
    code, outputs = run_action_gate(tmp_path, config=str(config))
    assert code == 0 and outputs == {"exit-code": "0"}
    sarif = valid_sarif(tmp_path / "pciback-doctor.sarif")
    assert not [r for r in sarif["runs"][0]["results"] if r["level"] == "error"]


def test_action_gate_fails_the_failing_kernel_after_the_upload(tmp_path: Path) -> None:
    code, outputs = run_action_gate(
        tmp_path, config=str(no_backend(tmp_path)), role="both", sarif="reports/gate.sarif"
    )
    # the gate step itself succeeds so that the SARIF is uploaded; the last step fails the job
    assert code == 0 and outputs == {"exit-code": "1"}
    results = valid_sarif(tmp_path / "reports" / "gate.sarif")["runs"][0]["results"]
    assert "PB101" in {r["ruleId"] for r in results if r["level"] == "error"}
    last = action()["runs"]["steps"][-1]
    assert last["if"] == "${{ steps.gate.outputs.exit-code == '1' }}" and "exit 1" in last["run"]
    upload = next(s for s in action()["runs"]["steps"] if "upload-sarif" in s.get("uses", ""))
    assert upload["with"]["sarif_file"] == "${{ inputs.sarif }}" and "always()" in upload["if"]


def test_action_gate_stops_on_a_usage_error(tmp_path: Path) -> None:
    code, outputs = run_action_gate(tmp_path, config=str(tmp_path / "missing.config"))
    assert code == 2 and outputs == {"exit-code": "2"}


# -- GitLab ---------------------------------------------------------------------------------------


def gitlab_job() -> dict[str, Any]:
    text = (INTEGRATIONS / "gitlab" / "pciback-doctor-kernel.gitlab-ci.yml").read_text()
    return yaml.safe_load(text)[".pciback-doctor-kernel"]  # type: ignore[no-any-return]


def run_gitlab_job(tmp_path: Path, **variables: str) -> int:
    job = gitlab_job()
    env = {k: str(v) for k, v in job["variables"].items()}
    env.update(variables)
    code = 0
    for line in job["script"]:
        if line.startswith("python -m pip install"):  # the package is installed here already
            continue
        # the runner feeds each script entry to the image's shell, stopping at the first failure
        code = subprocess.run(["sh", "-e", "-c", line], env=_env(env), cwd=tmp_path, timeout=120).returncode
        if code:
            break
    return code


def junit(path: Path) -> ET.Element:
    return ET.fromstring(path.read_bytes())


def test_gitlab_job_reports_junit_where_the_template_says(tmp_path: Path) -> None:
    job = gitlab_job()
    assert job["artifacts"]["reports"]["junit"] == "pciback-doctor-junit.xml"
    assert job["artifacts"]["when"] == "always"
    assert run_gitlab_job(tmp_path, PCIBACK_DOCTOR_CONFIG=str(PASSING)) == 0
    suite = junit(tmp_path / "pciback-doctor-junit.xml")
    assert suite.iter("testcase") and not list(suite.iter("failure"))


def test_gitlab_job_fails_the_failing_kernel_with_a_failed_test_case(tmp_path: Path) -> None:
    code = run_gitlab_job(
        tmp_path, PCIBACK_DOCTOR_CONFIG=str(no_backend(tmp_path)), PCIBACK_DOCTOR_ROLE="both"
    )
    assert code == 1
    failed = [
        c.get("classname")
        for c in junit(tmp_path / "pciback-doctor-junit.xml").iter("testcase")
        if c.find("failure") is not None
    ]
    assert "PB101" in failed
