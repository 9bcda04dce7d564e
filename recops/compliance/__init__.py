"""Compliance: the audit log, the compliance report and data-subject requests."""
