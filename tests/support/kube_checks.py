"""Checks of deploy/kubernetes/ rendered (`kube_render.render`): lookups in a rendering and the
problems each check finds, every one a list of messages (empty: it holds). Used by
tests/unit/test_kubernetes.py, which also feeds them broken copies to see each refused.

* Lookups: `named` and `find` (objects by kind, namespace and name), `pods` (every pod
  template with its one container's flags parsed by the program's own argparse parser: `Pod`),
  `reach` (where an address dialled from a namespace lands, through a Service), `mounted`
  (the file at a path in a pod, from its Secret or ConfigMap), `topology_of` (the rack a pod
  serves).
* Problems: `schema_problems` (each object against Kubernetes' OpenAPI schemas, `Schemas`),
  `flag_problems` (flags our programs accept, addresses that reach the tray they name, files
  that are mounted, one rack per namespace), `monitoring_problems` (each rack's PodMonitor
  scrapes every pod with the labels the alerts read).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusionrack.agent.main import build_parser as agent_parser
from fusionrack.controller.main import build_parser as controller_parser
from fusionrack.emulator import Topology, TrayKind, load_manifest
from tests.support.kube_render import Schemas

__all__ = [
    "Objects",
    "Pod",
    "find",
    "flag_problems",
    "monitoring_problems",
    "mounted",
    "named",
    "pods",
    "reach",
    "schema_problems",
    "topology_of",
]

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "fusion-agent": agent_parser,
    "fusion-controller": controller_parser,
}
ANY_ADDRESS = ("0.0.0.0", "::", "[::]")

Objects = list[dict[str, Any]]


# -- looking things up in a rendering ---------------------------------------------------------


def named(objects: Objects, kind: str, namespace: str | None = None) -> Iterator[dict[str, Any]]:
    for obj in objects:
        if obj["kind"] == kind and (
            namespace is None or obj["metadata"].get("namespace") == namespace
        ):
            yield obj


def find(objects: Objects, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    return next((o for o in named(objects, kind, namespace) if o["metadata"]["name"] == name), None)


@dataclass
class Pod:
    """A pod template of a Deployment or StatefulSet, with its one container's parsed flags."""

    owner: dict[str, Any]
    namespace: str
    labels: dict[str, str]
    spec: dict[str, Any]
    container: dict[str, Any]
    program: str
    args: argparse.Namespace | None  # None: its program refuses them (see `problems`)

    @property
    def name(self) -> str:
        return f"{self.owner['kind']} {self.namespace}/{self.owner['metadata']['name']}"

    def port(self, name_or_number: str | int) -> int | None:
        """The container port of that name (or number) this pod declares, None if none."""
        for port in self.container.get("ports", []):
            if name_or_number in (port.get("name"), port["containerPort"]):
                return port["containerPort"]
        return None


def parse(container: dict[str, Any]) -> tuple[str, argparse.Namespace | None, str]:
    """(program, its parsed arguments or None, what it said when it refused them)."""
    program, *rest = container["command"]
    parser = PARSERS.get(program)
    if parser is None:
        return program, None, f"{program!r} is none of our programs {sorted(PARSERS)}"
    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        try:
            return program, parser().parse_args([*rest, *container.get("args", [])]), ""
        except SystemExit:
            return program, None, said.getvalue().strip()


@functools.cache
def _parsed(command: tuple[str, ...]) -> tuple[str, argparse.Namespace | None, str]:
    return parse({"command": list(command)})


_PODS: dict[int, tuple[Objects, list[Pod]]] = {}


