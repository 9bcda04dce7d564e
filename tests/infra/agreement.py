"""Do infra/'s manifests agree with the code? Each check takes the parsed manifests (the rendered
kustomization and the compose file) and returns its problems, one line each, so a test can show
that it catches a broken copy."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from flwr.common.constant import CONTROL_API_PORT, FLEETAPI_GRPC_RERE_PORT

from federated.deployment import CA_CERT, SERVER_CERT, SERVER_KEY

BIN = Path(sys.executable).parent


@dataclass
class Container:
    """One container of the recops image, wherever it is declared."""

    where: str  # "k8s StatefulSet/flower-supernode" or "compose flower-supernode-0"
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # literal values; references as "x"
    mounts: dict[str, str] = field(default_factory=dict)  # mount path -> volume (":ro" if so)
    replicas: int = 1
    own_volumes: set[str] = field(default_factory=set)  # volumes no other pod mounts


def _is_recops(image: str) -> bool:
    return image.split(":")[0].split("/")[-1] == "recops" or "RECOPS_IMAGE" in image


def _configmap_env(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    for d in docs:
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(name + "-") \
                or d["kind"] == "ConfigMap" and d["metadata"]["name"] == name:
            return {k: str(v) for k, v in d.get("data", {}).items()}
    return {}


def _pod_specs(docs: list[dict[str, Any]]) -> Iterable[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, pod spec, workload) for every workload, and the Airflow task pod template."""
    import yaml

    for d in docs:
        kind = d["kind"]
        if kind in {"Deployment", "StatefulSet", "Job"}:
            yield f"k8s {kind}/{d['metadata']['name']}", d["spec"]["template"]["spec"], d
        if kind == "ConfigMap" and "pod_template.yaml" in d.get("data", {}):
            pod = yaml.safe_load(d["data"]["pod_template.yaml"])
            yield f"k8s pod template {d['metadata']['name']}", pod["spec"], pod


def k8s_containers(docs: list[dict[str, Any]]) -> list[Container]:
    out = []
    for where, spec, workload in _pod_specs(docs):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in workload.get("spec", {})
                  .get("volumeClaimTemplates", [])}
        for c in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            if not _is_recops(c.get("image", "")):
                continue
            env: dict[str, str] = {}
            for ref in c.get("envFrom", []):
                if "configMapRef" in ref:
                    env.update(_configmap_env(docs, ref["configMapRef"]["name"]))
            for e in c.get("env", []):
                env[e["name"]] = str(e.get("value", "x"))
            mounts = {}
            for m in c.get("volumeMounts", []):
                vol = volumes.get(m["name"], {})
                source = (vol.get("secret", {}).get("secretName")
                          or vol.get("persistentVolumeClaim", {}).get("claimName")
                          or vol.get("configMap", {}).get("name") or m["name"])
                mounts[m["mountPath"]] = source + (":ro" if m.get("readOnly") else "")
            out.append(Container(f"{where}[{c['name']}]",
                                 [*c.get("command", []), *c.get("args", [])], env, mounts,
                                 int(workload.get("spec", {}).get("replicas", 1) or 1),
                                 {m["name"] for m in c.get("volumeMounts", [])
                                  if m["name"] in claims}))
    return out


def compose_containers(spec: Mapping[str, Any]) -> list[Container]:
    out = []
    usage: dict[str, int] = {}
    for svc in spec["services"].values():
        for vol in svc.get("volumes", []):
            usage[vol.split(":")[0]] = usage.get(vol.split(":")[0], 0) + 1
    for name, svc in spec["services"].items():
        if not _is_recops(svc.get("image", "")):
            continue
        cmd = svc.get("command", [])
        env = {k: re.sub(r"\$\{[^}]+\}", "x", str(v)) for k, v in
               (svc.get("environment") or {}).items()}
        mounts = {}
        own = set()
        for vol in svc.get("volumes", []):
            source, target, *mode = vol.split(":")
            mounts[target] = source + (":ro" if mode == ["ro"] else "")
            if usage[source] == 1:
                own.add(source)
        out.append(Container(f"compose {name}", shlex.split(cmd) if isinstance(cmd, str)
                             else list(cmd), env, mounts,
                             int(svc.get("deploy", {}).get("replicas", 1)), own))
    return out


# ----------------------------------------------------------------------------- commands


def program(argv: list[str]) -> list[str]:
    """The command and its subcommands: the words before the first option."""
    words = []
    for word in argv:
        if word.startswith("-"):
            break
        words.append(word)
    return words


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "AIRFLOW_HOME": str(home / "airflow"), "RECOPS_HOME": str(home),
            "FLWR_HOME": str(home / "flwr"), "BENTOML_HOME": str(home / "bentoml")}


def _help(program: tuple[str, ...], home: Path) -> tuple[int, str]:
    exe = BIN / program[0]
    if not exe.exists():
        return 127, f"{program[0]} is not installed in {BIN}"
    out = subprocess.run([str(exe), *program[1:], "--help"], capture_output=True, text=True,
                         env=_env(home), timeout=120)
    return out.returncode, out.stdout + out.stderr


