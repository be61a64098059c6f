"""
C{deploy/kubernetes/*.yaml} checked against the Kubernetes API's own types,
with no cluster: every object is walked against the attribute maps and
field types that the official C{kubernetes} Python client generates from
the API's OpenAPI specification, so a misspelled, misplaced or mistyped
field, or a missing required one, fails here as C{kubectl apply} would
refuse it.  (Skipped where the C{kubernetes} package is not installed;
C{tox -e container} installs it.)
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Dict, List, Set

import pytest

yaml = pytest.importorskip("yaml")
client = pytest.importorskip("kubernetes.client")

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"

#: The kinds the manifests use, by apiVersion and kind.
TYPES = {
    ("apps/v1", "Deployment"): "V1Deployment",
    ("v1", "Service"): "V1Service",
    ("networking.k8s.io/v1", "Ingress"): "V1Ingress",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
}


def required_fields(cls: Any) -> Set[str]:
    """
    The Python names of C{cls}'s required fields: from its pydantic fields
    (client 35 and newer) or by constructing it without them (older).
    """
    fields = getattr(cls, "model_fields", None)
    if fields is not None:
        return {name for name, field in fields.items() if field.is_required()}
    required = set()
    configuration = client.Configuration()
    configuration.client_side_validation = True
    for name in cls.openapi_types:
        values = {other: "x" for other in cls.openapi_types if other != name}
        try:
            cls(local_vars_configuration=configuration, **values)
        except ValueError as error:
            if f"`{name}`" in str(error) and "None" in str(error):
                required.add(name)
        except Exception:
            pass
    return required


# The client's container types: list[T] and dict(str, T) before version 35,
# List[T] and Dict[str, T] since.
_LIST = re.compile(r"[Ll]ist\[(.+)\]")
_DICT = re.compile(r"dict\(str, (.+)\)|Dict\[str, (.+)\]")


def check(value: Any, type_name: str, where: str) -> List[str]:
    """
    Every way C{value} is not a C{type_name} (an OpenAPI type name of the
    client: C{V1PodSpec}, C{List[V1Container]}, C{Dict[str, str]}, C{str},
    C{int}, C{bool}, C{object} for int-or-string and quantities).
    """
    listed = _LIST.fullmatch(type_name)
    if listed:
        if not isinstance(value, list):
            return [f"{where}: a list expected, got {value!r}"]
        inner = listed.group(1)
        return [
            e for i, v in enumerate(value) for e in check(v, inner, f"{where}[{i}]")
        ]
    mapped = _DICT.fullmatch(type_name)
    if mapped:
        if not isinstance(value, dict):
            return [f"{where}: a mapping expected, got {value!r}"]
        inner = mapped.group(1) or mapped.group(2)
        return [e for k, v in value.items() for e in check(v, inner, f"{where}.{k}")]
    simple = {
        "str": (str,),
        "int": (int,),
        "float": (int, float),
        "bool": (bool,),
        "datetime": (str,),
        "bytes": (str,),
        "date": (str,),
        "object": (str, int, dict, list),
    }
    if type_name in simple:
        ok = isinstance(value, simple[type_name])
        if type_name in ("int", "float") and isinstance(value, bool):
            ok = False
        return [] if ok else [f"{where}: {type_name} expected, got {value!r}"]
    cls = getattr(client, type_name)
    if not isinstance(value, dict):
        return [f"{where}: a {type_name} mapping expected, got {value!r}"]
    by_json = {json: python for python, json in cls.attribute_map.items()}
    errors = []
    for key, item in value.items():
        if key not in by_json:
            errors.append(f"{where}.{key}: no such field in {type_name}")
            continue
        python = by_json[key]
        errors += check(item, cls.openapi_types[python], f"{where}.{key}")
    for python in sorted(required_fields(cls)):
        if cls.attribute_map[python] not in value:
            errors.append(f"{where}: {type_name} needs {cls.attribute_map[python]!r}")
    return errors


def check_document(document: Dict[str, Any], where: str) -> List[str]:
    key = (document.get("apiVersion"), document.get("kind"))
    if key not in TYPES:
        return [f"{where}: unknown apiVersion/kind {key}"]
    return check(document, TYPES[key], where)  # type: ignore[index]


def documents() -> List[Any]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for number, document in enumerate(yaml.safe_load_all(path.read_text())):
            found.append(pytest.param(document, id=f"{path.name}#{number}"))
    return found


def test_every_kind_is_there() -> None:
    kinds = {param.values[0]["kind"] for param in documents()}
    assert kinds == {kind for _, kind in TYPES}


@pytest.mark.parametrize("document", documents())
def test_manifest_matches_the_api_types(document: Dict[str, Any]) -> None:
    assert check_document(document, document["kind"]) == []


def the_deployment() -> Dict[str, Any]:
    return yaml.safe_load((MANIFESTS / "deployment.yaml").read_text())  # type: ignore[no-any-return]


def pod(document: Dict[str, Any]) -> Dict[str, Any]:
    return document["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def misspelled(document: Dict[str, Any]) -> None:
    container = pod(document)["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")


def misplaced(document: Dict[str, Any]) -> None:
    # fsGroup belongs to the pod's securityContext, not the container's.
    pod(document)["containers"][0]["securityContext"]["fsGroup"] = 10001


def mistyped(document: Dict[str, Any]) -> None:
    pod(document)["terminationGracePeriodSeconds"] = "80"


def missing(document: Dict[str, Any]) -> None:
    del pod(document)["containers"][0]["name"]


@pytest.mark.parametrize(
    "breakage, complaint",
    [
        (misspelled, r"containers\[0\]\.readinesProbe: no such field"),
        (misplaced, r"securityContext\.fsGroup: no such field in V1SecurityContext"),
        (mistyped, r"terminationGracePeriodSeconds: int expected"),
        (missing, r"containers\[0\]: V1Container needs 'name'"),
    ],
)
def test_the_check_fails_a_broken_deployment(breakage: Any, complaint: str) -> None:
    """
    The check is not one that cannot fail.
    """
    document = copy.deepcopy(the_deployment())
    breakage(document)
    errors = check_document(document, "Deployment")
    assert any(re.search(complaint, error) for error in errors), errors


def test_the_deployment_is_hardened_and_outlasts_its_drain() -> None:
    spec = pod(the_deployment())
    security = spec["securityContext"]
    (container,) = spec["containers"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] != 0
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # The Secret as txpipe accepts it: root-owned, readable by fsGroup only.
    (volume,) = spec["volumes"]
    assert volume["secret"]["defaultMode"] == 0o440
    args = container["args"]
    drain = float(args[args.index("--drain-timeout") + 1])
    # The process exits within --drain-timeout plus 15 s (docs/usage.md).
    assert spec["terminationGracePeriodSeconds"] > drain + 15
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    assert set(container["resources"]) == {"requests", "limits"}


def the_network_policy() -> Dict[str, Any]:
    return yaml.safe_load((MANIFESTS / "networkpolicy.yaml").read_text())  # type: ignore[no-any-return]


def test_the_network_policy_admits_only_the_controller_and_the_scraper() -> None:
    """
    The pods take connections from the ingress controller on the http port
    and from Prometheus on the metrics port, and from nobody else: a CI
    runner on the same pod network cannot reach a pod directly, so
    trusting the pod network's X-Forwarded-For trusts the controller alone.
    """
    deployment = the_deployment()
    policy = the_network_policy()["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"] == {"matchLabels": labels}
    assert policy["policyTypes"] == ["Ingress"]
    (container,) = pod(deployment)["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    admitted = {}
    for rule in policy["ingress"]:
        # An empty or missing "from" would admit every peer.
        (peer,) = rule["from"]
        assert set(peer) == {"namespaceSelector", "podSelector"}
        assert peer["namespaceSelector"]["matchLabels"]
        assert peer["podSelector"]["matchLabels"]
        (port,) = rule["ports"]
        assert port["port"] in ports and port["protocol"] == "TCP"
        admitted[port["port"]] = peer["podSelector"]["matchLabels"]
    assert admitted == {
        "http": {
            "app.kubernetes.io/name": "ingress-nginx",
            "app.kubernetes.io/component": "controller",
        },
        "metrics": {"app.kubernetes.io/name": "prometheus"},
    }
    # The metrics port is where txpipe serves its metrics, and nothing else.
    args = container["args"]
    listen = args[args.index("--metrics-listen") + 1]
    assert listen == f"tcp:{ports['metrics']}"
    assert args[args.index("--listen") + 1] == f"tcp:{ports['http']}"
