"""The README's table of supported model classes, generated from the test zoo.

    python tests/zoo_table.py [ZOO_DIR]

ZOO_DIR holds what tests/fixtures/make_fixtures.R wrote (manifest.json); without it the zoo is
trained into a temporary folder first. Prints the markdown that goes between the README's
`<!-- zoo:start -->` and `<!-- zoo:end -->` lines; tests/integration/test_predictions.py checks
that the README holds exactly this table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- zoo:start -->", "<!-- zoo:end -->"


def table(manifest: list) -> str:
    """One row per R class (class(model)[1]), in the zoo's order."""
    rows, seen = [], {}
    for entry in manifest:
        cls = entry["class"]
        if cls in seen:
            seen[cls]["models"].append(entry["name"])
            continue
        packages = entry["packages"] if isinstance(entry["packages"], list) else [entry["packages"]]
        seen[cls] = {"class": cls, "package": ", ".join(packages) or "stats", "returns": entry["returns"],
                     "args": entry["args"] or "", "models": [entry["name"]]}
        rows.append(seen[cls])
    lines = ["| R class | package | default answer | `predict_args` | zoo models |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['class']}` | {r['package']} | {r['returns']} | {r['args']} | "
                     f"{', '.join(r['models'])} |")
    return "\n".join(lines)


def readme_table(readme: str) -> str:
    return readme[readme.index(START) + len(START):readme.index(END)].strip()


def main(argv: list) -> int:
    if argv:
        folder = Path(argv[0])
    else:
        folder = Path(tempfile.mkdtemp(prefix="zoo-"))
        subprocess.run(["Rscript", str(ROOT / "tests/fixtures/make_fixtures.R"), str(folder)], check=True,
                       capture_output=True)
    print(table(json.loads((folder / "manifest.json").read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
