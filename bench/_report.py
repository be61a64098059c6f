"""
The summary of a C{compare.py} run: per scenario, parameter set and server,
the median and (min..max) of each metric, and the ratios of txpipe's
medians to each other server's, as a table and as JSON lines.
"""

from __future__ import annotations

import json
import statistics
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

from _harness import BASELINE, FLOOR, PEER_NAME, TXPIPE, Bench


class Scenario(Protocol):
    """What the summary needs of a scenario: its name and summary metrics."""

    name: str
    summary: List[Tuple[str, str]]


def summarize(bench: Bench, scenarios: Sequence[Scenario]) -> List[Dict[str, Any]]:
    """Per scenario, parameter set and server: median, min and max."""
    summaries = []
    for scenario in scenarios:
        seen: List[str] = []
        for record in bench.records:
            key = json.dumps(record["params"], sort_keys=True)
            if record["scenario"] == scenario.name and key not in seen:
                seen.append(key)
        for key in seen:
            servers: Dict[str, Any] = {}
            for kind in bench.kinds:
                runs = [
                    r
                    for r in bench.records
                    if r["scenario"] == scenario.name
                    and r["server"] == kind
                    and json.dumps(r["params"], sort_keys=True) == key
                ]
                if not runs:
                    continue
                entry: Dict[str, Any] = {
                    "runs": len(runs),
                    "ok": sum(1 for r in runs if r.get("ok")),
                }
                for metric, _ in scenario.summary:
                    values = [r[metric] for r in runs if r.get(metric) is not None]
                    if values:
                        entry[metric] = {
                            "median": round(statistics.median(values), 3),
                            "min": min(values),
                            "max": max(values),
                        }
                kinds: Dict[str, int] = {}
                for r in runs:
                    for kind_name, count in r.get("failure_kinds", {}).items():
                        kinds[kind_name] = kinds.get(kind_name, 0) + count
                if kinds:
                    entry["failure_kinds"] = kinds
                servers[kind] = entry
            summaries.append(
                {
                    "scenario": scenario.name,
                    "params": json.loads(key),
                    "servers": servers,
                    "ratio": ratios(scenario, servers),
                    "ratio_baseline": ratios(scenario, servers, BASELINE),
                    "ratio_floor": ratios(scenario, servers, FLOOR),
                    "above_floor_us": above_floor(servers),
                }
            )
    return summaries


def above_floor(servers: Dict[str, Any]) -> Optional[float]:
    """
    txpipe's median server CPU per transfer minus the twisted.web floor's,
    in microseconds: what txpipe costs on top of twisted.web.
    """
    ours = servers.get(TXPIPE, {}).get("cpu_ms_per_transfer")
    floor = servers.get(FLOOR, {}).get("cpu_ms_per_transfer")
    if ours is None or floor is None:
        return None
    return round((ours["median"] - floor["median"]) * 1000)


def ratios(
    scenario: Scenario, servers: Dict[str, Any], other: str = PEER_NAME
) -> Dict[str, float]:
    """txpipe's median over C{other}'s, where both are non-zero."""
    result = {}
    if TXPIPE in servers and other in servers:
        for metric, _ in scenario.summary:
            ours = servers[TXPIPE].get(metric)
            theirs = servers[other].get(metric)
            if ours and theirs and ours["median"] and theirs["median"]:
                result[metric] = round(ours["median"] / theirs["median"], 2)
    return result


def number(value: float) -> str:
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"


def print_table(summaries: List[Dict[str, Any]], scenarios: Sequence[Scenario]) -> None:
    labels = {s.name: s.summary for s in scenarios}
    print()
    for summary in summaries:
        servers = summary["servers"]
        kinds = list(servers)
        header = f"  {'metric':<18}" + "".join(
            f"{k + ' median (min..max)':>34}" for k in kinds
        )
        others = [k for k in kinds if k != TXPIPE]
        header += "".join(f"{'txpipe/' + _RATIOS[k][0]:>15}" for k in others)
        params = " ".join(f"{k}={v}" for k, v in summary["params"].items())
        print(f"== {summary['scenario']}  {params}")
        print(header)
        ok_row = "".join(
            f"{str(servers[k]['ok']) + '/' + str(servers[k]['runs']):>34}"
            for k in kinds
        )
        print(f"  {'ok runs':<18}{ok_row}")
        for metric, label in labels[summary["scenario"]]:
            if not any(metric in servers[k] for k in kinds):
                continue
            cells = []
            for k in kinds:
                stats = servers[k].get(metric)
                cells.append(
                    f"{number(stats['median'])} ({number(stats['min'])}.."
                    f"{number(stats['max'])})"
                    if stats
                    else "-"
                )
            row = f"  {label:<18}" + "".join(f"{c:>34}" for c in cells)
            for k in others:
                ratio = summary[_RATIOS[k][1]].get(metric)
                row += f"{'-' if ratio is None else f'{ratio:.2f}':>15}"
            print(row)
        if summary.get("above_floor_us") is not None:
            print(
                f"  txpipe above twisted.web: {summary['above_floor_us']} us of"
                " server CPU per transfer (medians)"
            )
        for k in kinds:
            if "failure_kinds" in servers[k]:
                print(f"  {k} failures: {json.dumps(servers[k]['failure_kinds'])}")
        print()


#: Each other server's ratio column: its label and its key in a summary.
_RATIOS = {
    PEER_NAME: ("peer", "ratio"),
    BASELINE: ("base", "ratio_baseline"),
    FLOOR: ("floor", "ratio_floor"),
}