def pods(objects: Objects) -> list[Pod]:
    """The pods of `objects`, found once per rendering (a rendering is not changed once
    checked: the broken ones are edited copies), their flags parsed once per command line."""
    cached = _PODS.get(id(objects))
    if cached is not None and cached[0] is objects:
        return cached[1]
    found = []
    for owner in objects:
        if owner["kind"] not in ("Deployment", "StatefulSet"):
            continue
        template = owner["spec"]["template"]
        (container,) = template["spec"]["containers"]
        program, args, _ = _parsed((*container["command"], *container.get("args", [])))
        found.append(
            Pod(
                owner,
                owner["metadata"]["namespace"],
                template["metadata"]["labels"],
                template["spec"],
                container,
                program,
                args,
            )
        )
    _PODS[id(objects)] = (objects, found)  # the list kept alive, so its id is not reused
    return found


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def reach(objects: Objects, namespace: str, address: str) -> tuple[Pod | None, int | None, str]:
    """Where a connection to `address` from a pod of `namespace` lands: (the pod, its container
    port, "") through the Service its host names, or (None, None, why not)."""
    host, port = split_address(address)
    name, _, rest = host.partition(".")
    service_namespace = rest.split(".")[0] if rest else namespace
    if rest and rest.split(".")[1:2] not in ([], ["svc"]):
        return None, None, f"{host} is not a Service's DNS name"
    service = find(objects, "Service", service_namespace, name)
    if service is None:
        return None, None, f"no Service {service_namespace}/{name}"
    matching = [p for p in service["spec"]["ports"] if p["port"] == port]
    if not matching:
        return None, None, f"Service {service_namespace}/{name} has no port {port}"
    target = matching[0].get("targetPort", port)
    backends = [
        p
        for p in pods(objects)
        if p.namespace == service_namespace and selects(service["spec"]["selector"], p.labels)
    ]
    if len(backends) != 1:
        return None, None, f"Service {service_namespace}/{name} selects {len(backends)} pods"
    number = backends[0].port(target)
    if number is None:
        return None, None, f"{backends[0].name} declares no container port {target!r}"
    return backends[0], number, ""


def mounted(objects: Objects, pod: Pod, path: str) -> tuple[bytes | None, str]:
    """The content of the file at `path` in `pod`, from the Secret or ConfigMap mounted there
    ((None, "") for a PersistentVolumeClaim's file), or (None, why it is not there)."""
    for mount in pod.container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        relative = path[len(prefix) :]
        claims = pod.owner["spec"].get("volumeClaimTemplates", [])
        if any(c["metadata"]["name"] == mount["name"] for c in claims):
            return None, ""
        volume = next(v for v in pod.spec["volumes"] if v["name"] == mount["name"])
        source = volume.get("secret") or volume.get("configMap")
        if source is None:
            return None, f"{path}: volume {mount['name']} is neither a Secret nor a ConfigMap"
        key = next(
            (i["key"] for i in source.get("items", []) if i["path"] == relative),
            None if source.get("items") else relative,
        )
        kind, name = (
            ("Secret", source["secretName"])
            if "secret" in volume
            else ("ConfigMap", source["name"])
        )
        obj = find(objects, kind, pod.namespace, name)
        if obj is None:
            return None, f"{path}: no {kind} {pod.namespace}/{name}"
        if key not in obj.get("data", {}):
            return None, f"{path}: {kind} {name} has no key {key!r}"
        data = obj["data"][key]
        return (base64.b64decode(data) if kind == "Secret" else data.encode()), ""
    return None, f"{path} is on no volume of {pod.name} (its image's file system is read-only)"


def topology_of(objects: Objects, pod: Pod, tmp: Path) -> Topology:
    """The rack `pod` serves, loaded from the preset or the mounted file as the program would."""
    assert pod.args is not None
    manifest = pod.args.manifest
    if manifest.startswith("/"):
        content, why = mounted(objects, pod, manifest)
        assert content is not None, why
        path = tmp / f"{pod.namespace}.yaml"
        path.write_bytes(content)
        manifest = str(path)
    return Topology(load_manifest(manifest, pod.args.rack_name))


# -- what must hold ---------------------------------------------------------------------------


