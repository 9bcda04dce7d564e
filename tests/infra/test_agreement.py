"""infra/'s manifests agree with the code: commands that exist in this venv, settings keys recops
and Airflow know, the certificate names federated.deployment writes, counts from the settings.
No cluster or container engine runs: the files are read and the commands run with --help."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.infra.agreement import (
    Container,
    airflow_key_problems,
    command_problems,
    compose_containers,
    flower_problems,
    k8s_containers,
    program,
    setting_key_problems,
)

INFRA = REPO / "infra"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


def _k8s_link_ports(docs: list[dict[str, Any]]) -> dict[str, int]:
    """The SuperLink Service's ports by name, where the Service forwards to the same port."""
    svc = next(d for d in docs if d["kind"] == "Service"
               and d["metadata"]["name"] == "flower-superlink")
    return {p["name"]: p["port"] for p in svc["spec"]["ports"] if p["port"] == p["targetPort"]}


COMPOSE_LINK_PORTS = {"control": 9093, "fleet": 9092}  # compose services reach each other as is


@pytest.fixture(scope="module")
def containers(rendered, compose) -> list[Container]:
    return [*k8s_containers(rendered), *compose_containers(compose)]


def test_every_container_command_runs_here_with_the_options_it_uses(containers,
                                                                    tmp_path) -> None:
    with_command = [c for c in containers if c.argv]
    programs = {" ".join(program(c.argv)) for c in with_command}
    # What infra/ starts: Airflow's components and workers, Flower's SuperLink and SuperNodes,
    # the BentoML service.
    assert programs == {"airflow db migrate", "airflow api-server", "airflow scheduler",
                        "airflow dag-processor", "airflow triggerer", "airflow celery worker",
                        "flower-superlink", "flower-supernode",
                        "bentoml serve serving.service:Recommender"}
    assert command_problems(with_command, tmp_path) == []


def test_the_command_check_catches_a_missing_command_and_an_unknown_option(containers,
                                                                           tmp_path) -> None:
    node = next(c for c in containers if c.argv and c.argv[0] == "flower-supernode")
    typo = copy.deepcopy(node)
    typo.argv = ["flower-supernode", "--root-certificate", "/certs/ca.crt"]  # one letter short
    gone = copy.deepcopy(node)
    gone.argv = ["flower-supernod"]
    sub = copy.deepcopy(node)
    sub.argv = ["airflow", "celery", "wroker"]
    problems = command_problems([typo, gone, sub], tmp_path)
    assert len(problems) == 3, problems
    assert "has no option --root-certificate" in problems[0]
    assert "flower-supernod is not installed" in problems[1]
    assert "`airflow celery wroker --help` exits" in problems[2]


def test_config_keys_are_ones_the_settings_know(containers, tmp_path) -> None:
    assert setting_key_problems(containers) == []
    assert airflow_key_problems(containers, tmp_path) == []
    keys = {k for c in containers for k in c.env}
    assert {"RECOPS_FEDERATED__SUPERLINK_ADDRESS", "RECOPS_FEDERATED__NUM_CLIENTS",
            "AIRFLOW__CORE__EXECUTOR"} <= keys


def test_the_key_checks_catch_unknown_and_invalid_keys(containers, tmp_path) -> None:
    c = copy.deepcopy(next(c for c in containers if "RECOPS_FEDERATED__NUM_CLIENTS" in c.env))
    c.env = {"RECOPS_FEDERATED__NUM_CLIENT": "2", "RECOPS_STORES__ONLINE": "memcached",
             "AIRFLOW__CORE__EXECUTER": "CeleryExecutor"}
    problems = setting_key_problems([c])
    assert any("RECOPS_FEDERATED__NUM_CLIENT is no setting" in p for p in problems), problems
    assert any("not valid settings" in p for p in problems), problems
    assert airflow_key_problems([c], tmp_path) == [
        "AIRFLOW__CORE__EXECUTER is no Airflow configuration option"]


def test_flower_agrees_with_the_code_and_the_settings(rendered, compose) -> None:
    assert flower_problems(k8s_containers(rendered), "flower-superlink",
                           _k8s_link_ports(rendered)) == []
    assert flower_problems(compose_containers(compose), "flower-superlink",
                           COMPOSE_LINK_PORTS) == []


def _edit(text: str, old: str, new: str) -> dict[str, Any]:
    assert old in text, old
    return yaml.safe_load(text.replace(old, new))


@pytest.mark.parametrize("old, new, words", [
    ("/certs/server.pem", "/certs/server.crt", "not the server.pem"),
    ('RECOPS_FEDERATED__NUM_CLIENTS: "2"', 'RECOPS_FEDERATED__NUM_CLIENTS: "10"',
     "2 SuperNodes, but federated.num_clients is 10"),
    ("flower-superlink:9093", "superlink:9093", "not the SuperLink's control API"),
    ("flower-superlink,localhost,127.0.0.1", "localhost,127.0.0.1",
     "lacks flower-superlink"),
    ("data-path='/data'\"]\n    environment: *flower-env\n    volumes: [flower-certs:/certs:ro, "
     "recops-home:/var/lib/recops:ro, silo-0:/data]",
     "data-path='/var/lib/recops/silo-0'\"]\n    environment: *flower-env\n    volumes: "
     "[flower-certs:/certs:ro, recops-home:/var/lib/recops:ro, silo-0:/data]",
     "is not on a volume of its own"),
    ("recops-home:/var/lib/recops:ro, silo-1", "recops-home:/var/lib/recops, silo-1",
     "mounts the shared home writable"),
    ("environment: *flower-env\n    volumes: [flower-certs:/certs:ro, recops-home:/var/lib/"
     "recops:ro, silo-1", "environment: *recops-env\n    volumes: [flower-certs:/certs:ro, "
     "recops-home:/var/lib/recops:ro, silo-1", "gets recops settings"),
])
def test_the_flower_check_catches_a_manifest_that_disagrees(old, new, words) -> None:
    broken = _edit((INFRA / "compose.yaml").read_text(), old, new)
    problems = flower_problems(compose_containers(broken), "flower-superlink",
                               COMPOSE_LINK_PORTS)
    assert any(words in p for p in problems), problems


def test_k8s_supernode_replicas_are_checked_against_num_clients(rendered) -> None:
    broken = copy.deepcopy(rendered)
    sts = next(d for d in broken if d["kind"] == "StatefulSet"
               and d["metadata"]["name"] == "flower-supernode")
    sts["spec"]["replicas"] = 3
    problems = flower_problems(k8s_containers(broken), "flower-superlink",
                               _k8s_link_ports(broken))
    assert problems == ["3 SuperNodes, but federated.num_clients is 2 (the server waits for "
                        "that many)"]


def test_infra_readme_names_the_certificate_files() -> None:
    from federated.deployment import CA_CERT, SERVER_CERT, SERVER_KEY

    text = (INFRA / "README.md").read_text() + (INFRA / "k8s" / "flower.yaml").read_text()
    for name in (CA_CERT, SERVER_CERT, SERVER_KEY):
        assert name in text
    assert "server.crt" not in text

