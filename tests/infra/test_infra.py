"""infra/ is checked for validity here, since no container engine or cluster runs on CI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.infra.k8s_schema import check_manifest

INFRA = REPO / "infra"
COMPOSE = INFRA / "compose.yaml"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_specification() -> None:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema",
         "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = _compose()
    broken["services"]["redis"]["restart"] = ["always"]  # must be a string
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    out = subprocess.run(
        [str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema",
         "vendor.compose-spec", str(path)], capture_output=True, text=True)
    assert out.returncode != 0


def test_compose_services_reference_what_exists() -> None:
    spec = _compose()
    services, volumes = spec["services"], set(spec.get("volumes", {}))
    expected = {"postgres", "redis", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-worker", "flower-superlink",
                "flower-supernode-0", "flower-supernode-1", "recommender"}
    assert expected <= set(services)
    for name, svc in services.items():
        deps = svc.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else deps.keys():
            assert dep in services, f"{name} depends on unknown service {dep}"
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            assert source in volumes, f"{name} mounts undeclared volume {source}"
    assert services["airflow-worker"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_no_secret_is_committed_in_infra() -> None:
    # A key named like a secret with a literal value, or credentials inside a URL.
    keyed = re.compile(r"(PASSWORD|SECRET|TOKEN)\w*[\"']?\s*[:=]\s*[\"']?([^\s\"']+)", re.I)
    in_url = re.compile(r"://[^:/@\s]+:([^@\s]+)@")
    for path in INFRA.rglob("*"):
        if not path.is_file() or path.suffix not in {".yaml", ".yml", ".example", ""}:
            continue
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue
            line = re.sub(r"\$?\$\{[^}]*\}", "VAR", line)  # ${VAR:?msg} is a reference, fine
            values = [m.group(2) for m in keyed.finditer(line)] + in_url.findall(line)
            for value in values:
                assert value.startswith(("VAR", "{")), \
                    f"{path.relative_to(REPO)}: literal secret in {line.strip()!r}"


def test_recops_settings_in_compose_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from recops.config import load_settings

    env = _compose()["x-recops-env"]
    for key, value in env.items():
        value = re.sub(r"\$\{[^}]+\}", "x", str(value))
        monkeypatch.setenv(key, value)
    s = load_settings()
    assert s.stores.online == "redis" and s.stores.registry == "postgres"


def test_k8s_manifests_match_the_kubernetes_api_models(rendered: list[dict]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    for doc in rendered:
        check_manifest(doc)
    for needed in [("Deployment", "recommender"), ("HorizontalPodAutoscaler", "recommender"),
                   ("Deployment", "airflow-scheduler"), ("StatefulSet", "flower-supernode"),
                   ("Deployment", "flower-superlink"), ("Deployment", "redis"),
                   ("Role", "airflow-pod-launcher")]:
        assert needed in kinds, f"missing {needed}"
    pod_template = next(d for d in rendered
                        if d["metadata"]["name"].startswith("airflow-pod-template"))
    check_manifest(yaml.safe_load(pod_template["data"]["pod_template.yaml"]))


def test_k8s_model_check_catches_a_misplaced_field(rendered: list[dict]) -> None:
    deployment = next(d for d in rendered if d["kind"] == "Deployment")
    deployment = yaml.safe_load(yaml.safe_dump(deployment))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(ValueError, match="unknown field 'imagePullPolicyy'"):
        check_manifest(deployment)
    del deployment["spec"]["selector"]
    with pytest.raises(ValueError):
        check_manifest(deployment)


def test_services_select_pods_that_exist(rendered: list[dict]) -> None:
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in rendered
                  if d["kind"] in {"Deployment", "StatefulSet"}]
    for svc in (d for d in rendered if d["kind"] == "Service"):
        sel = svc["spec"]["selector"]
        assert any(all(lbl.get(k) == v for k, v in sel.items()) for lbl in pod_labels), \
            f"Service {svc['metadata']['name']} selects no pods"


def test_dockerfile_copies_paths_that_exist() -> None:
    for line in (INFRA / "docker" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY"):
            for src in line.split()[1:-1]:
                assert (REPO / src).exists(), f"Dockerfile copies missing {src}"