def schema_problems(objects: Objects, schemas: Schemas) -> list[str]:
    problems = []
    for obj in objects:
        where = (
            f"{obj.get('kind')} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
        )
        problems += [f"{where}: {error}" for error in schemas.errors(obj)]
    return problems


def _listens(pod: Pod, flag: str, port_name: str) -> list[str]:
    """`flag`'s address binds every interface of the pod, on the port it declares as
    `port_name`."""
    address = getattr(pod.args, flag)
    if address is None:
        return [f"{pod.name}: no --{flag} (its default binds 127.0.0.1: unreachable)"]
    host, port = split_address(address)
    problems = []
    if host not in ANY_ADDRESS:
        problems.append(f"{pod.name}: --{flag} {address} binds {host}: other pods cannot reach it")
    if pod.port(port_name) != port:
        problems.append(f"{pod.name}: --{flag} port {port} is not its container port {port_name}")
    return problems


def flag_problems(objects: Objects, tmp: Path) -> list[str]:
    """Every container runs our programs with flags they accept, addresses that reach the tray
    they name, files that are mounted; every tray is found; a namespace is one rack."""
    problems = []
    by_namespace: dict[str, list[Pod]] = {}
    for pod in pods(objects):
        if pod.args is None:
            problems.append(f"{pod.name}: {parse(pod.container)[2]}")
            continue
        by_namespace.setdefault(pod.namespace, []).append(pod)
    for namespace, rack in by_namespace.items():
        names = {(p.args.manifest, p.args.rack_name) for p in rack}  # type: ignore[union-attr]
        if len(names) != 1:
            problems.append(f"{namespace}: its pods run different racks {sorted(names)}")
            continue
        topology = topology_of(objects, rack[0], tmp)
        trays = {p.args.tray: p for p in rack if p.program == "fusion-agent"}  # type: ignore[union-attr]
        controllers = [p for p in rack if p.program == "fusion-controller"]
        if set(trays) != {t.name for t in topology.trays} or len(controllers) != 1:
            problems.append(
                f"{namespace}: trays {sorted(trays)} and {len(controllers)} "
                f"controllers for the {len(topology.trays)} trays of {topology.name}"
            )
        switches = {t.name for t in topology.trays_of_kind(TrayKind.SWITCH)}
        for pod in rack:
            problems += _pod_problems(objects, pod, topology, trays, switches)
    return problems


def _pod_problems(
    objects: Objects, pod: Pod, topology: Topology, trays: dict[str, Pod], switches: set[str]
) -> list[str]:
    args = pod.args
    assert args is not None
    problems = []
    if pod.labels.get("fusionrack/rack") != args.rack_name:
        problems.append(
            f"{pod.name}: labelled rack {pod.labels.get('fusionrack/rack')!r}, "
            f"runs rack {args.rack_name!r}"
        )
    problems += _listens(pod, "listen", "grpc") + _listens(pod, "metrics", "metrics")
    listen_port = split_address(args.listen)[1]
    for probe in ("readinessProbe", "livenessProbe"):
        if pod.container.get(probe, {}).get("grpc", {}).get("port") != listen_port:
            problems.append(f"{pod.name}: its {probe} does not ask its gRPC health service")
    files = [args.rack_secret_file]
    if pod.program == "fusion-agent":
        kind = topology.tray(args.tray).kind
        if (
            pod.labels.get("fusionrack/tray") != args.tray
            or pod.labels.get("fusionrack/kind") != kind.name.lower()
        ):
            problems.append(f"{pod.name}: labels {pod.labels} for tray {args.tray}")
        if kind == TrayKind.SWITCH:
            problems += _listens(pod, "forward", "data-plane")
        else:
            given = dict(item.split("=", 1) for item in args.switch)
            if set(given) != switches:
                problems.append(f"{pod.name}: --switch for {sorted(given)}, not {sorted(switches)}")
            for switch, address in given.items():
                problems += _reaches(objects, pod, address, trays.get(switch), "listen")
                # It asks the switch tray for its data plane (0.0.0.0:PORT) and dials PORT at
                # the host it found the switch tray at: the Service must carry that port too.
                forward = trays[switch].args.forward if switch in trays else None  # type: ignore[union-attr]
                if forward:
                    host = split_address(address)[0]
                    port = split_address(forward)[1]
                    problems += _reaches(objects, pod, f"{host}:{port}", trays[switch], "forward")
    else:
        given = dict(item.split("=", 1) for item in args.agent)
        if set(given) != {t.name for t in topology.trays}:
            problems.append(f"{pod.name}: --agent for {sorted(given)}, not every tray")
        for tray, address in given.items():
            problems += _reaches(objects, pod, address, trays.get(tray), "listen")
        files += [args.admin_token_file, args.read_only_token_file]
        state, why = mounted(objects, pod, str(args.state))
        if why or state is not None:
            problems.append(
                f"{pod.name}: --state {args.state} is not on a PersistentVolumeClaim {why}"
            )
    for path in files:
        if path is None:
            problems.append(f"{pod.name}: no rack secret or token file")
            continue
        content, why = mounted(objects, pod, str(path))
        if content is None:
            problems.append(f"{pod.name}: {why}")
    return problems


