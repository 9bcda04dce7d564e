"""The base of every settings section, and how a section keeps accepting a renamed key."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator


class RenamedSettingWarning(FutureWarning):
    """A settings key was given under its old name (still accepted for one release).

    A FutureWarning, not a DeprecationWarning: Python shows it to the people who run recops,
    whose YAML, environment or flags hold the old name, not only to developers.
    """


class Section(BaseModel):
    """A settings section: unknown keys refused, assignments validated, renamed keys mapped.

    ``RENAMED`` maps a section's old key names to their new ones: an old name is accepted
    (from YAML, ``RECOPS_*`` or overrides) with a :class:`RenamedSettingWarning` naming the
    new key; both names given with different values is an error.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Set by each section that renamed a key: {"old": "new"}. The section's dotted name (for
    # messages) is SECTION.
    RENAMED: ClassVar[Mapping[str, str]] = {}
    SECTION: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        if not cls.RENAMED or not isinstance(data, Mapping):
            return data
        out = dict(data)
        for old, new in cls.RENAMED.items():
            if old not in out:
                continue
            value = out.pop(old)
            where = f"{cls.SECTION}." if cls.SECTION else ""
            if new in out and out[new] != value:
                raise ValueError(f"{where}{old} is the old name of {where}{new}, and both are "
                                 f"given with different values ({value!r} and {out[new]!r}): "
                                 f"keep {where}{new} only")
            warnings.warn(f"setting {where}{old} is renamed {where}{new}; the old name will "
                          f"stop working in the next release", RenamedSettingWarning,
                          stacklevel=2)
            out.setdefault(new, value)
        return out


def redact_url(url: str) -> str:
    """``url`` with the password of its user part (``user:secret@``) replaced by ``***``."""
    return re.sub(r"(://[^/@:?#]*:)[^/@?#]*@", r"\1***@", url)