# Airflow's subcommands' --help, in one process: the parser the `airflow` script builds
# (airflow.__main__), so its import (seconds) is paid once.
_AIRFLOW_HELP = """
import contextlib, io, json, sys
from airflow.cli import cli_parser
out = []
for argv in json.loads(sys.argv[1]):
    buf, code = io.StringIO(), 0
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            cli_parser.get_parser().parse_args([*argv, "--help"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out.append([code, buf.getvalue()])
print(json.dumps(out))
"""


def _airflow_helps(programs: list[tuple[str, ...]], home: Path) -> list[tuple[int, str]]:
    if not (BIN / "airflow").exists():
        return [(127, f"airflow is not installed in {BIN}")] * len(programs)
    out = subprocess.run([sys.executable, "-c", _AIRFLOW_HELP,
                          json.dumps([list(p[1:]) for p in programs])],
                         capture_output=True, text=True, env=_env(home), timeout=120, check=True)
    return [(int(code), text) for code, text in json.loads(out.stdout.strip().splitlines()[-1])]


def command_problems(containers: list[Container], home: Path) -> list[str]:
    """Each container's command runs with --help in this venv, and names only options its help
    lists."""
    programs = sorted({tuple(program(c.argv)) for c in containers if c.argv})
    airflow = [p for p in programs if p[0] == "airflow"]
    others = [p for p in programs if p[0] != "airflow"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        later = pool.submit(_airflow_helps, airflow, home)
        helps = dict(zip(others, pool.map(lambda p: _help(p, home), others), strict=True))
        helps.update(zip(airflow, later.result(), strict=True))
    problems = []
    for c in containers:
        if not c.argv:
            continue
        prog = tuple(program(c.argv))
        rc, text = helps[prog]
        if rc != 0:
            problems.append(f"{c.where}: `{' '.join(prog)} --help` exits {rc}: "
                            f"{text.strip().splitlines()[-1] if text.strip() else ''}")
            continue
        for flag in (w.split("=")[0] for w in c.argv if w.startswith("--")):
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
                problems.append(f"{c.where}: `{' '.join(prog)}` has no option {flag}")
    return problems


# ----------------------------------------------------------------------------- settings


def setting_key_problems(containers: list[Container]) -> list[str]:
    """Every RECOPS_* variable names a settings field; together they make valid settings."""
    from pydantic import BaseModel

    from recops.config import Settings

    problems = []
    for c in containers:
        for key in sorted(k for k in c.env if k.startswith("RECOPS_") and k != "RECOPS_HOME"):
            model: Any = Settings
            for part in key.removeprefix("RECOPS_").lower().split("__"):
                fields = model.model_fields if isinstance(model, type) and \
                    issubclass(model, BaseModel) else {}
                if part not in fields:
                    problems.append(f"{c.where}: {key} is no setting (recops/config.py has no "
                                    f"{key.removeprefix('RECOPS_').lower().replace('__', '.')})")
                    break
                model = fields[part].annotation
        try:
            settings_of(c)
        except Exception as exc:  # noqa: BLE001 - reported, one line
            problems.append(f"{c.where}: its RECOPS_* values are not valid settings: "
                            f"{str(exc).splitlines()[0]}")
    return problems


def settings_of(c: Container) -> Any:
    """The Settings a container's environment makes (RECOPS_HOME aside)."""
    from recops.config import load_settings

    saved = {k: v for k, v in os.environ.items() if k.startswith("RECOPS_")}
    try:
        for k in saved:
            del os.environ[k]
        os.environ.update({k: v for k, v in c.env.items()
                           if k.startswith("RECOPS_") and k != "RECOPS_HOME"})
        return load_settings()
    finally:
        for k in [k for k in os.environ if k.startswith("RECOPS_")]:
            del os.environ[k]
        os.environ.update(saved)


def airflow_key_problems(containers: list[Container], home: Path) -> list[str]:
    """Every AIRFLOW__SECTION__KEY is an option Airflow's configuration describes (the
    providers' sections included)."""
    keys = sorted({k for c in containers for k in c.env if k.startswith("AIRFLOW__")})
    pairs = [k.removeprefix("AIRFLOW__").lower().split("__", 1) for k in keys]
    code = ("import json, sys; from airflow.configuration import conf; "
            "d = conf.configuration_description; print(json.dumps([o in d.get(s, {}).get("
            "'options', {}) for s, o in json.loads(sys.argv[1])]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(pairs)], capture_output=True,
                         text=True, env={**os.environ, "AIRFLOW_HOME": str(home / "airflow")},
                         timeout=120, check=True)
    known = json.loads(out.stdout.strip().splitlines()[-1])
    return [f"{k} is no Airflow configuration option" for k, ok in zip(keys, known, strict=True)
            if not ok]


# ----------------------------------------------------------------------------- Flower


def _flag(argv: list[str], name: str) -> str | None:
    for i, word in enumerate(argv):
        if word == name and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def _mounted(c: Container, path: str) -> str | None:
    """The volume (with ":ro") that holds ``path`` in ``c``, if any."""
    for target, source in c.mounts.items():
        if PurePosixPath(path).is_relative_to(target):
            return source
    return None


def flower_problems(containers: list[Container], link_service: str,
                    link_ports: Mapping[str, int]) -> list[str]:
    """Certificate names, host names, ports, SuperNode counts and data paths against the code
    and the settings. ``link_ports``: the SuperLink's published ports by name."""
    problems = []
    links = [c for c in containers if program(c.argv)[:1] == ["flower-superlink"]]
    nodes = [c for c in containers if program(c.argv)[:1] == ["flower-supernode"]]
    # Where `recops federated` runs: Airflow's task pods (the KubernetesExecutor's pod
    # template, whose command the executor gives) and Celery workers.
    submitters = [c for c in containers if not c.argv and "pod template" in c.where
                  or program(c.argv) == ["airflow", "celery", "worker"]]
    if len(links) != 1 or not nodes:
        return [f"expected one flower-superlink and SuperNodes, found {len(links)} and "
                f"{len(nodes)}"]
    link = links[0]
    for flag, name in (("--ssl-ca-certfile", CA_CERT), ("--ssl-certfile", SERVER_CERT),
                       ("--ssl-keyfile", SERVER_KEY)):
        value = _flag(link.argv, flag)
        if value is None or PurePosixPath(value).name != name:
            problems.append(f"{link.where}: {flag} {value} is not the {name} "
                            "federated.deployment writes")
        elif _mounted(link, value) is None:
            problems.append(f"{link.where}: {value} is on no mounted volume")
    for ports_name, flag, default in (("control", "--control-api-address", CONTROL_API_PORT),
                                      ("fleet", "--fleet-api-address", FLEETAPI_GRPC_RERE_PORT)):
        listens = int((_flag(link.argv, flag) or f":{default}").rpartition(":")[2])
        if link_ports.get(ports_name) != listens:
            problems.append(f"the SuperLink's {ports_name} port is {link_ports.get(ports_name)} "
                            f"where it is reached, but it listens on {listens}")
    settings = None
    for c in submitters:
        s = settings_of(c).federated
        settings = settings or s
        hosts = [h.strip() for h in s.certificate_hosts.split(",")]
        host, _, port = s.superlink_address.rpartition(":")
        if (host, port) != (link_service, str(link_ports.get("control"))):
            problems.append(f"{c.where}: federated.superlink_address {s.superlink_address} is "
                            f"not the SuperLink's control API {link_service}:"
                            f"{link_ports.get('control')}")
        if host not in hosts:
            problems.append(f"{c.where}: federated.certificate_hosts ({s.certificate_hosts}) "
                            f"lacks {host}, the host `flwr run` checks the certificate for")
        root = s.superlink_root_certificates
        if PurePosixPath(root).name != CA_CERT or _mounted(c, root) is None:
            problems.append(f"{c.where}: federated.superlink_root_certificates {root!r} is not "
                            f"a mounted {CA_CERT}")
    if settings is None:
        return [*problems, "no task container (pod template, Celery worker) found"]
    hosts = [h.strip() for h in settings.certificate_hosts.split(",")]
    total = 0
    for node in nodes:
        total += node.replicas
        superlink = _flag(node.argv, "--superlink") or ""
        host, _, port = superlink.rpartition(":")
        if host not in hosts or port != str(link_ports.get("fleet")):
            problems.append(f"{node.where}: --superlink {superlink}: the certificate names "
                            f"{hosts}, the fleet API is port {link_ports.get('fleet')}")
        root = _flag(node.argv, "--root-certificates") or ""
        if PurePosixPath(root).name != CA_CERT or _mounted(node, root) is None:
            problems.append(f"{node.where}: --root-certificates {root!r} is not a mounted "
                            f"{CA_CERT}")
        config = _flag(node.argv, "--node-config") or ""
        match = re.search(r"data-path=['\"]?([^'\" ]+)", config)
        if match is None:
            problems.append(f"{node.where}: no data-path in --node-config {config!r}")
            continue
        volume = _mounted(node, match.group(1))
        if volume is None or volume.removesuffix(":ro") not in node.own_volumes:
            problems.append(f"{node.where}: data-path {match.group(1)} is not on a volume of "
                            "its own")
        secrets = sorted(k for k in node.env if k.startswith("RECOPS_"))
        if secrets:
            problems.append(f"{node.where}: gets recops settings {secrets}: a SuperNode reads "
                            "the run's settings file, and no service address or secret")
        shared = [s for t, s in node.mounts.items() if s.removesuffix(":ro") == "recops-home"]
        if any(not s.endswith(":ro") for s in shared):
            problems.append(f"{node.where}: mounts the shared home writable")
    if total != settings.num_clients:
        problems.append(f"{total} SuperNodes, but federated.num_clients is "
                        f"{settings.num_clients} (the server waits for that many)")
    return problems
