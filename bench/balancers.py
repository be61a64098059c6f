#!/usr/bin/env python3
"""
What sharding behind a load balancer costs and buys on one machine:
aggregate fan-out throughput straight to one txpipe, and through HAProxy
(and nginx, where installed) with the configurations in C{deploy/} in front
of one and of two txpipe backends.  It measures; it asserts nothing (exit 0
whatever the numbers; 2 when HAProxy is missing).

    python bench/balancers.py                  # 3 repetitions, ~2 minutes
    python bench/balancers.py --reps 5 --json /tmp/balancers.jsonl

Options: C{--reps K} (default 3), C{--pipes P} (default 4), C{--receivers N}
(default 10), C{--size-mib S} (default 128), C{--only NAME[,NAME]} (of
C{direct}, C{haproxy-1}, C{haproxy-2}, C{nginx-1}, C{nginx-2}), C{--json
FILE}.

Two C{twistd -n pipe} backends, one HAProxy and one nginx per backend count
are started once, on loopback, and every configuration runs once per
repetition, interleaved (direct, haproxy-1, haproxy-2, nginx-1, nginx-2,
direct, ...) so that drift of the machine hits all.  C{direct} and the
C{-1} configurations use the first backend only.

One run: P pipes at once, each N curl receivers (byte-counting, output to
/dev/null) started first, then 0.2 s later the P curl senders, each
uploading S MiB with C{-T file} from a file in /dev/shm.  The pipe paths
are chosen once, by probing each two-backend balancer with one-byte
transfers, so that half the pipes land on each backend: the comparison
measures the proxy, not the luck of the hash.

Per run: C{wall_s} (from the senders' start until the last party ended),
C{delivered_mib_s} (bytes all receivers got over the wall time),
C{backend_cpu_s_per_gib} (utime+stime of the txpipe backends, from /proc,
per GiB delivered), C{proxy_cpu_s_per_gib} (the balancer's processes, its
workers included), C{server_cpu_s_per_gib} (both), C{backend_hwm_mib} (the
largest backend's peak RSS in the run, VmHWM reset at the start),
C{backend_split} (GiB each backend delivered, from its C{/api/v1/status}),
and C{ok} (every curl exited 0 and every receiver got exactly S MiB).

The machine this was written on has 2 cores: the curls, the backends and
the balancer all share them, so a second backend cannot add a core's worth
of throughput here; what the figures show is the balancer's own CPU per
GiB and how much of the direct throughput survives the extra hop.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from _harness import (
    GiB,
    MiB,
    answers,
    counted_outcome,
    raise_file_limit,
    receiver_curl,
    sender_curl,
    wait_all,
)
from _twistd import ChildServer, Server, free_port

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
CONFIGS = ["direct", "haproxy-1", "haproxy-2", "nginx-1", "nginx-2"]


def tree_cpu_seconds(pid: int) -> float:
    """utime+stime of C{pid} and its children still running (nginx workers)."""
    total = 0.0
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(entry.name))
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class Balancer(ChildServer):
    """HAProxy or nginx running its C{deploy/} file, rewritten for loopback."""

    def __init__(self, kind: str, workdir: Path, backends: List[Server]) -> None:
        super().__init__()
        self.name = kind
        self.port = free_port()
        directory = workdir / f"{kind}-{len(backends)}"
        directory.mkdir()
        if kind == "haproxy":
            text = (DEPLOY / "haproxy.cfg").read_text()
            text = text.replace("bind :8080", f"bind 127.0.0.1:{self.port}")
            # Benchmark runs log nothing per request.
            text = text.replace("    log stdout format raw local0 info\n", "")
            servers = r"^    server txpipe\d 127\.0\.0\.1:808\d\n"
            line = "    server txpipe{i} 127.0.0.1:{port}\n"
            config = directory / "haproxy.cfg"
            argv = ["haproxy", "-db", "-f", str(config)]
        else:
            text = (DEPLOY / "nginx.conf").read_text()
            text = text.replace("listen 8080;", f"listen 127.0.0.1:{self.port};")
            text = text.replace("/run/nginx-txpipe.pid", str(directory / "nginx.pid"))
            text = text.replace("/tmp/nginx-txpipe", str(directory / "tmp"))
            servers = r"^        server 127\.0\.0\.1:808\d .*\n"
            line = "        server 127.0.0.1:{port} max_fails=1 fail_timeout=10s;\n"
            config = directory / "nginx.conf"
            argv = ["nginx", "-c", str(config), "-p", str(directory)]
            argv += ["-g", "daemon off;"]
        first = re.search(servers, text, flags=re.M)
        assert first, f"no server lines in deploy/ for {kind}"
        ours = "".join(line.format(i=i, port=b.port) for i, b in enumerate(backends, 1))
        text = re.sub(servers, "", text, flags=re.M)
        text = text[: first.start()] + ours + text[first.start() :]
        config.write_text(text)
        with open(directory / "errors.log", "wb") as errors:
            self.process = subprocess.Popen(
                argv, cwd=directory, stdout=subprocess.DEVNULL, stderr=errors
            )
        deadline = time.monotonic() + 20
        while not answers(self.port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"{kind} did not start: see {directory}")
            time.sleep(0.05)


class Config:
    """One way in: straight to a backend, or through a balancer."""

    def __init__(
        self, name: str, backends: List[Server], balancer: Optional[Balancer]
    ) -> None:
        self.name = name
        self.backends = backends
        self.balancer = balancer
        self.port = balancer.port if balancer else backends[0].port

    def url(self, path: str, n: int) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/pipe/{path}?n={n}"


def delivered(backend: Server) -> int:
    return int(backend.status()["bytes_written"])  # type: ignore[call-overload]


def completed(backend: Server) -> int:
    return int(backend.status()["transfers"]["complete"])  # type: ignore[index]


def balanced_paths(configs: List[Config], pipes: int, run_id: str) -> List[str]:
    """
    Paths that every two-backend balancer spreads evenly: each candidate is
    probed with a one-byte transfer through each, and the backend whose
    completed count rose is where the balancer sends that path.
    """
    chosen: List[str] = []
    counts: Dict[str, List[int]] = {c.name: [0, 0] for c in configs}
    for candidate in range(pipes * 50):
        path = f"bench-{run_id}-{candidate}"
        owners = []
        for config in configs:
            before = [completed(b) for b in config.backends]
            receiver = subprocess.Popen(
                ["curl", "-sS", "-o", "/dev/null", config.url(path, 1)]
            )
            subprocess.run(
                ["curl", "-sS", "-o", "/dev/null", "-T", "-", config.url(path, 1)],
                input=b"x",
                check=True,
                timeout=30,
            )
            receiver.wait(timeout=30)
            after = [completed(b) for b in config.backends]
            owners.append([a - b for a, b in zip(after, before)].index(1))
        wanted = all(
            counts[c.name][owner] < pipes // 2 for c, owner in zip(configs, owners)
        )
        if wanted:
            chosen.append(path)
            for config, owner in zip(configs, owners):
                counts[config.name][owner] += 1
        if len(chosen) == pipes:
            return chosen
    raise SystemExit(f"found no {pipes} paths split evenly by every balancer")


def run(
    config: Config, paths: List[str], args: argparse.Namespace, upload: Path
) -> Dict[str, Any]:
    size = args.size_mib * MiB
    n = args.receivers
    proxy_pid = config.balancer.process.pid if config.balancer else None
    receivers = {p: [receiver_curl(config.url(p, n)) for _ in range(n)] for p in paths}
    time.sleep(0.2)  # the benchmark, not a test: let the receivers register
    for backend in config.backends:
        backend.reset_peak_rss()
    split_before = [delivered(b) for b in config.backends]
    backend_cpu = sum(b.cpu_seconds() for b in config.backends)
    proxy_cpu = tree_cpu_seconds(proxy_pid) if proxy_pid else 0.0
    started = time.monotonic()
    senders = {p: sender_curl(config.url(p, n), upload, size, b"") for p in paths}
    parties = [*senders.values(), *(r for rs in receivers.values() for r in rs)]
    wait_all(parties, started + 120 + size * n * len(paths) / (20 * MiB))
    wall = time.monotonic() - started
    backend_cpu = sum(b.cpu_seconds() for b in config.backends) - backend_cpu
    proxy_cpu = (tree_cpu_seconds(proxy_pid) - proxy_cpu) if proxy_pid else 0.0
    outcomes = [counted_outcome(size, senders[p], receivers[p]) for p in paths]
    total = sum(o["delivered"] for o in outcomes)
    gib = total / GiB if total else float("nan")
    split = [delivered(b) - s for b, s in zip(config.backends, split_before)]
    return {
        "config": config.name,
        "wall_s": round(wall, 3),
        "delivered_mib_s": round(total / MiB / wall, 1),
        "backend_cpu_s_per_gib": round(backend_cpu / gib, 3),
        "proxy_cpu_s_per_gib": round(proxy_cpu / gib, 3),
        "server_cpu_s_per_gib": round((backend_cpu + proxy_cpu) / gib, 3),
        "backend_hwm_mib": max(
            round(b.status_kib("VmHWM") / 1024, 1) for b in config.backends
        ),
        "backend_split_gib": [round(s / GiB, 2) for s in split],
        "ok": all(o["ok"] for o in outcomes),
        "problems": [p for o in outcomes for p in o["problems"]][:10],
    }


SUMMARY = [
    ("delivered_mib_s", "MiB/s"),
    ("server_cpu_s_per_gib", "server CPU s/GiB"),
    ("backend_cpu_s_per_gib", "backend CPU s/GiB"),
    ("proxy_cpu_s_per_gib", "proxy CPU s/GiB"),
    ("backend_hwm_mib", "backend peak MiB"),
]


def summarize(records: List[Dict[str, Any]], names: List[str]) -> List[Dict[str, Any]]:
    direct = [r["delivered_mib_s"] for r in records if r["config"] == "direct"]
    base = statistics.median(direct) if direct else None
    summaries = []
    for name in names:
        runs = [r for r in records if r["config"] == name]
        entry: Dict[str, Any] = {
            "config": name,
            "runs": len(runs),
            "ok": sum(1 for r in runs if r["ok"]),
        }
        for metric, _ in SUMMARY:
            values = [r[metric] for r in runs]
            entry[metric] = {
                "median": round(statistics.median(values), 3),
                "min": min(values),
                "max": max(values),
            }
        if base:
            entry["throughput_vs_direct"] = round(
                entry["delivered_mib_s"]["median"] / base, 2
            )
        summaries.append(entry)
    return summaries


def print_table(summaries: List[Dict[str, Any]]) -> None:
    print()
    header = f"{'config':<11}{'ok':>6}" + "".join(
        f"{label:>26}" for _, label in SUMMARY
    )
    print(header + f"{'vs direct':>11}")
    for entry in summaries:
        cells = "".join(
            "{:>26}".format(
                f"{entry[m]['median']:g} ({entry[m]['min']:g}..{entry[m]['max']:g})"
            )
            for m, _ in SUMMARY
        )
        ok = f"{entry['ok']}/{entry['runs']}"
        ratio = entry.get("throughput_vs_direct")
        print(
            f"{entry['config']:<11}{ok:>6}{cells}{'-' if ratio is None else ratio:>11}"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--pipes", type=int, default=4)
    parser.add_argument("--receivers", type=int, default=10)
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--only", default=",".join(CONFIGS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.only = [c for c in args.only.split(",") if c]
    unknown = set(args.only) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configuration: {', '.join(sorted(unknown))}")
    if args.pipes % 2:
        parser.error("--pipes must be even (half on each of two backends)")
    return args


def main() -> None:
    args = parse_args()
    os.environ["PATH"] += ":/usr/sbin:/sbin"
    if not shutil.which("haproxy"):
        print("HAProxy is not installed (Debian: apt-get install haproxy)")
        sys.exit(2)
    names = [
        c
        for c in args.only
        if not (c.startswith("nginx") and not shutil.which("nginx"))
    ]
    raise_file_limit()
    json_file = open(args.json, "w") if args.json else None

    def emit(document: Dict[str, Any]) -> None:
        line = json.dumps(document)
        print(line, flush=True)
        if json_file:
            json_file.write(line + "\n")
            json_file.flush()

    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="txpipe-balancers-", dir=shm) as tmp:
        workdir = Path(tmp)
        upload = workdir / "payload"
        with open(upload, "wb") as f:
            f.write(os.urandom(MiB) * args.size_mib)
        backends = [Server(workdir), Server(workdir)]
        balancers: List[Balancer] = []
        configs: List[Config] = []
        try:
            for name in names:
                if name == "direct":
                    configs.append(Config(name, backends[:1], None))
                    continue
                kind, count = name.split("-")
                chosen = backends[: int(count)]
                balancers.append(Balancer(kind, workdir, chosen))
                configs.append(Config(name, chosen, balancers[-1]))
            two = [c for c in configs if len(c.backends) == 2]
            paths = balanced_paths(two, args.pipes, os.urandom(4).hex())
            emit({"paths": paths, "versions": versions()})
            records = []
            for rep in range(args.reps):
                for config in configs:
                    record = {"rep": rep, **run(config, paths, args, upload)}
                    records.append(record)
                    emit(record)
            summaries = summarize(records, names)
            for summary in summaries:
                emit({"summary": summary})
            print_table(summaries)
        finally:
            for balancer in balancers:
                balancer.stop()
            for backend in backends:
                backend.stop()


def versions() -> Dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for tool, argv in (("haproxy", ["haproxy", "-v"]), ("nginx", ["nginx", "-v"])):
        if shutil.which(tool):
            out = subprocess.run(argv, capture_output=True, text=True)
            found[tool] = (out.stdout + out.stderr).splitlines()[0]
    found["cpus"] = str(os.cpu_count())
    return found


if __name__ == "__main__":
    main()
