"""Render deploy/kubernetes/ as `kubectl apply -k` would, and validate the objects offline.

`render` implements the two kustomize features the generated kustomizations use (`resources`
and `secretGenerator` with `disableNameSuffixHash`) and refuses any other, so a kustomization
that grows a feature this does not know fails here instead of being half rendered; where
kubectl is installed, tests/unit/test_kubernetes.py checks that it renders the same objects.

`Schemas` validates each object against Kubernetes' own OpenAPI schemas as the
kubernetes-validate package bundles them (the strict variant: an unknown field is an error, as
`kubectl apply`'s default server-side field validation makes it), and the Prometheus Operator
objects against `PROMETHEUS_OPERATOR`, hand-written from that project's CRDs (below).
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kubernetes_validate import utils as kubernetes_validate
from referencing import Registry, Resource

__all__ = ["PROMETHEUS_OPERATOR", "Schemas", "load_all", "render"]

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "secretGenerator", "generatorOptions"}
SECRET_GENERATOR_KEYS = {"name", "namespace", "files"}


# libyaml's parser where PyYAML has it: the pure-Python one takes 2 s over deploy/kubernetes.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_all(text: str) -> list[Any]:
    """The documents of a YAML stream, empty ones left out."""
    return [doc for doc in yaml.load_all(text, Loader=_LOADER) if doc is not None]


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k directory` applies (in kustomize's order of resources)."""
    (kustomization,) = load_all((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    assert not unknown, f"{directory}: kustomize features kube_render lacks: {unknown}"
    assert kustomization["kind"] == "Kustomization"
    objects: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        if path.is_dir():
            objects += render(path)
        else:
            objects += load_all(path.read_text())
    generators = kustomization.get("secretGenerator", [])
    if generators:
        # Without it, kustomize names each Secret with a hash of its content and rewrites the
        # references to it: not rendered here.
        assert kustomization.get("generatorOptions") == {"disableNameSuffixHash": True}
    for generator in generators:
        assert set(generator) <= SECRET_GENERATOR_KEYS, generator
        data = {}
        for item in generator["files"]:
            key, _, source = item.rpartition("=")
            file = directory / source
            data[key or file.name] = base64.b64encode(file.read_bytes()).decode()
        metadata = {"name": generator["name"]}
        if "namespace" in generator:
            metadata["namespace"] = generator["namespace"]
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": metadata,
                "type": "Opaque",
                "data": data,
            }
        )
    return objects


# -- Prometheus Operator ------------------------------------------------------------------------

# The fields of PodMonitor and PrometheusRule (monitoring.coreos.com/v1) that fusionrack's
# objects may use, with the types, patterns and enums of prometheus-operator's CRDs
# (example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml of v0.87.0 and
# monitoring.coreos.com_prometheusrules.yaml of v0.82.2, where these fields are the same).
# Written by hand rather than vendored: a subset, strict (additionalProperties: false), so a
# field we use that is not described here fails until someone checks it against the CRD.
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?)$",
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_RELABEL_ACTIONS = (
    "Replace",
    "Keep",
    "Drop",
    "HashMod",
    "LabelMap",
    "LabelDrop",
    "LabelKeep",
    "Lowercase",
    "Uppercase",
    "KeepEqual",
    "DropEqual",
)
_RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        # Each in lower case too (the CRD lists both).
        "action": {
            "enum": [form for action in _RELABEL_ACTIONS for form in (action.lower(), action)]
        },
        "modulus": {"type": "integer"},
        "regex": {"type": "string"},
        "replacement": {"type": "string"},
        "separator": {"type": "string"},
        "sourceLabels": _STRINGS,
        "targetLabel": {"type": "string"},
    },
}
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string"},
                    "values": _STRINGS,
                },
            },
        },
        "matchLabels": _STRING_MAP,
    },
}
_POD_METRICS_ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "port": {"type": "string"},
        "portNumber": {"type": "integer", "minimum": 1, "maximum": 65535},
        "path": {"type": "string"},
        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
        "interval": _DURATION,
        "scrapeTimeout": _DURATION,
        "honorLabels": {"type": "boolean"},
        "honorTimestamps": {"type": "boolean"},
        "relabelings": {"type": "array", "items": _RELABEL},
        "metricRelabelings": {"type": "array", "items": _RELABEL},
    },
}
_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expr"],
    "properties": {
        "alert": {"type": "string"},
        "record": {"type": "string"},
        "annotations": _STRING_MAP,
        "labels": _STRING_MAP,
        "expr": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        "for": _DURATION,
        "keep_firing_for": {**_DURATION, "minLength": 1},
    },
}
_RULE_GROUP = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "interval": _DURATION,
        "labels": _STRING_MAP,
        "limit": {"type": "integer"},
        "query_offset": _DURATION,
        "rules": {"type": "array", "items": _RULE},
    },
}


