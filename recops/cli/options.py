"""Typer options generated from a settings section's fields, so each is declared once (in
pydantic ``Field``): the flag's help is the field's description, its choices the field's
``Literal``, and its value is checked by the settings (a bad one is one line and exit 2)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

R = TypeVar("R")


@dataclass(frozen=True)
class SettingOption:
    """One settings key as a command-line option."""

    key: str  # the dotted settings key, e.g. "federated.num_clients"
    param: str  # the command's parameter name (unique across sections)
    annotation: Any  # Annotated[<type> | None, typer.Option(...)]


def _choices(annotation: Any) -> tuple[Any, ...]:
    return get_args(annotation) if get_origin(annotation) is Literal else ()


def _option(key: str, field: FieldInfo, names: Sequence[str]) -> Any:
    """``Annotated[str | None, typer.Option(...)]`` for one field (None: "as configured")."""
    choices = _choices(field.annotation)
    default = field.get_default(call_default_factory=True)
    # Parentheses, not brackets: Typer's help renders rich markup.
    help_text = f"{field.description or ''} ({key}, default {default!r})".strip()
    if field.annotation is bool:
        decls = [f"{n}/--no-{n.removeprefix('--')}" for n in names if n.startswith("--")]
        return Annotated[bool | None, typer.Option(*decls, help=help_text)]
    if field.annotation not in (int, float, str) and not choices:
        raise TypeError(f"setting {key}: no command-line form for {field.annotation!r}")
    # Passed on as text: pydantic converts and checks it (typer's own checks would word the
    # error differently from every other bad setting).
    kinds: dict[Any, str] = {int: "INTEGER", float: "NUMBER", str: "TEXT"}
    metavar = "[" + "|".join(map(str, choices)) + "]" if choices else kinds[field.annotation]
    return Annotated[str | None, typer.Option(*names, help=help_text, metavar=metavar,
                                              show_default=False)]


def section_options(section: str, model: type[BaseModel], *,
                    only: Collection[str] | None = None,
                    names: Mapping[str, Sequence[str]] | None = None,
                    aliases: Mapping[str, Sequence[str]] | None = None) -> list[SettingOption]:
    """An option per field of ``model`` (the settings section called ``section``).

    A field's option is ``--<field-name-in-kebab-case>`` unless ``names`` gives its names;
    ``aliases`` adds further names (short flags, names kept for compatibility).
    """
    out = []
    for name, field in model.model_fields.items():
        if only is not None and name not in only:
            continue
        decls = [*(names or {}).get(name, ["--" + name.replace("_", "-")]),
                 *(aliases or {}).get(name, ())]
        key = f"{section}.{name}"
        # A parameter name is an identifier: "train.distributed" becomes train__distributed.
        param = f"{section.replace('.', '__')}__{name}"
        out.append(SettingOption(key, param, _option(key, field, decls)))
    return out


def with_setting_options(*groups: Sequence[SettingOption]
                         ) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Give a command the options of ``groups``; it receives them as ``overrides``.

    The command declares ``overrides: dict[str, Any]`` (settings key -> the flag's value, None
    when not given), ready for ``ctx.obj.settings(**overrides)``.
    """
    options = [o for group in groups for o in group]

    def decorate(command: Callable[..., R]) -> Callable[..., R]:
        sig = inspect.signature(command, eval_str=True)
        if "overrides" not in sig.parameters:
            raise TypeError(f"{command.__name__} must take an 'overrides' parameter")
        kept = [p for p in sig.parameters.values() if p.name != "overrides"]
        added = [inspect.Parameter(o.param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                   annotation=o.annotation) for o in options]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> R:
            overrides = {o.key: kwargs.pop(o.param) for o in options}
            return command(*args, overrides=overrides, **kwargs)

        # Typer reads the parameters from the signature: the command's own, then the settings'.
        params = [*kept, *added]
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate
