"""
The image run exactly as C{deploy/kubernetes/deployment.yaml} runs it: its
args, user, group and fsGroup, the Secret mounted as the kubelet mounts it
(root, group fsGroup, C{defaultMode}, links through C{..data}), its
read-only root, dropped capabilities and no privilege escalation; then its
readiness and liveness paths are probed and C{SIGTERM} ends it with status 0
well within C{terminationGracePeriodSeconds}.

The container has no network of its own but loopback, so the Deployment's
C{--listen tcp:8080} runs unchanged.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from ..helpers.container import Container, Runtime, secret_volume, start

pytestmark = pytest.mark.needs_runtime
yaml = pytest.importorskip("yaml")

DEPLOYMENT = Path(__file__).resolve().parents[2] / "deploy/kubernetes/deployment.yaml"


def deployment() -> Dict[str, Any]:
    document = yaml.safe_load(DEPLOYMENT.read_text())
    assert document["kind"] == "Deployment"
    return document  # type: ignore[no-any-return]


def container_options(pod: Dict[str, Any], tmp_path: Path) -> List[str]:
    """
    The runtime flags that do what the pod spec says.
    """
    (container,) = pod["containers"]
    pod_security = pod["securityContext"]
    security = container["securityContext"]
    options = [
        "--user",
        f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}",
        "--group-add",
        str(pod_security["fsGroup"]),
    ]
    if security["readOnlyRootFilesystem"]:
        options.append("--read-only")
    for capability in security["capabilities"]["drop"]:
        options += ["--cap-drop", capability]
    if security["allowPrivilegeEscalation"] is False:
        options += ["--security-opt", "no-new-privileges"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for mount in container["volumeMounts"]:
        secret = volumes[mount["name"]]["secret"]
        directory = secret_volume(
            tmp_path / mount["name"], 0, pod_security["fsGroup"], secret["defaultMode"]
        )
        options += ["--volume", f"{directory}:{mount['mountPath']}:ro"]
    return options


def test_the_image_runs_with_the_deployments_settings(
    runtime: Runtime, image: str, containers: List[Container], tmp_path: Path
) -> None:
    pod = deployment()["spec"]["template"]["spec"]
    (spec,) = pod["containers"]
    args = spec["args"]
    # The key file is where the args say, under the Secret's mount.
    secret_file = args[args.index("--secret-file") + 1]
    assert secret_file == spec["volumeMounts"][0]["mountPath"] + "/secret"
    drain = float(args[args.index("--drain-timeout") + 1])
    assert pod["terminationGracePeriodSeconds"] > drain + 15

    container = start(
        runtime,
        image,
        containers,
        args,
        container_options(pod, tmp_path),
        network="none",
    )
    container.wait_for_log(r"signed URLs required")
    ports = {port["name"]: port["containerPort"] for port in spec["ports"]}
    container.wait_for_log(rf"listening on .*port={ports['http']}\)")
    for probe in ("readinessProbe", "livenessProbe"):
        get = spec[probe]["httpGet"]
        port = ports.get(get["port"], get["port"])
        url = f"http://127.0.0.1:{port}{get['path']}"
        result = container.exec(
            "python",
            "-m",
            "pipe._deploy.healthcheck",
            env={"TXPIPE_HEALTHCHECK_URL": url},
        )
        assert (result.returncode, result.stdout.strip()) == (0, "200 ok"), result
    signalled = time.monotonic()
    container.signal("TERM")
    assert container.exit_status(timeout=pod["terminationGracePeriodSeconds"]) == 0
    assert time.monotonic() - signalled < pod["terminationGracePeriodSeconds"]