def _custom_resource(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": {"type": "object"},  # checked as Kubernetes' ObjectMeta
            "spec": spec,
        },
    }


PROMETHEUS_OPERATOR: dict[str, dict[str, Any]] = {
    "PodMonitor": _custom_resource(
        "PodMonitor",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector"],
            "properties": {
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"}, "matchNames": _STRINGS},
                },
                "jobLabel": {"type": "string"},
                "podTargetLabels": _STRINGS,
                "podMetricsEndpoints": {"type": "array", "items": _POD_METRICS_ENDPOINT},
            },
        },
    ),
    "PrometheusRule": _custom_resource(
        "PrometheusRule",
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {"groups": {"type": "array", "items": _RULE_GROUP}},
        },
    ),
}


class Schemas:
    """Validators for one Kubernetes version (e.g. "1.30"), built once per kind:
    `kubernetes_validate.validate` reads and parses the version's 1.8 MB definitions for every
    object (11 ms each); the same schemas through one validator per kind take 1 ms."""

    def __init__(self, version: str) -> None:
        versions = {v.rsplit(".", 1)[0] for v in kubernetes_validate.all_versions()}
        assert version in versions, f"kubernetes-validate has no schemas of {version}: {versions}"
        self.version = version
        self.folder = f"kubernetes-json-schema/v{version}.0-local-strict"

    @functools.cached_property
    def _registry(self) -> Registry:
        definitions = self._contents("_definitions.json")
        return Resource.from_contents(definitions) @ Registry()

    def _contents(self, name: str) -> Any:
        return kubernetes_validate.schema_contents(f"{self.folder}/{name}", self.version)

    @functools.cache  # noqa: B019 (one Schemas per version lives as long as the tests)
    def _validator(self, name: str) -> jsonschema.protocols.Validator:
        schema = self._contents(name)
        registry = Resource.from_contents(schema) @ self._registry
        return jsonschema.validators.Draft202012Validator(schema, registry=registry)

    def _kubernetes(self, kind: str, api_version: str) -> jsonschema.protocols.Validator:
        # kubernetes-validate's file names: apps/v1 -> apps-v1, rbac.authorization.k8s.io/v1
        # -> rbac-v1, v1 -> v1.
        group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        return self._validator(f"{kind.lower()}-{group_version}.json")

    def errors(self, obj: dict[str, Any]) -> Iterator[str]:
        """What is wrong with `obj` ("" path: the object), nothing when it is valid."""
        kind, api_version = obj.get("kind", ""), obj.get("apiVersion", "")
        if api_version == "monitoring.coreos.com/v1" and kind in PROMETHEUS_OPERATOR:
            validator = jsonschema.validators.Draft202012Validator(PROMETHEUS_OPERATOR[kind])
            found = [*validator.iter_errors(obj)]
            meta = self._validator("objectmeta-meta-v1.json")
            found += [*meta.iter_errors(obj.get("metadata", {}))]
        else:
            try:
                found = [*self._kubernetes(kind, api_version).iter_errors(obj)]
            except FileNotFoundError:
                yield f"no schema of {api_version} {kind} in Kubernetes {self.version}"
                return
        for error in found:
            yield f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
