"""Strict check of Kubernetes manifests against the official client's typed models.

Every key must be a field of the model for its position; every required field must be set
(the models raise on a missing one); scalars must have the declared type. This catches the
typos and misplaced fields that `kubectl apply` would reject, without a cluster.
"""

from __future__ import annotations

import re
from typing import Any

from kubernetes import client

_SCALARS = {"str": str, "int": int, "bool": bool, "float": (int, float), "bytes": str,
            "datetime": str, "date": str, "object": object}


def _model(type_name: str) -> type:
    return getattr(client, type_name)


def check(value: Any, type_name: str, path: str) -> Any:
    """Return the model instance for ``value``; raise ValueError naming ``path`` on a mismatch."""
    # The client spells these List[...]/Dict[...] in some releases, list[...]/dict[...] in others.
    if m := re.fullmatch(r"[Ll]ist\[(.+)\]", type_name):
        if not isinstance(value, list):
            raise ValueError(f"{path}: expected a list, got {type(value).__name__}")
        return [check(v, m.group(1), f"{path}[{i}]") for i, v in enumerate(value)]
    if m := re.fullmatch(r"[Dd]ict\[str, (.+)\]", type_name):
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping, got {type(value).__name__}")
        return {k: check(v, m.group(1), f"{path}.{k}") for k, v in value.items()}
    if type_name in _SCALARS:
        # Kubernetes accepts int-or-string quantities/ports where the client says str or object.
        if type_name == "str" and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, _SCALARS[type_name]):
            raise ValueError(f"{path}: expected {type_name}, got {value!r}")
        return value
    cls = _model(type_name)
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a {type_name} mapping, got {value!r}")
    by_json = {j: py for py, j in cls.attribute_map.items()}
    kwargs = {}
    for key, sub in value.items():
        if key not in by_json:
            raise ValueError(f"{path}: unknown field '{key}' for {type_name}")
        py = by_json[key]
        kwargs[py] = check(sub, cls.openapi_types[py], f"{path}.{key}")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a required field is missing
        raise ValueError(f"{path}: {exc}") from None


KINDS = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Service"): "V1Service",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("v1", "Pod"): "V1Pod",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("apps/v1", "StatefulSet"): "V1StatefulSet",
    ("batch/v1", "Job"): "V1Job",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler",
}


def check_manifest(doc: dict[str, Any]) -> Any:
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in KINDS:
        raise ValueError(f"unsupported or misspelled apiVersion/kind {key}")
    name = doc.get("metadata", {}).get("name", "?")
    return check(doc, KINDS[key], f"{key[1]}/{name}")
