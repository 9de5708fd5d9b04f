"""Summaries of a py-spy ``--format raw`` profile (collapsed stacks: ``frame;frame;... count``)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
PACKAGES = (
    ("app/", "service code (app/)"),
    ("sqlalchemy", "SQLAlchemy"),
    ("asyncpg", "asyncpg"),
    ("pymongo", "PyMongo"),
    ("bson", "PyMongo (bson)"),
    ("aiobotocore", "aiobotocore/botocore"),
    ("botocore", "aiobotocore/botocore"),
    ("aiohttp", "aiohttp (S3 transport)"),
    ("httpx", "httpx"),
    ("httpcore", "httpx"),
    ("uvicorn", "uvicorn"),
    ("starlette", "FastAPI/Starlette"),
    ("fastapi", "FastAPI/Starlette"),
    ("pydantic", "pydantic"),
    ("structlog", "structlog"),
    ("asyncio", "asyncio event loop"),
    ("selectors", "asyncio event loop"),
    ("ssl", "ssl"),
)


def _package(file: str) -> str:
    for needle, label in PACKAGES:
        if needle in file:
            return label
    return "other"


def _frames(stack: str) -> list[tuple[str, str]]:
    frames = []
    for raw in stack.split(";"):
        match = FRAME.match(raw.strip())
        if match:
            frames.append((match["func"], match["file"]))
    return frames


def summarize(path: Path, top: int = 8) -> dict[str, object]:
    """Self time by package of the innermost frame, and the service functions with the most
    inclusive time (innermost ``app/`` frame of each sample)."""
    by_package: Counter[str] = Counter()
    by_app_function: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        if not frames:
            continue
        total += count
        by_package[_package(frames[-1][1])] += count
        for func, file in reversed(frames):
            if "app/" in file:
                short = file[file.index("app/") :]
                by_app_function[f"{short}:{func}"] += count
                break
    return {
        "samples": total,
        "self_by_package": [(k, v / total) for k, v in by_package.most_common(top)]
        if total
        else [],
        "innermost_service_function": [(k, v / total) for k, v in by_app_function.most_common(top)]
        if total
        else [],
    }


def render(summary: dict[str, object]) -> str:
    samples = summary["samples"]
    lines = [f"{samples:,} samples of the service process while it was busy (py-spy, 100 Hz).", ""]
    lines += ["| where the CPU was (innermost frame) | share |", "|---|---:|"]
    lines += [f"| {k} | {v:.0%} |" for k, v in summary["self_by_package"]]  # type: ignore[attr-defined]
    lines += ["", "| innermost service function on the stack | share |", "|---|---:|"]
    lines += [
        f"| {_located(k)} | {v:.0%} |"
        for k, v in summary["innermost_service_function"]  # type: ignore[attr-defined]
    ]
    return "\n".join(lines)


def _located(where: str) -> str:
    """``file:function`` as profiled; where the module has since become a package (e.g.
    ``app/cli.py`` -> ``app/cli/``), the module of the package that now defines it."""
    file, _, function = where.partition(":")
    if Path(file).exists() or not Path(file).with_suffix("").is_dir():
        return f"`{where}`"
    name = function.split(".")[0]
    pattern = re.compile(rf"^\s*(?:async\s+def|def|class)\s+{re.escape(name)}\b", re.MULTILINE)
    for module in sorted(Path(file).with_suffix("").rglob("*.py")):
        if pattern.search(module.read_text()):
            return f"`{module}:{function}` (profiled as `{file}`)"
    return f"`{where}` (since moved)"
