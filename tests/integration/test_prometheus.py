"""
A real Prometheus scraping a real C{twistd -n pipe}: the shipped rules
(C{deploy/prometheus/}) pass C{promtool check rules} and their unit tests,
and, loaded into a Prometheus that scrapes txpipe every second, see what
curl clients did: a complete transfer, a receiver killed mid-way, a wait
timeout and a refused signature.  Prometheus' HTTP API then has the exact
counts by outcome and reason, the histograms' counts, the C{_created}
samples and the metric types; every query of the dashboard
(C{deploy/grafana/txpipe.json}) returns data; and the failure alert is
pending.

Run by C{tox -e prometheus} (C{.ci/run} installs Debian's C{prometheus},
which has C{promtool} too); skipped where Prometheus is not installed,
unless C{TXPIPE_REQUIRE_PROMETHEUS=1}.  Our own Prometheus, with its own
configuration, data directory and a free loopback port: never a system one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from pipe.signing import sign_url

from ..helpers.programs import installed_or_skip
from ..helpers.twistd import LOOPBACK, free_port, start_pipe, twistd_pipe
from ..helpers.waiting import answers, wait_until

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "txpipe.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "txpipe.rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "txpipe.json"

(PROMETHEUS, PROMTOOL), pytestmark = installed_or_skip(
    ["prometheus", "promtool"],
    ["/usr/bin", "/usr/sbin"],
    "TXPIPE_REQUIRE_PROMETHEUS",
    "prometheus",
    "Prometheus is not installed (.ci/run installs it)",
)

KEY = b"0123456789abcdef" * 4


def test_rules_pass_promtool_check() -> None:
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_and_stays_quiet_in_promtool_unit_tests() -> None:
    """
    The unit tests cover every alert of the rules file, and pass.
    """
    result = subprocess.run(
        [str(PROMTOOL), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        cwd=RULE_TESTS.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rules = RULES.read_text()
    tests = RULE_TESTS.read_text()
    alerts = [
        line.split(":", 1)[1].strip()
        for line in rules.splitlines()
        if line.strip().startswith("- alert:")
    ]
    assert alerts
    for alert in alerts:
        assert f"alertname: {alert}\n" in tests, f"{alert} has no unit test"
        assert f"- name: {alert}\n" in tests


class Prometheus:
    """Our own Prometheus process and its HTTP API."""

    def __init__(self, directory: Path, target: int) -> None:
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  evaluation_interval: 1s\n"
            f"rule_files: [{json.dumps(str(RULES))}]\n"
            "scrape_configs:\n"
            "  - job_name: txpipe\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target}']\n"
        )
        self.output = directory / "prometheus.log"
        with open(self.output, "wb") as output:
            self.process = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=directory,
            )
        wait_until(lambda: answers(self.port, "/-/ready"), "Prometheus to be ready", 60)

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> List[Dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return data["result"]  # type: ignore[no-any-return]

    def values(self, expr: str, label: Optional[str] = None) -> Dict[str, float]:
        """C{expr}'s samples by the value of C{label} (or C{""})."""
        return {
            (sample["metric"].get(label, "") if label else ""): float(
                sample["value"][1]
            )
            for sample in self.query(expr)
        }

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def txpipe(tmp_path: Path) -> Iterator[Dict[str, Any]]:
    """A signing txpipe with a metrics listener, on ports it picks."""
    keys = tmp_path / "keys"
    keys.write_bytes(KEY + b"\n")
    keys.chmod(0o600)
    log = tmp_path / "txpipe.log"
    process, (port, metrics), _ = start_pipe(
        twistd_pipe(
            LOOPBACK,
            "--metrics-listen",
            LOOPBACK,
            "--secret-file",
            str(keys),
            "--require-signature",
            "send",
            log=str(log),
        ),
        tmp_path,
        log=log,
        listeners=2,
    )
    try:
        yield {"port": port, "metrics": metrics, "log": log}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture
def prometheus(tmp_path: Path, txpipe: Dict[str, Any]) -> Iterator[Prometheus]:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    started = Prometheus(directory, txpipe["metrics"])
    try:
        yield started
    finally:
        started.stop()


def status(port: int) -> Dict[str, Any]:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{port}/api/v1/status", timeout=5
    ) as response:
        return json.load(response)  # type: ignore[no-any-return]


def curl(*args: str) -> List[str]:
    return ["curl", "-sS", "--max-time", "60", *args]


def drive(port: int, tmp_path: Path) -> None:
    """
    One complete transfer (n=2), one whose throttled receiver is killed
    mid-way (the other completes), one receiver whose wait runs out, and
    one sender whose signature was tampered with.
    """
    base = f"http://127.0.0.1:{port}/api/v1/pipe/"
    upload = tmp_path / "upload"
    upload.write_bytes(os.urandom(64 * 1024))
    big = tmp_path / "big"
    big.write_bytes(os.urandom(32 * 1024 * 1024))

    def signed(path: str) -> str:
        return sign_url(base + path + "?n=2", KEY, "send", 300)

    # Complete.
    receivers = [
        subprocess.Popen(curl("-f", "-o", os.devnull, base + "done?n=2"))
        for _ in range(2)
    ]
    wait_until(lambda: status(port)["receivers_connected"] == 2, "receivers")
    sent = subprocess.run(curl("-f", "-T", str(upload), signed("done")), timeout=90)
    assert sent.returncode == 0
    assert [r.wait(timeout=60) for r in receivers] == [0, 0]

    # A receiver killed mid-way.
    slow = subprocess.Popen(
        curl("--limit-rate", "20k", "-o", os.devnull, base + "lost?n=2")
    )
    fast = subprocess.Popen(curl("-f", "-o", os.devnull, base + "lost?n=2"))
    wait_until(lambda: status(port)["receivers_connected"] == 2, "receivers")
    sender = subprocess.Popen(curl("-T", str(big), "-o", os.devnull, signed("lost")))
    wait_until(lambda: status(port)["pipes_running"] == 1, "the transfer to run")
    slow.send_signal(signal.SIGKILL)
    slow.wait(timeout=10)
    assert fast.wait(timeout=60) == 0
    sender.wait(timeout=60)

    # A wait timeout.
    timed_out = subprocess.run(
        curl("-o", os.devnull, "-w", "%{http_code}", base + "alone?n=1&wait=1"),
        capture_output=True,
        timeout=30,
    )
    assert timed_out.stdout == b"504"

    # A refused signature.
    url = signed("forged")
    forged = url[:-1] + ("0" if url[-1] != "0" else "1")
    refused = subprocess.run(
        curl("-o", os.devnull, "-w", "%{http_code}", "-T", str(upload), forged),
        capture_output=True,
        timeout=30,
    )
    assert refused.stdout == b"403"


