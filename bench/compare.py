#!/usr/bin/env python3
"""
Side-by-side benchmark: txpipe (C{twistd -n pipe}) against nwtgck's
piping-server 1.x, over loopback, with the same clients, interleaved run by
run (txpipe, piping-server, txpipe, piping-server, ...) so that any drift of
the machine hits both.  It measures; it asserts nothing: the exit status is
0 whatever the numbers say (2 only when the peer is missing).

    python bench/compare.py                      # everything, 5-20 minutes
    python bench/compare.py --quick              # a smoke run, under 2 minutes
    python bench/compare.py --only tiny,scale --json /tmp/compare.jsonl
    python bench/compare.py --no-peer            # txpipe alone
    python bench/compare.py --no-peer --baseline /tmp/old/bin/python
                                                 # before/after, interleaved
    python bench/compare.py --only tiny --floor  # and twisted.web's own floor

Options: C{--reps K} (fanout, tls, throttled, tiny; default 3),
C{--receivers N[,N]} (fanout's numbers of receivers; default 1,10,30),
C{--concurrent-reps
K} (default 20), C{--scale-reps K} (default 1), C{--only NAME[,NAME]},
C{--quick} (sizes cut to 32 MiB, 16 MiB, 1 GiB, 200 tiny transfers, 2,000
waiting and n=200 in C{scale}, one repetition, two of C{concurrent}),
C{--no-peer}, C{--json FILE} (the same JSON lines, also to FILE),
C{--baseline PYTHON} (also run the txpipe installed for that interpreter,
e.g. a venv with the previous commit, as C{txpipe-baseline}, interleaved;
the table adds C{txpipe/base}), C{--floor} (C{tiny} also runs against
C{floor_server.py}, a stock twisted.web site that only matches a GET and a
PUT by path, as C{twisted.web}: the table adds C{txpipe/floor} and
C{txpipe above twisted.web}, txpipe's CPU per transfer minus the floor's,
what txpipe itself costs on top of twisted.web).  Servers take turns at
going first, one repetition to the next.

The peer is installed once, outside git (C{bench/peer/} is ignored):

    mkdir -p bench/peer && cd bench/peer && npm install piping-server@1

Without it the script prints that command and exits 2, unless C{--no-peer}.
It runs as C{piping-server --host 127.0.0.1 --http-port PORT} on a free port
(the script's shebang starts node itself, so its pid is the server's); its
URLs are C{/<path>?n=N} where txpipe's are C{/api/v1/pipe/<path>?n=N}.

One server of each kind, started at the beginning and warmed up with one
8 MiB transfer to 2 receivers, serves every scenario except C{scale}, which
starts a fresh (warmed-up) server of each kind per run so that its RSS
figures start from an idle process; txpipe's gets C{--max-pipes 20000}
(default 10,000; C{--max-receivers} defaults to 1000, passed explicitly).
The open-files soft limit is raised to the hard limit first, and the
servers inherit it.  Every transfer uses a path of its own.

The bulk scenarios (C{fanout}, C{throttled}, C{concurrent}, C{big}) also
run against the C epoll fan-out reference (C{c-reference}) when its binary
is at C{bench/ref/ref_fanout} (git-ignored) or given with C{--reference
BINARY} (C{--no-reference}: not at all); the source is kept outside the
repository.  The run ends with a targets line: over the four N=30 C{fanout}
cells, the geometric means of txpipe's median throughput and CPU per GiB
over the reference's, the peer's and the baseline's, and C{tls} against
the baseline.

Scenarios:

  - C{fanout}: one curl sender, N curl receivers (C{curl -sS -o /dev/null -w
    %{size_download}}) with N = 1, 10, 30, 256 MiB, sent with C{-T file} (a
    file in /dev/shm, written once) and with C{-T -} (a 64 MiB random block
    repeated into curl's stdin by a thread), receivers first or sender first
    (the second group 0.2 s after the first): 12 parameter sets.
  - C{tls}: C{fanout} over TLS, N=30, 64 MiB C{-T file}, receivers first,
    txpipe servers only (each also listens with TLS, on a throwaway
    certificate made with C{openssl}; curl runs with C{-k}).
  - C{throttled}: 3 receivers, the first with C{--limit-rate 5M}, 64 MiB
    C{-T -}, receivers first.  Also C{receiver_finish_s} (each receiver's
    finish, from the transfer's start), C{slow_finish_s} and
    C{fast_early_s}: how long before the slow receiver the first fast one
    finished (small when the server paces all receivers to the slowest; what
    remains is what kernel socket buffers hold).
  - C{tiny}: 1 KiB, n=1, Python C{http.client}, new connections each time:
    the receiver's GET is sent, then the sender's PUT (with Content-Length),
    then the receiver's response is read, then the sender's; latency is from
    the start to both read, and the body must equal the payload.  Both
    servers accept either arrival order; the GET is simply sent first.
    C{threads=1}: 1000 transfers in sequence; C{threads=20}: 20 threads, each
    the same loop on its own paths, 1000 in all.  20 warm-up transfers
    first.  C{transfers_per_s}, C{p50_ms}, C{p99_ms}, C{cpu_ms_per_transfer}.
  - C{concurrent}: 50 pipes at once, each 3 receivers of 4 MiB of its own
    content (the random block from a different offset, C{-T file}), all 200
    curls started in one go; each repetition runs it once receivers first
    and once senders first (C{order}), so C{--concurrent-reps 20} is 10 of
    each.  Receivers' stdout is hashed (SHA-256) by a thread; after 60 s what
    is left is killed and counted as hung.  C{failures} (failed parties),
    C{failed_pipes}, C{hung}, C{failure_kinds} (hung, truncated, hash
    mismatch, curl exit code).
  - C{scale}, C{part=waiting}: 10,000 receivers on 10,000 paths as raw
    non-blocking sockets (C{selectors}), each sending its GET; wait until the
    server's open files (/proc/PID/fd) grew by 10,000 (give or take 10) or
    30 s (C{reached_s}), 1 s more, then C{rss_held_mib} and
    C{kib_per_receiver}; C{answered_early} counts sockets the server answered
    or closed meanwhile (should be 0).  Then all close, and C{released_s} is
    how long the server took to fall back to its files before.
  - C{scale}, C{part=fanout}: one pipe, n=1000 raw-socket receivers
    (C{Connection: close}), all connected first, then one C{http.client}
    sender of 1 MiB; C{time_s} from the sender's start until every receiver
    read to EOF (the Python client reading 1000 sockets is a large part of
    it); each response parsed (status, Content-Length or chunked) and its
    body's SHA-256 checked: C{completed}.
  - C{big}: 4 GiB C{-T -} to 3 curl receivers, 1 repetition per server:
    C{rss_before_mib}, C{rss_peak_mib}, C{rss_end_mib}, C{rss_timeline_mib}
    (about 40 samples), and C{fanout_256_rss_growth_mib}, the median RSS
    growth of the same server in this invocation's 256 MiB fan-out runs.

Per run it prints one JSON line (C{server}, C{scenario}, C{params}, C{rep},
C{fresh_server}, then the metrics).  Common metrics: C{wall_s} (for curl
transfers, from the start of the group that completes the pipe, so the
0.2 s between the groups is not counted); C{delivered_mib_s} (bytes all
receivers got, summed, over C{wall_s}); C{cpu_s} and C{cpu_s_per_gib}
(server utime+stime from /proc/PID/stat, 10 ms resolution, per GiB
delivered); C{rss_before_mib}; C{rss_peak_mib} (VmRSS sampled every 50 ms
by a thread); C{hwm_peak_mib} (VmHWM, reset through /proc/PID/clear_refs
at the start: the exact peak); C{rss_growth_mib} (sampled peak minus
before); C{rss_end_mib}; C{write_bytes} (server disk writes, /proc/PID/io);
C{ok}: every receiver got exactly the right bytes (byte count, or SHA-256
in C{concurrent} and C{scale}) and every client ended well (curl exit 0,
status 200); C{problems} or C{errors} say what did not.  Lines of either
server's log that look like trouble (errors, transfers that did not
complete, aborted receivers) are printed as C{{"server_log": ...}}.

At the end a table gives, per scenario, parameter set and server, how many
runs were ok, and the median and (min..max) of the main metrics, with the
ratio of the medians txpipe/piping-server; then the same as
C{{"summary": ...}} JSON lines.
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from _bulk import run_big, run_fanout, run_throttled
from _harness import (
    BASELINE,
    BLOCK,
    FLOOR,
    PEER,
    PEER_INSTALL,
    PEER_NAME,
    REFERENCE,
    REFERENCE_BINARY,
    REFERENCE_BUILD,
    TXPIPE,
    Bench,
    Metrics,
    Params,
    make_tls_files,
    raise_file_limit,
    versions,
)
from _report import print_table, print_targets, summarize, targets
from _scale import run_scale_fanout, run_scale_waiting
from _small import run_concurrent, run_tiny
from _twistd import ChildServer


@dataclass
class Scenario:
    """A named scenario: its parameter sets, repetitions and summary."""

    name: str
    run: Callable[[Bench, ChildServer, Params], Metrics]
    param_sets: Callable[[argparse.Namespace], List[Params]]
    reps: Callable[[argparse.Namespace], int]
    summary: List[Tuple[str, str]]
    fresh: bool = False
    txpipe_options: List[str] = field(default_factory=list)
    #: Whether C{--floor} runs it against the twisted.web floor too.
    floor: bool = False
    #: Whether it runs against the C reference too (bulk scenarios).
    reference: bool = False
    #: Whether only txpipe servers run it (not the peer).
    txpipe_only: bool = False

    def runs_on(self, kind: str) -> bool:
        """Whether a server of C{kind} runs this scenario."""
        if kind == FLOOR:
            return self.floor
        if kind == REFERENCE:
            return self.reference
        if kind == PEER_NAME:
            return not self.txpipe_only
        return True


def fanout_sets(args: argparse.Namespace) -> List[Params]:
    return [
        {"size_mib": 32 if args.quick else 256, "receivers": n, "upload": u, "order": o}
        for n in args.receivers
        for u in ("file", "stdin")
        for o in ("receivers_first", "sender_first")
    ]


THROUGHPUT = [
    ("delivered_mib_s", "MiB/s"),
    ("wall_s", "wall s"),
    ("cpu_s_per_gib", "CPU s/GiB"),
    ("rss_peak_mib", "peak RSS MiB"),
    ("hwm_peak_mib", "VmHWM MiB"),
    ("rss_growth_mib", "RSS growth MiB"),
    ("write_bytes", "disk writes"),
]

SCENARIOS = [
    Scenario(
        "fanout", run_fanout, fanout_sets, lambda a: a.reps, THROUGHPUT, reference=True
    ),
    Scenario(
        "tls",
        run_fanout,
        lambda a: [
            {
                "size_mib": 16 if a.quick else 64,
                "receivers": 30,
                "upload": "file",
                "order": "receivers_first",
                "tls": True,
            }
        ],
        lambda a: a.reps,
        THROUGHPUT,
        txpipe_only=True,
    ),
    Scenario(
        "throttled",
        run_throttled,
        lambda a: [{"size_mib": 16 if a.quick else 64, "receivers": 3, "limit": "5M"}],
        lambda a: a.reps,
        [
            ("wall_s", "wall s"),
            ("slow_finish_s", "slow done s"),
            ("fast_early_s", "fast early s"),
            ("cpu_s_per_gib", "CPU s/GiB"),
            ("rss_peak_mib", "peak RSS MiB"),
            ("rss_growth_mib", "RSS growth MiB"),
        ],
        reference=True,
    ),
    Scenario(
        "tiny",
        run_tiny,
        lambda a: [
            {"size": 1024, "count": a.tiny_count, "threads": t} for t in (1, 20)
        ],
        lambda a: a.reps,
        [
            ("transfers_per_s", "transfers/s"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("cpu_ms_per_transfer", "CPU ms/transfer"),
            ("rss_peak_mib", "peak RSS MiB"),
            ("failures", "failures"),
        ],
        floor=True,
    ),
    Scenario(
        "concurrent",
        run_concurrent,
        lambda a: [
            {
                "pipes": 50,
                "receivers": 3,
                "size_mib": 4,
                "upload": "file",
                "order": order,
                "timeout_s": 60,
            }
            for order in ("receivers_first", "senders_first")
        ],
        lambda a: max(1, a.concurrent_reps // 2),
        [
            ("wall_s", "wall s"),
            ("failures", "failed parties"),
            ("failed_pipes", "failed pipes"),
            ("hung", "hung parties"),
            ("delivered_mib_s", "MiB/s"),
            ("cpu_s_per_gib", "CPU s/GiB"),
            ("rss_peak_mib", "peak RSS MiB"),
        ],
        reference=True,
    ),
    Scenario(
        "scale",
        lambda b, s, p: SCALE_RUNS[p["part"]](b, s, p),
        lambda a: [
            {"part": "waiting", "receivers": 2000 if a.quick else 10_000},
            {"part": "fanout", "receivers": 200 if a.quick else 1000, "size_mib": 1},
        ],
        lambda a: a.scale_reps,
        [
            ("rss_before_mib", "RSS before MiB"),
            ("rss_held_mib", "RSS held MiB"),
            ("kib_per_receiver", "KiB/waiting rcv"),
            ("reached_s", "all held s"),
            ("released_s", "fds freed s"),
            ("answered_early", "answered early"),
            ("time_s", "fan-out time s"),
            ("completed", "receivers ok"),
            ("rss_peak_mib", "peak RSS MiB"),
            ("rss_growth_mib", "RSS growth MiB"),
            ("cpu_s", "CPU s"),
        ],
        fresh=True,
        txpipe_options=["--max-pipes", "20000", "--max-receivers", "1000"],
    ),
    Scenario(
        "big",
        run_big,
        lambda a: [
            {"size_mib": 1024 if a.quick else 4096, "receivers": 3, "upload": "stdin"}
        ],
        lambda a: 1,
        [
            ("delivered_mib_s", "MiB/s"),
            ("cpu_s_per_gib", "CPU s/GiB"),
            ("rss_before_mib", "RSS start MiB"),
            ("rss_peak_mib", "peak RSS MiB"),
            ("hwm_peak_mib", "VmHWM MiB"),
            ("rss_end_mib", "RSS end MiB"),
            ("rss_growth_mib", "RSS growth MiB"),
            ("fanout_256_rss_growth_mib", "256MiB growth"),
            ("write_bytes", "disk writes"),
        ],
        reference=True,
    ),
]

SCALE_RUNS: Dict[str, Callable[[Bench, ChildServer, Params], Metrics]] = {
    "waiting": run_scale_waiting,
    "fanout": run_scale_fanout,
}


def run_scenario(
    bench: Bench, scenario: Scenario, shared: Dict[str, ChildServer]
) -> None:
    """
    Every repetition of every parameter set on every server, interleaved:
    repetition, then parameter set, then server, the servers' order turned
    round on every other repetition (what the first run pays for, such as
    the client's first large allocations, falls on each in turn).
    """
    param_sets = scenario.param_sets(bench.args)
    for rep in range(scenario.reps(bench.args)):
        kinds = bench.kinds if rep % 2 == 0 else bench.kinds[::-1]
        for params in param_sets:
            for kind in kinds:
                if not scenario.runs_on(kind):
                    continue
                if scenario.fresh:
                    server = bench.start(kind, scenario.txpipe_options)
                else:
                    server = shared[kind]
                # To match the run with the servers' own log lines.
                started_at = datetime.datetime.now(datetime.timezone.utc)
                try:
                    metrics = scenario.run(bench, server, params)
                finally:
                    if scenario.fresh:
                        server.stop()
                bench.emit(
                    {
                        "server": server.name,
                        "scenario": scenario.name,
                        "params": params,
                        "rep": rep,
                        "fresh_server": scenario.fresh,
                        "started_at": started_at.isoformat(timespec="milliseconds"),
                        **metrics,
                    }
                )


# -- the summary -----------------------------------------------------------


# -- main ------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reps", type=int, help="repetitions of fanout, throttled, tiny (3)"
    )
    parser.add_argument(
        "--concurrent-reps", type=int, help="repetitions of concurrent (20)"
    )
    parser.add_argument(
        "--scale-reps", type=int, default=1, help="repetitions of scale (1)"
    )
    parser.add_argument(
        "--receivers",
        default="1,10,30",
        help="fanout's numbers of receivers, comma-separated (1,10,30)",
    )
    parser.add_argument(
        "--only",
        help="comma-separated scenarios: " + ",".join(s.name for s in SCENARIOS),
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes, fewer repetitions"
    )
    parser.add_argument("--no-peer", action="store_true", help="no piping-server")
    parser.add_argument(
        "--baseline",
        metavar="PYTHON",
        help="also run, interleaved, the txpipe installed for this interpreter "
        "(a venv with an earlier version): before/after in one run",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run tiny against a stock twisted.web site that only matches "
        "a GET and a PUT (bench/floor_server.py): txpipe's cost on top of it",
    )
    parser.add_argument(
        "--reference",
        metavar="BINARY",
        help="the C epoll reference's binary (default: bench/ref/ref_fanout, "
        "run when it exists); the bulk scenarios also run against it",
    )
    parser.add_argument(
        "--no-reference", action="store_true", help="not the C reference"
    )
    parser.add_argument("--json", help="also write the JSON lines to this file")
    args = parser.parse_args()
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    if args.concurrent_reps is None:
        args.concurrent_reps = 2 if args.quick else 20
    args.tiny_count = 200 if args.quick else 1000
    args.receivers = [int(n) for n in args.receivers.split(",")]
    return args


def select(args: argparse.Namespace) -> List[Scenario]:
    if not args.only:
        return SCENARIOS
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    known = {s.name for s in SCENARIOS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown scenario {unknown}; known: {sorted(known)}")
    return [s for s in SCENARIOS if s.name in names]


def main() -> None:
    args = parse_args()
    scenarios = select(args)
    if not args.no_peer and not PEER.exists():
        print(
            f"piping-server not found at {PEER}; install it with\n\n"
            f"    {PEER_INSTALL}\n\nor run txpipe alone with --no-peer.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    raise_file_limit()
    kinds = [TXPIPE] if args.no_peer else [TXPIPE, PEER_NAME]
    if args.reference is None and REFERENCE_BINARY.exists():
        args.reference = str(REFERENCE_BINARY)
    if args.no_reference:
        args.reference = None
    if args.reference and any(s.reference for s in scenarios):
        kinds.append(REFERENCE)
    elif not args.no_reference:
        print(
            f"(no C reference: build it with `{REFERENCE_BUILD}`, or --reference)",
            file=sys.stderr,
        )
    if args.baseline:
        kinds.append(BASELINE)
    if args.floor and any(s.floor for s in scenarios):
        kinds.append(FLOOR)
    shm = Path("/dev/shm")
    json_file = open(args.json, "w") if args.json else None
    try:
        with tempfile.TemporaryDirectory(
            prefix="txpipe-compare-", dir=str(shm) if shm.is_dir() else None
        ) as tmp:
            bench = Bench(args, os.urandom(BLOCK), Path(tmp), kinds, json_file)
            if any(s.name == "tls" for s in scenarios):
                bench.tls = make_tls_files(Path(tmp))
            run_all(bench, scenarios)
        summaries = summarize(bench, scenarios)
        print_table(summaries, scenarios)
        for summary in summaries:
            bench.write({"summary": summary})
        found = targets(summaries)
        print_targets(found)
        bench.write({"targets": found})
    finally:
        if json_file is not None:
            json_file.close()


def run_all(bench: Bench, scenarios: List[Scenario]) -> None:
    """Start the shared servers, run the scenarios, stop, report server logs."""
    bench.write(
        {
            "info": {
                "versions": versions(bench.args.baseline),
                "cpus": os.cpu_count(),
                "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                "workdir": str(bench.workdir),
                "scenarios": [s.name for s in scenarios],
                "fresh_servers": [s.name for s in scenarios if s.fresh],
                "note": "one server of each kind serves every scenario but "
                "those in fresh_servers, which start a fresh (warmed-up) "
                "server of each kind per run",
            }
        }
    )
    shared: Dict[str, ChildServer] = {}
    try:
        if any(not s.fresh for s in scenarios):
            for kind in bench.kinds:
                shared[kind] = bench.start(kind)
        for scenario in scenarios:
            run_scenario(bench, scenario, shared)
    finally:
        for server in shared.values():
            server.stop()
    for server in bench.started:
        if server.trouble:
            lines = [b.decode("utf-8", "replace").rstrip() for b in server.trouble]
            bench.write(
                {
                    "server_log": {
                        "server": server.name,
                        "pid": server.pid,
                        "lines": len(lines),
                        "first": lines[:20],
                    }
                }
            )


if __name__ == "__main__":
    main()
