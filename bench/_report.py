"""
The summary of a C{compare.py} run: per scenario, parameter set and server,
the median and (min..max) of each metric, and the ratios of txpipe's
medians to each other server's, as a table and as JSON lines.
"""

from __future__ import annotations

import json
import math
import statistics
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

from _harness import BASELINE, FLOOR, PEER_NAME, REFERENCE, TXPIPE, Bench


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
                    "ratio_reference": ratios(scenario, servers, REFERENCE),
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
    REFERENCE: ("ref", "ratio_reference"),
}


# -- the targets line ------------------------------------------------------

#: The N=30 cells the bulk targets are about: both arrival orders and both
#: sender modes.
TARGET_RECEIVERS = 30


def geometric_mean(values: List[float]) -> Optional[float]:
    if not values:
        return None
    return round(math.exp(sum(map(math.log, values)) / len(values)), 3)


def targets(summaries: List[Dict[str, Any]]) -> Dict[str, Any]:
    """
    The ratios the bulk targets name: over the N=30 C{fanout} cells (both
    arrival orders, both sender modes), the geometric mean of txpipe's
    median throughput and CPU per GiB over the C reference's, the peer's
    and the baseline's; and C{tls} (N=30) against the baseline.  A ratio
    is missing where that server did not run.
    """
    found: Dict[str, Any] = {}
    cells = [
        s
        for s in summaries
        if s["scenario"] == "fanout" and s["params"]["receivers"] == TARGET_RECEIVERS
    ]
    for label, key in (
        ("vs_reference", "ratio_reference"),
        ("vs_peer", "ratio"),
        ("vs_baseline", "ratio_baseline"),
    ):
        throughput = [
            c[key]["delivered_mib_s"] for c in cells if c[key].get("delivered_mib_s")
        ]
        cpu = [c[key]["cpu_s_per_gib"] for c in cells if c[key].get("cpu_s_per_gib")]
        if throughput or cpu:
            found[label] = {
                "cells": len(throughput),
                "throughput": geometric_mean(throughput),
                "cpu_per_gib": geometric_mean(cpu),
                "per_cell": {
                    f"{c['params']['upload']} {c['params']['order']}": [
                        c[key].get("delivered_mib_s"),
                        c[key].get("cpu_s_per_gib"),
                    ]
                    for c in cells
                },
            }
    for s in summaries:
        if s["scenario"] == "tls" and s["ratio_baseline"]:
            found["tls_vs_baseline"] = {
                "throughput": s["ratio_baseline"].get("delivered_mib_s"),
                "cpu_per_gib": s["ratio_baseline"].get("cpu_s_per_gib"),
            }
    return found


def print_targets(found: Dict[str, Any]) -> None:
    """One line: the ratios of L{targets} (txpipe over each other server)."""
    parts = []
    names = {
        "vs_reference": "C reference",
        "vs_peer": "peer",
        "vs_baseline": "baseline",
        "tls_vs_baseline": "TLS N=30 vs baseline",
    }
    for label, name in names.items():
        entry = found.get(label)
        if entry is None:
            continue
        cells = f" over {entry['cells']} cells" if "cells" in entry else ""
        parts.append(
            f"{name}{cells}: throughput {entry['throughput']}x, "
            f"CPU/GiB {entry['cpu_per_gib']}x"
        )
    if parts:
        print(
            f"targets (txpipe/other, N={TARGET_RECEIVERS} geometric means): "
            + "; ".join(parts)
        )
