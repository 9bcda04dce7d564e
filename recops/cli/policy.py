"""`recops policy evaluate`: a candidate serving policy's click rate, estimated off-policy from
the impression and feedback logs (IPS, SNIPS, doubly robust, with 95% intervals)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

out = Console()
policy_app = typer.Typer(help="Serving policies: evaluate one off-policy from the logs.",
                         no_args_is_help=True)

LABELS = {"ips": "IPS", "snips": "SNIPS", "dr": "doubly robust",
          "dm": "reward model alone (no interval claim)"}


@policy_app.command("evaluate")
def evaluate_cmd(
    ctx: typer.Context,
    policy: Annotated[str | None, typer.Option(
        "--policy", help="greedy | epsilon_greedy (default: serving.policy).")] = None,
    epsilon: Annotated[float | None, typer.Option(
        "--epsilon", help="epsilon_greedy's exploration rate, in [0, 1] "
        "(default: serving.explore_epsilon).")
    ] = None,
    top_n: Annotated[int | None, typer.Option(
        "--top-n", help="epsilon_greedy's candidates (default: serving.policy_top_n).")] = None,
    event: Annotated[list[str] | None, typer.Option(
        "--event", help="A feedback event type that counts as a click when its role resolves "
                        "positive; repeat for several (default: gate.policy_events, else every "
                        "positive type of data.event_roles.roles).")] = None,
    out_path: Annotated[Path | None, typer.Option(
        "--out", "-o", dir_okay=False, help="Where to write the JSON result (default: "
                                            "<home>/reports/policy_evaluation.json).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Estimate a policy's click rate per shown slot on the lists /recommend served."""
    from recops.core.atomic import write_json
    from recops.policy.evaluate import evaluate
    from recops.policy.policies import from_settings

    # Through the settings, so a bad flag is refused exactly like a bad setting.
    settings = ctx.obj.settings(**{"serving.policy": policy, "serving.explore_epsilon": epsilon,
                                   "serving.policy_top_n": top_n, "gate.policy_events": event})
    result = evaluate(settings, from_settings(settings.serving), settings.reward_events())
    data: dict[str, Any] = result.to_dict()
    path = write_json(out_path or settings.paths.reports / "policy_evaluation.json", data)
    if as_json:
        out.print_json(json.dumps(data))
        return
    table = Table(title=f"{result.policy}: click rate per shown slot "
                        f"({', '.join(result.events)}) on {result.lists} logged lists")
    for col in ("estimator", "estimate", "95% interval", "std. error"):
        table.add_column(col, justify="left" if col == "estimator" else "right")
    for name, est in result.estimates.items():
        table.add_row(LABELS.get(name, name), f"{est.value:.4f}",
                      f"[{est.low:.4f}, {est.high:.4f}]", f"{est.se:.4f}")
    out.print(table)
    logged = ", ".join(f"{k} ({v})" for k, v in result.logged_policies.items())
    out.print(f"observed as served: {result.observed:.4f} ({result.clicks} clicks); "
              f"logged by {logged}", highlight=False, soft_wrap=True)
    if result.unsupported > 0:
        out.print(f"[yellow]warning[/]: {result.unsupported:.1%} of this policy's slot "
                  "probability is on items the logging policy never shows there (greedy "
                  "logging?): IPS and DR cannot see it and understate it", soft_wrap=True)
    if result.clicks == 0:
        out.print("[yellow]warning[/]: no feedback event carries a request_id of these lists: "
                  "send /feedback with the request_id /recommend returned", soft_wrap=True)
    out.print(f"written to {path}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")
