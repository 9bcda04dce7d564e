"""`recops serve` (the BentoML service over the champion) and `recops package` (a Bento)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

out = Console()
SERVICE = "serving.service:Recommender"


def _bentoml() -> str:
    exe = Path(sys.executable).with_name("bentoml")
    return str(exe) if exe.exists() else "bentoml"


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`."""

    @app.command("serve")
    def serve_cmd(
        ctx: typer.Context,
        port: Annotated[int | None, typer.Option("--port", help="Port (serving.port).")] = None,
        host: Annotated[str | None, typer.Option("--host", help="Interface (serving.host; "
                                                 "default loopback only).")] = None,
        reload: Annotated[bool, typer.Option("--reload", help="Restart when serving/ code "
                                             "changes (development).")] = False,
    ) -> None:
        """Serve the champion over HTTP (/recommend, /feedback, /similar, /healthz, /metrics)."""
        from recops.environment import child_env
        from recops.paths import CHECKOUT
        from recops.release import registry

        settings = ctx.obj.settings(**{"serving.port": port, "serving.host": host})
        champ = registry.resolve(settings, registry.CHAMPION)  # clear error when there is none
        cmd = [_bentoml(), "serve", SERVICE, "--host", settings.serving.host,
               "--port", str(settings.serving.port)]
        if reload:
            cmd.append("--reload")
        auth = "on" if settings.serving.auth_token else "off"
        out.print(f"serving {champ} on http://{settings.serving.host}:{settings.serving.port} "
                  f"(online store {settings.stores.online}, auth {auth})")
        proc = subprocess.run(cmd, cwd=CHECKOUT, env=child_env(settings), check=False)
        raise typer.Exit(proc.returncode)

    @app.command("package")
    def package_cmd(
        ctx: typer.Context,
        tag: Annotated[str, typer.Option("--tag", help="Model to package (default: the "
                                         "champion).")] = "champion",
    ) -> None:
        """Build a Bento (service code + the model) with `bentoml build`, offline."""
        from recops.core.audit import AuditLog
        from recops.environment import child_env
        from recops.errors import RegistryError
        from recops.paths import CHECKOUT
        from recops.release import registry

        settings = ctx.obj.settings()
        model = registry.resolve(settings, tag)
        spec = yaml.safe_load((CHECKOUT / "serving" / "bentofile.yaml").read_text())
        spec["models"] = [model]
        spec.setdefault("labels", {})["model"] = model.split(":")[1]
        with tempfile.TemporaryDirectory() as tmp:
            bentofile = Path(tmp) / "bentofile.yaml"
            bentofile.write_text(yaml.safe_dump(spec, sort_keys=False))
            with out.status(f"bentoml build with {model}"):
                proc = subprocess.run([_bentoml(), "build", "-f", str(bentofile), "-o", "tag",
                                       str(CHECKOUT)], cwd=CHECKOUT, env=child_env(settings),
                                      capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            AuditLog(settings.paths.audit_log).append("package", inputs={"model": model},
                                                      result="failed", details={"error": tail})
            raise RegistryError(f"`bentoml build` failed: {tail}")
        bento = proc.stdout.strip().splitlines()[-1].replace("__tag__:", "").strip()
        AuditLog(settings.paths.audit_log).append("package", inputs={"model": model},
                                                  outputs={"bento": bento})
        out.print(f"built bento {bento} with model {model} in {settings.paths.bentoml_home}")
