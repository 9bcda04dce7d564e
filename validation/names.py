"""Names of what is validated: the lake's tables plus serving's feedback batches."""

from __future__ import annotations

from recops import schema

FEEDBACK = "feedback"
SUITE_TABLES = (*schema.TABLES, FEEDBACK)
