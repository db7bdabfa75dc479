"""Benchmark rows as JSON lines: printed as they come, appended to a results file."""

from __future__ import annotations

import json
from pathlib import Path


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


def append(path: str | Path | None, rows: list[dict]) -> None:
    if path:
        with open(path, "a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)


def read(path: str | Path) -> list[dict]:
    """The rows of a results file; none if it does not exist yet."""
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []
