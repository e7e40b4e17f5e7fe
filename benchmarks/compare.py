"""`bench compare A.json B.json`: per matching item, B / A of a latency statistic; a ratio above
1 + threshold is a regression and makes the exit code non-zero (for CI)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from md_export.errors import MdExportError

from .schema import item_key, validate
from .stats import STAT_KEYS

EXIT_OK = 0
EXIT_REGRESSION = 1


@dataclass
class Row:
    key: str
    before: float
    after: float

    @property
    def ratio(self) -> float:
        return self.after / self.before if self.before else float("inf")


@dataclass
class Comparison:
    rows: list[Row]
    only_a: list[str]
    only_b: list[str]
    metric: str
    threshold: float

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.ratio > 1.0 + self.threshold]

    @property
    def exit_code(self) -> int:
        return EXIT_REGRESSION if self.regressions else EXIT_OK


def load_result(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MdExportError(f"{path} does not exist")
    try:
        result = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MdExportError(f"{path} is not JSON ({exc})") from None
    try:
        validate(result)
    except MdExportError as exc:
        raise MdExportError(f"{path}: {exc}") from None
    return result


def compare(a: dict, b: dict, metric: str = "p50", threshold: float = 0.10) -> Comparison:
    if metric not in STAT_KEYS or metric == "std":
        raise MdExportError(f"metric {metric!r}: choose from {', '.join(k for k in STAT_KEYS if k != 'std')}")
    if threshold < 0:
        raise MdExportError(f"threshold must be >= 0, got {threshold}")
    items_a = {item_key(i): i for i in a["items"]}
    items_b = {item_key(i): i for i in b["items"]}
    rows = []
    for key, item in items_a.items():
        if key not in items_b:
            continue
        before, after = item["latency_ms"].get(metric), items_b[key]["latency_ms"].get(metric)
        if before is None or after is None:
            continue  # a phone tool that does not print this statistic: nothing to compare
        rows.append(Row(key, before, after))
    if not rows:
        raise MdExportError("the two results share no item with this statistic; nothing to compare "
                            f"(A has {sorted(items_a)[:5]}, B has {sorted(items_b)[:5]})")
    return Comparison(rows, sorted(set(items_a) - set(items_b)), sorted(set(items_b) - set(items_a)), metric, threshold)


def format_comparison(c: Comparison) -> str:
    width = max(len(r.key) for r in c.rows)
    lines = [f"{'item':<{width}}  {'A ' + c.metric:>12}  {'B ' + c.metric:>12}  {'B/A':>7}"]
    for r in c.rows:
        flag = "  REGRESSION" if r in c.regressions else ""
        lines.append(f"{r.key:<{width}}  {r.before:>12.3f}  {r.after:>12.3f}  {r.ratio:>7.3f}{flag}")
    for key in c.only_a:
        lines.append(f"{key}: only in A")
    for key in c.only_b:
        lines.append(f"{key}: only in B")
    verdict = (f"{len(c.regressions)} regression(s) past +{c.threshold:.0%}" if c.regressions
               else f"no regression past +{c.threshold:.0%}")
    lines.append(verdict)
    return "\n".join(lines)