def _reaches(objects: Objects, pod: Pod, address: str, tray: Pod | None, flag: str) -> list[str]:
    """`address`, dialled from `pod`, lands on `tray`'s port given by its `--flag`."""
    landed, port, why = reach(objects, pod.namespace, address)
    if landed is None:
        return [f"{pod.name}: {address}: {why}"]
    if tray is None or landed.owner is not tray.owner:
        return [f"{pod.name}: {address} reaches {landed.name}, not the tray it names"]
    wanted = split_address(getattr(tray.args, flag))[1]
    if port != wanted:
        return [
            f"{pod.name}: {address} reaches port {port} of {tray.name}, whose --{flag} "
            f"is on {wanted}"
        ]
    return []


def monitoring_problems(objects: Objects) -> list[str]:
    """Each rack's PodMonitor selects every pod of its namespace at the port its --metrics
    serves, and its relabelings copy pod labels that exist onto rack, tray and kind."""
    problems = []
    namespaces = {p.namespace for p in pods(objects)}
    for namespace in namespaces:
        monitors = list(named(objects, "PodMonitor", namespace))
        if len(monitors) != 1:
            problems.append(f"{namespace}: {len(monitors)} PodMonitors")
            continue
        spec = monitors[0]["spec"]
        rack = [p for p in pods(objects) if p.namespace == namespace]
        scraped = [p for p in rack if selects(spec["selector"]["matchLabels"], p.labels)]
        if scraped != rack:
            problems.append(f"{namespace}: the PodMonitor scrapes {len(scraped)} of {len(rack)}")
        for endpoint in spec["podMetricsEndpoints"]:
            targets = {}
            for relabel in endpoint.get("relabelings", []):
                (source,) = relabel["sourceLabels"]
                targets[relabel["targetLabel"]] = source
            for pod in scraped:
                if pod.args is None:
                    continue
                if pod.port(endpoint["port"]) != split_address(pod.args.metrics)[1]:
                    problems.append(f"{pod.name}: port {endpoint['port']} is not its --metrics")
                meta = {
                    "__meta_kubernetes_pod_label_"
                    + "".join(c if c.isalnum() or c == "_" else "_" for c in key): value
                    for key, value in pod.labels.items()
                }
                wanted = {"rack": pod.args.rack_name, "kind": pod.labels["fusionrack/kind"]}
                if pod.program == "fusion-agent":
                    wanted["tray"] = pod.args.tray
                got = {label: meta.get(source) for label, source in targets.items()}
                if {k: v for k, v in got.items() if v is not None} != wanted:
                    problems.append(f"{pod.name}: scraped as {got}, not {wanted}")
    return problems
