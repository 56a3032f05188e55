#!/usr/bin/env python3
"""Print (or write into README.md) the table of every setting of both services, generated from the
pydantic-settings classes so it is never typed twice.

    python scripts/settings_table.py            # print the table
    python scripts/settings_table.py --write    # replace the block between the markers in README.md
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def _default(field) -> str:
    if field.default is PydanticUndefined:
        if field.default_factory is None:
            return "(required)"
        value = field.default_factory()
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, Path):
        value = str(value)
    if hasattr(value, "get_secret_value"):
        return "(secret)"
    text = json.dumps(value) if not isinstance(value, str) else value
    return f"`{text}`" if text != "" else '`""`'


def rows(settings_cls, service: str) -> list[str]:
    prefix = settings_cls.model_config.get("env_prefix", "")
    out = []
    for name, field in settings_cls.model_fields.items():
        env = (prefix + name).upper()
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        out.append(f"| {service} | `{env}` | {_default(field)} | {desc} |")
    return out


def table() -> str:
    from llm_service.core.settings import Settings as LLMSettings
    from search_service.core.settings import Settings as SearchSettings

    lines = ["| service | variable | default | what it does |", "|---|---|---|---|"]
    lines += rows(SearchSettings, "search")
    lines += rows(LLMSettings, "llm")
    return "\n".join(lines)


def readme_block(readme: str) -> str:
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[start:end].strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="update README.md in place")
    args = ap.parse_args()
    t = table()
    if not args.write:
        print(t)
        return 0
    path = ROOT / "README.md"
    readme = path.read_text()
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    path.write_text(readme[:start] + "\n" + t + "\n" + readme[end:])
    print(f"wrote {len(t.splitlines()) - 2} settings into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
