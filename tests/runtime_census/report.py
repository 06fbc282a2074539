"""Count the tests that ran a real runtime in a census file: `python tests/runtime_census/report.py FILE`."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path


def runtimes_by_test(path: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for line in path.read_text().splitlines():
        test, _, runtime = line.partition("\t")
        if test and runtime:
            found[test].add(runtime)
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(argv[0])
    found = runtimes_by_test(path) if path.exists() else {}
    for runtime in ("executorch", "litert", "onnxruntime"):
        print(f"{sum(runtime in used for used in found.values()):4d} tests ran {runtime}")
    print(f"{len(found)} tests ran a real runtime")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
