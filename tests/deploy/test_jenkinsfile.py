"""Jenkinsfile through Debian's groovy (2.4, the Groovy of Jenkins' CPS engine) and an AST check of the
declarative structure (tests/deploy/jenkinsfile_check.groovy), plus the pipeline's contract: every stage
calls a script under scripts/ that exists."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .conftest import ROOT, run

CHECKER = Path(__file__).with_name("jenkinsfile_check.groovy")
JENKINSFILE = ROOT / "Jenkinsfile"


def check(groovy_env, path: Path):
    return run([shutil.which("groovy") or "groovy", str(CHECKER), str(path)], env=groovy_env, timeout=120)


@pytest.fixture(scope="module")
def checked(groovy_env):
    return check(groovy_env, JENKINSFILE)


def test_groovy_parses_it_and_the_declarative_structure_holds(checked):
    assert checked.returncode == 0, checked.output
    stages = checked.stdout.split(": ", 2)[-1].strip().split(", ")
    for name in ("Validate", "Test", "Build", "Push", "Deploy", "Helm upgrade", "Helm test"):
        assert name in stages, checked.stdout


def test_pipeline_contract():
    text = JENKINSFILE.read_text()
    for needle in ("timeout(", "buildDiscarder(", "disableConcurrentBuilds()", "parallel {",
                   "credentials('registry-credentials')", "slackSend", "failure {", "success {"):
        assert needle in text, needle
    scripts = re.findall(r"sh '(scripts/[^\s']+)", text)
    assert scripts, "stages call no script"
    for s in scripts:
        assert (ROOT / s).is_file(), f"Jenkinsfile calls missing {s}"
    # Every `steps` block is a single script call: the same steps run on a laptop.
    for body in re.findall(r"steps \{\s*(.*?)\s*\}", text, re.S):
        assert re.fullmatch(r"sh 'scripts/[^']+'", body), body
    deploy = (ROOT / "scripts/ci/deploy.sh").read_text()
    assert "helm upgrade --install" in deploy and "--atomic" in deploy and "--wait" in deploy
    assert "image.tag=$IMAGE_TAG" in deploy
    assert "helm test" in (ROOT / "scripts/ci/helm_test.sh").read_text()
    assert "docker-compose.test.yml" in (ROOT / "scripts/ci/test.sh").read_text()


def test_ci_scripts_are_valid_bash():
    for script in sorted((ROOT / "scripts").rglob("*.sh")):
        r = run(["bash", "-n", str(script)])
        assert r.returncode == 0, f"{script}: {r.stderr}"


# ---- the gate can fail -------------------------------------------------------------------------

@pytest.mark.parametrize("mutation,code,message", [
    ("syntax", 2, "SYNTAX ERROR"),
    ("misspelled-section", 1, "unknown section 'step'"),
    ("two-bodies", 1, "exactly one of steps/parallel/stages/matrix"),
    ("unknown-top-level", 1, "unknown section 'option'"),
    ("bad-post", 1, "unknown section 'sucess'"),
])
def test_checker_rejects_a_broken_jenkinsfile(groovy_env, tmp_path, mutation, code, message):
    text = JENKINSFILE.read_text()
    if mutation == "syntax":
        text = text.rstrip()[:-1]  # drop the closing brace of pipeline { }
    elif mutation == "misspelled-section":
        text = text.replace("steps {", "step {", 1)
    elif mutation == "two-bodies":
        text = text.replace("sh 'scripts/ci/validate.sh'\n            }",
                            "sh 'scripts/ci/validate.sh'\n            }\n            parallel { stage('x') { steps { sh 'true' } } }", 1)
    elif mutation == "unknown-top-level":
        text = text.replace("    options {", "    option {", 1)
    else:
        text = text.replace("        success {", "        sucess {", 1)
    assert text != JENKINSFILE.read_text()
    broken = tmp_path / "Jenkinsfile"
    broken.write_text(text)
    r = check(groovy_env, broken)
    assert r.returncode == code, r.output
    assert message in r.stderr, r.output
