"""Flower's run-config defaults (pyproject's ``[tool.flwr.app.config]``), generated from the
settings: Flower reads them from the file, so the file is rewritten from the settings' fields.

``python -m federated.app_config`` rewrites the table; ``--check`` only says whether it is stale.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from federated.common import EXTRA_KEYS, RUN_CONFIG_KEYS
from recops.config import Settings
from recops.paths import CHECKOUT

PYPROJECT = CHECKOUT / "pyproject.toml"
HEADER = "[tool.flwr.app.config]"
# What each key with no settings counterpart means (the others say their settings key).
EXTRA_HELP = {
    "run-dir": "the run folder federated.runner prepared (set by the runner)",
    "round-timeout": "seconds a round waits for its clients",
    "local-batch-size": "0 = steps-matched: train.batch_size x the client's share of users "
                        "(see federated.common)",
}


def default_run_config() -> dict[str, Any]:
    """Every run-config key with its default: the settings' defaults, and the extra keys'."""
    fields = {"federated": Settings.model_fields["federated"].annotation,
              "privacy": Settings.model_fields["privacy"].annotation}
    out: dict[str, Any] = {}
    for key, dotted in RUN_CONFIG_KEYS.items():
        section, name = dotted.split(".")
        model: Any = fields[section]
        out[key] = model.model_fields[name].get_default(call_default_factory=True)
    return {**out, **EXTRA_KEYS}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for the plain values used here
    raise TypeError(f"run-config default {value!r}: not a TOML scalar")


def render_table() -> str:
    """The ``[tool.flwr.app.config]`` table, each key under a comment naming what it sets."""
    fields: Any = Settings.model_fields
    lines = [HEADER,
             "# Generated from the settings by `python -m federated.app_config`: do not edit."]
    for key, value in default_run_config().items():
        if key in RUN_CONFIG_KEYS:
            section, name = RUN_CONFIG_KEYS[key].split(".")
            description = fields[section].annotation.model_fields[name].description
            lines.append(f"# {section}.{name}: {description}")
        else:
            lines.append(f"# {EXTRA_HELP[key]}")
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def rewrite(text: str) -> str:
    """``text`` (a pyproject.toml) with its run-config table replaced by :func:`render_table`."""
    table = re.compile(r"^\[tool\.flwr\.app\.config\]\n(?:(?!\[).*\n?)*", re.MULTILINE)
    if not table.search(text):
        raise ValueError(f"no {HEADER} table to rewrite")
    rendered = render_table()
    return table.sub(lambda _: rendered + "\n", text, count=1).rstrip("\n") + "\n"


def main(argv: list[str] | None = None, path: Path = PYPROJECT) -> int:
    """Rewrite the table in ``path`` (exit 0), or with ``--check`` exit 1 when it is stale."""
    args = sys.argv[1:] if argv is None else argv
    text = path.read_text(encoding="utf-8")
    new = rewrite(text)
    if "--check" in args:
        if new != text:
            print(f"{path}: {HEADER} is stale; run `python -m federated.app_config`")
            return 1
        return 0
    path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