def dashboard_queries() -> List[str]:
    """Every query of the dashboard, with Grafana's variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in [
                ("$__rate_interval", "5m"),
                ("$__interval", "15s"),
                ("$__range", "5m"),
                ("$instance", ".*"),
            ]:
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"a variable the test does not fill: {expr}"
            queries.append(expr)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["definition"])
    return queries


def test_a_real_prometheus_sees_what_txpipe_did(
    txpipe: Dict[str, Any], prometheus: Prometheus, tmp_path: Path
) -> None:
    # Scraped twice before anything happens: every counter starts at 0 in
    # Prometheus, so rate() and increase() see the first event.
    wait_until(
        lambda: prometheus.values("count_over_time(txpipe_info[1m])").get("", 0) >= 2,
        "two scrapes",
        60,
    )
    drive(txpipe["port"], tmp_path)
    expected = {"complete": 1.0, "receiver_lost": 1.0}
    ended = status(txpipe["port"])["transfers"]
    assert {k: v for k, v in ended.items() if v} == expected, ended

    def scraped() -> bool:
        seen = prometheus.values("txpipe_rejections_total", "reason")
        return (
            prometheus.values("sum(txpipe_transfers_total)").get("") == 2
            and seen.get("signature_mismatch") == 1
        )

    wait_until(scraped, "Prometheus to scrape the transfers", 30)

    # Counters: exact counts by outcome and reason, every outcome exported.
    outcomes = prometheus.values("txpipe_transfers_total", "outcome")
    assert {k: v for k, v in outcomes.items() if v} == expected
    assert set(outcomes) >= {
        "complete",
        "receiver_lost",
        "wait_timeout",
        "server_error",
    }
    reasons = prometheus.values("txpipe_rejections_total", "reason")
    assert {k: v for k, v in reasons.items() if v} == {"signature_mismatch": 1.0}
    assert set(reasons) >= {"signature_used", "too_many_connections"}
    assert prometheus.values("txpipe_wait_timeouts_total") == {"": 1.0}
    assert prometheus.values("txpipe_receivers_stalled_total") == {"": 0.0}
    # Histograms: each party of the two started transfers waited (3 + 3);
    # two transfers ran.
    assert prometheus.values("txpipe_wait_seconds_count") == {"": 6.0}
    assert prometheus.values('txpipe_wait_seconds_bucket{le="+Inf"}') == {"": 6.0}
    assert prometheus.values("txpipe_transfer_duration_seconds_count") == {"": 2.0}
    assert prometheus.values("txpipe_transfer_duration_seconds_sum")[""] > 0
    # _created: when each series began (the server's start), usable as a
    # timestamp in queries.
    now = time.time()
    for name in ("txpipe_transfers_created", "txpipe_wait_seconds_created"):
        created = prometheus.values(f"time() - {name}")
        assert created and all(0 <= age < 600 for age in created.values()), (
            name,
            created,
            now,
        )
    # Types, as Prometheus read them from the scrape.
    metadata = prometheus.api("targets/metadata", match_target='{job="txpipe"}')
    types = {entry["metric"]: entry["type"] for entry in metadata}
    for family, kind in [
        ("txpipe_transfers", "counter"),
        ("txpipe_rejections", "counter"),
        ("txpipe_wait_seconds", "histogram"),
        ("txpipe_transfer_duration_seconds", "histogram"),
        ("txpipe_pipes", "gauge"),
        ("txpipe_info", "gauge"),
    ]:
        assert types.get(family, types.get(family + "_total")) == kind, (family, types)

    # The rules loaded and evaluate without error.
    groups = prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == RULES.read_text().count("- alert:") + RULES.read_text().count(
        "- record:"
    )
    assert all(rule["health"] == "ok" for rule in rules), rules

    # The dashboard's every query runs and finds data.
    for expr in dashboard_queries():
        if expr.startswith("label_values("):
            assert prometheus.api("label/instance/values", **{"match[]": "txpipe_info"})
            continue
        assert prometheus.query(expr), f"the dashboard's query found nothing: {expr}"

    # The induced failure: the failure-ratio alert is pending (for: 15m).
    def alerting() -> bool:
        alerts = prometheus.api("alerts")["alerts"]
        return any(
            a["labels"]["alertname"] == "TxpipeTransfersFailing"
            and a["state"] in ("pending", "firing")
            for a in alerts
        )

    wait_until(alerting, "TxpipeTransfersFailing to be pending", 30)
