"""The Kubernetes objects of a rack (its trays, its controller, its monitoring) and of what a
fleet shares (the Grafana dashboards and the Prometheus rules), as plain dicts.

Every tray is its own pod (a Deployment of one, `Recreate`: never two agents of one tray at
once) behind a Service of the tray's name, so a rack's pods find each other by stable DNS
names within the rack's namespace (`switch-1:20100`), whatever node they land on. Every pod
has its own address, so every tray serves on the same ports: gRPC 20100, /metrics 20101, and
on switch trays the framed data plane 20102 (which compute trays reach at the switch tray's
Service name: `Switch.GetForwardEndpoint` answers 0.0.0.0:20102 and they keep the host they
found the switch at). The controller is a StatefulSet of one with a PersistentVolumeClaim for
its SQLite desired state, behind the Service `controller` (gRPC 20051, /metrics 20052).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fusionrack import __version__
from fusionrack.auth import ROLES, SECRET_FILE, TOKEN_FILES
from fusionrack.emulator import Topology, TrayKind, load_manifest

__all__ = [
    "AUTH_SECRET",
    "CONTROLLER_METRICS_PORT",
    "CONTROLLER_PORT",
    "DATA_PLANE_PORT",
    "GRPC_PORT",
    "IMAGE",
    "METRICS_PORT",
    "SHARED_NAMESPACE",
    "RackSpec",
    "controller_objects",
    "dashboard_configmaps",
    "manifest_configmap",
    "namespace",
    "pod_monitor",
    "prometheus_rule",
    "rack_namespace",
    "tray_objects",
]

IMAGE = f"fusionrack:{__version__}"  # built from the repository's Dockerfile
GRPC_PORT = 20100
METRICS_PORT = 20101
DATA_PLANE_PORT = 20102
CONTROLLER_PORT = 20051  # as `fusionctl rack up`: /metrics on the port after
CONTROLLER_METRICS_PORT = 20052
# Every pod binds all its interfaces: its own address is the only way in.
BIND = "0.0.0.0"

AUTH_SECRET = "fusionrack-auth"  # the rack secret and the API's tokens (one per rack)
AUTH_DIR = "/etc/fusionrack/auth"
MANIFEST_CONFIGMAP = "fusionrack-manifest"
MANIFEST_DIR = "/etc/fusionrack/manifest"
MANIFEST_FILE = "rack.yaml"
STATE_DIR = "/var/lib/fusionrack"
STATE_SIZE = "1Gi"  # SQLite needs kilobytes; 1Gi is the smallest many storage classes give

SHARED_NAMESPACE = "fusionrack"  # dashboards and rules, one copy for every rack
NAMESPACE_PREFIX = "fusionrack-"
PART_OF = {"app.kubernetes.io/part-of": "fusionrack"}
# Pod labels the PodMonitor turns into the target labels `fusionctl rack up` writes in its
# file_sd targets (rack, tray, kind): the alerts read `up` by them.
RACK_LABEL = "fusionrack/rack"
TRAY_LABEL = "fusionrack/tray"
KIND_LABEL = "fusionrack/kind"
SCRAPE_INTERVAL = "15s"  # `rack up` scrapes every 5 s; a shared cluster Prometheus less often
UID = 10001  # the image's user (Dockerfile)

# A Service name is a DNS-1035 label; a namespace a DNS-1123 label (63 characters at most).
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class RackSpec:
    """One rack of a fleet: its name, its manifest (a preset's name or a file), its options."""

    name: str
    manifest: str
    mqtt: str | None = None
    dcgm_compat: bool = False

    def topology(self) -> Topology:
        return Topology(load_manifest(self.manifest, self.name))

    @property
    def manifest_file(self) -> Path | None:
        """The manifest's file, None for a preset (the image has the presets)."""
        path = Path(self.manifest)
        return path if path.suffix in (".yaml", ".yml") or path.exists() else None

    @property
    def manifest_argument(self) -> str:
        """What `--manifest` says in the pods."""
        return f"{MANIFEST_DIR}/{MANIFEST_FILE}" if self.manifest_file else self.manifest


def rack_namespace(rack: str) -> str:
    name = NAMESPACE_PREFIX + rack
    if len(name) > 63 or not _DNS_LABEL.match(name):
        raise ValueError(
            f"rack name {rack!r}: a rack's namespace {name!r} must be a DNS label "
            "(lowercase letters, digits and '-', 63 characters at most)"
        )
    return name


def _service_name(tray: str) -> str:
    if len(tray) > 63 or not _DNS_LABEL.match(tray):
        raise ValueError(
            f"tray {tray!r}: its Service is named after it, so the name must be a DNS-1035 "
            "label (lowercase letters, digits and '-', starting with a letter)"
        )
    return tray


def _meta(name: str, namespace: str | None, labels: Mapping[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = dict(labels)
    return meta


def namespace(name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": _meta(name, None, {**PART_OF, **(labels or {})}),
    }


def _port(name: str, number: int) -> dict[str, Any]:
    return {"name": name, "containerPort": number, "protocol": "TCP"}


def _grpc_probes(port: int) -> dict[str, Any]:
    """Readiness and liveness through the gRPC health service every server registers (open to
    all callers, secret or not). Liveness is lenient: a restart loses the tray's HBM."""
    return {
        "readinessProbe": {"grpc": {"port": port}, "periodSeconds": 5, "timeoutSeconds": 2},
        "livenessProbe": {
            "grpc": {"port": port},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
    }


def _container(
    name: str,
    command: str,
    args: Sequence[str],
    ports: Sequence[dict[str, Any]],
    mounts: Sequence[dict[str, Any]],
    probe_port: int,
    memory: tuple[str, str],
) -> dict[str, Any]:
    request, limit = memory
    return {
        "name": name,
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": [command],
        "args": list(args),
        "ports": list(ports),
        **_grpc_probes(probe_port),
        # No CPU limit: throttling shows as latency spikes; memory is bounded (a tray that
        # outgrows it is killed, which is a tray loss, as on hardware).
        "resources": {
            "requests": {"cpu": "20m", "memory": request},
            "limits": {"memory": limit},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [*mounts, {"name": "tmp", "mountPath": "/tmp"}],
    }


def _pod_spec(containers: list[dict[str, Any]], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        # The pods never call the Kubernetes API, and need no Service variables.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 15,
        # The restricted Pod Security Standard.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": containers,
        # The root file system is read-only: /tmp is the pod's own (SQLite and Python's
        # tempfile put scratch files there).
        "volumes": [*volumes, {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }


def _auth_volume(keys: Sequence[str]) -> dict[str, Any]:
    return {
        "name": "auth",
        "secret": {
            "secretName": AUTH_SECRET,
            "defaultMode": 0o440,  # root and the pod's group (fsGroup) only
            "items": [{"key": key, "path": key} for key in keys],
        },
    }


def _manifest_volumes(rack: RackSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts) that bring a manifest file into the pods (none for a preset)."""
    if rack.manifest_file is None:
        return [], []
    volume = {"name": "manifest", "configMap": {"name": MANIFEST_CONFIGMAP}}
    return [volume], [{"name": "manifest", "mountPath": MANIFEST_DIR, "readOnly": True}]


def _common_args(rack: RackSpec) -> list[str]:
    args = ["--manifest", rack.manifest_argument, "--rack-name", rack.name]
    return [*args, "--mqtt", rack.mqtt] if rack.mqtt else args


def _rack_labels(rack: RackSpec, kind: str) -> dict[str, str]:
    return {**PART_OF, RACK_LABEL: rack.name, KIND_LABEL: kind}


def _service(
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    selector: Mapping[str, str],
    ports: Sequence[tuple[str, int]],
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, namespace, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [
                {"name": port_name, "port": number, "targetPort": port_name, "protocol": "TCP"}
                for port_name, number in ports
            ],
        },
    }


def tray_objects(rack: RackSpec, topology: Topology) -> list[dict[str, Any]]:
    """A Deployment of one pod and a Service for every tray of the rack, in slot order."""
    ns = rack_namespace(rack.name)
    switches = [t.name for t in topology.trays_of_kind(TrayKind.SWITCH)]
    manifest_volumes, manifest_mounts = _manifest_volumes(rack)
    objects: list[dict[str, Any]] = []
    for tray in topology.trays:
        service = _service_name(tray.name)
        kind = tray.kind.name.lower()
        labels = {
            **_rack_labels(rack, kind),
            "app.kubernetes.io/name": "fusion-agent",
            "app.kubernetes.io/component": f"{kind}-tray",
            TRAY_LABEL: tray.name,
        }
        selector = {RACK_LABEL: rack.name, TRAY_LABEL: tray.name}
        ports = [("grpc", GRPC_PORT), ("metrics", METRICS_PORT)]
        args = [
            *_common_args(rack),
            "--tray",
            tray.name,
            "--listen",
            f"{BIND}:{GRPC_PORT}",
            "--metrics",
            f"{BIND}:{METRICS_PORT}",
            "--rack-secret-file",
            f"{AUTH_DIR}/{SECRET_FILE}",
        ]
        if tray.kind == TrayKind.SWITCH:
            ports.append(("data-plane", DATA_PLANE_PORT))
            args += ["--forward", f"{BIND}:{DATA_PLANE_PORT}"]
        else:
            # The switch trays' Services: without these a compute tray would look for them
            # on 127.0.0.1 (the base-port scheme).
            for switch in switches:
                args += ["--switch", f"{switch}={_service_name(switch)}:{GRPC_PORT}"]
        if rack.dcgm_compat:
            args.append("--dcgm-compat")
        # A compute tray's memory is what clients store in its accelerators' HBM.
        memory = ("96Mi", "2Gi") if tray.kind == TrayKind.COMPUTE else ("96Mi", "512Mi")
        container = _container(
            "agent",
            "fusion-agent",
            args,
            [_port(n, p) for n, p in ports],
            [{"name": "auth", "mountPath": AUTH_DIR, "readOnly": True}, *manifest_mounts],
            GRPC_PORT,
            memory,
        )
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(tray.name, ns, labels),
            "spec": {
                "replicas": 1,
                # Recreate: the old pod is gone before the new one starts, so two agents of
                # one tray never talk to the switches at once.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": _pod_spec(
                        [container], [_auth_volume([SECRET_FILE]), *manifest_volumes]
                    ),
                },
            },
        }
        objects += [deployment, _service(service, ns, labels, selector, ports)]
    return objects


def controller_objects(rack: RackSpec, topology: Topology) -> list[dict[str, Any]]:
    """The controller's Service and its StatefulSet of one, whose PersistentVolumeClaim keeps
    the desired state across restarts and rescheduling (and outlives the StatefulSet)."""
    ns = rack_namespace(rack.name)
    labels = {
        **_rack_labels(rack, "controller"),
        "app.kubernetes.io/name": "fusion-controller",
        "app.kubernetes.io/component": "controller",
    }
    selector = {RACK_LABEL: rack.name, "app.kubernetes.io/component": "controller"}
    ports = [("grpc", CONTROLLER_PORT), ("metrics", CONTROLLER_METRICS_PORT)]
    args = [
        *_common_args(rack),
        "--listen",
        f"{BIND}:{CONTROLLER_PORT}",
        "--metrics",
        f"{BIND}:{CONTROLLER_METRICS_PORT}",
        "--state",
        f"{STATE_DIR}/controller.sqlite",
        "--rack-secret-file",
        f"{AUTH_DIR}/{SECRET_FILE}",
        "--admin-token-file",
        f"{AUTH_DIR}/{TOKEN_FILES['admin']}",
        "--read-only-token-file",
        f"{AUTH_DIR}/{TOKEN_FILES['read-only']}",
    ]
    for tray in topology.trays:
        args += ["--agent", f"{tray.name}={_service_name(tray.name)}:{GRPC_PORT}"]
    manifest_volumes, manifest_mounts = _manifest_volumes(rack)
    mounts = [
        {"name": "state", "mountPath": STATE_DIR},
        {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True},
        *manifest_mounts,
    ]
    container = _container(
        "controller",
        "fusion-controller",
        args,
        [_port(n, p) for n, p in ports],
        mounts,
        CONTROLLER_PORT,
        ("128Mi", "512Mi"),
    )
    keys = [SECRET_FILE, *(TOKEN_FILES[role] for role in ROLES)]
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta("controller", ns, labels),
        "spec": {
            # One writer of the SQLite file: a StatefulSet never runs two pods of one ordinal.
            "replicas": 1,
            "serviceName": "controller",
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels},
                "spec": _pod_spec([container], [_auth_volume(keys), *manifest_volumes]),
            },
            "volumeClaimTemplates": [
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "state", "labels": labels},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": STATE_SIZE}},
                    },
                }
            ],
        },
    }
    return [_service("controller", ns, labels, selector, ports), statefulset]


def manifest_configmap(rack: RackSpec) -> dict[str, Any]:
    """The rack's manifest file, for a rack that is not a preset."""
    assert rack.manifest_file is not None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(MANIFEST_CONFIGMAP, rack_namespace(rack.name), {**PART_OF}),
        "data": {MANIFEST_FILE: rack.manifest_file.read_text(encoding="utf-8")},
    }


def _relabel(label: str, target: str) -> dict[str, Any]:
    """Copy a pod label onto the target: Prometheus names it __meta_kubernetes_pod_label_ and
    the label's name with every character outside [a-zA-Z0-9_] as '_'."""
    meta = "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", label)
    return {"sourceLabels": [meta], "targetLabel": target, "action": "replace"}


def pod_monitor(rack: RackSpec, labels: Mapping[str, str]) -> dict[str, Any]:
    """Prometheus Operator's scrape of every tray and the controller of the rack, labelled as
    `fusionctl rack up`'s file_sd targets are (rack, tray, kind), the exporters' labels first
    (honorLabels), as deploy/prometheus/prometheus.yml does."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _meta("fusionrack", rack_namespace(rack.name), {**PART_OF, **labels}),
        "spec": {
            "selector": {"matchLabels": {**PART_OF, RACK_LABEL: rack.name}},
            "podMetricsEndpoints": [
                {
                    "port": "metrics",
                    "path": "/metrics",
                    "interval": SCRAPE_INTERVAL,
                    "honorLabels": True,
                    "relabelings": [
                        _relabel(RACK_LABEL, "rack"),
                        _relabel(TRAY_LABEL, "tray"),
                        _relabel(KIND_LABEL, "kind"),
                    ],
                }
            ],
        },
    }


def prometheus_rule(rules_dir: Path, labels: Mapping[str, str]) -> dict[str, Any]:
    """deploy/prometheus/rules/*.yml as one PrometheusRule: the dashboards read the recording
    rules, so a cluster's Prometheus needs them as much as the scrapes."""
    groups = []
    for path in sorted(rules_dir.glob("*.yml")):
        groups += yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _meta("fusionrack", SHARED_NAMESPACE, {**PART_OF, **labels}),
        "spec": {"groups": groups},
    }


def dashboard_configmaps(dashboards_dir: Path) -> list[dict[str, Any]]:
    """One ConfigMap per dashboard, labelled for the Grafana sidecar (`grafana_dashboard: "1"`,
    kube-prometheus-stack's and the Grafana chart's default) and filed in a folder "fusionrack"
    (`grafana_folder`, where the sidecar's folderAnnotation is set). One each, not one for
    all: `kubectl apply` keeps a copy of what it applies in an annotation of at most 256 KiB."""
    objects = []
    for path in sorted(dashboards_dir.glob("*.json")):
        text = path.read_text(encoding="utf-8")
        uid = json.loads(text)["uid"]
        meta = _meta(
            f"fusionrack-dashboard-{path.stem}",
            SHARED_NAMESPACE,
            {**PART_OF, "grafana_dashboard": "1"},
        )
        meta["annotations"] = {"grafana_folder": "fusionrack", "fusionrack/dashboard-uid": uid}
        objects.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {path.name: text}}
        )
    return objects
