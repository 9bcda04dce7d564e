"""Serving policies over the model's ranking, their impression logs, and off-policy evaluation."""
