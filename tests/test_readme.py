"""The README's settings table is generated from the settings classes, never typed twice."""
import runpy
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_settings_table_matches_the_settings_classes():
    settings_table = runpy.run_path(str(ROOT / "scripts" / "settings_table.py"))   # the script's functions
    readme = (ROOT / "README.md").read_text()
    generated = settings_table["table"]()
    assert settings_table["readme_block"](readme) == generated, (
        "README settings table is out of date: run `python scripts/settings_table.py --write`")
    # every variable of both services appears once
    from llm_service.core.settings import Settings as LLMSettings
    from search_service.core.settings import Settings as SearchSettings
    for cls, prefix in ((SearchSettings, "SEARCH_"), (LLMSettings, "LLM_")):
        for name in cls.model_fields:
            assert generated.count(f"`{prefix}{name.upper()}`") == 1, name


def test_readme_names_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    out = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "pytest" in out.stdout
