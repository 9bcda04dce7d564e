"""The exceptions recops raises on purpose; the CLI turns each into one line and exit code 2.

    RecopsError
    ├── ConfigError            a setting is missing or has a bad value
    ├── DataError              input data cannot be read or is malformed
    │   └── DownloadError      a dataset could not be fetched or failed its checksum
    ├── ValidationFailed       a batch failed blocking expectations (it was quarantined)
    ├── FeatureError           feature store setup, materialisation or retrieval failed
    ├── TrainingError          training cannot start or could not finish
    │   └── PrivacyBudgetExceeded  the projected privacy spend passes the budget
    ├── RegistryError          a model is missing from, or malformed in, the model store
    ├── GateRejected           the challenger did not pass the promotion gate
    └── AuditError             the audit chain is broken or cannot be written
"""

from __future__ import annotations


class RecopsError(Exception):
    """Base class: a failure a user can act on. The message says what, where, and what to do."""


class ConfigError(RecopsError):
    pass


class DataError(RecopsError):
    pass


class DownloadError(DataError):
    pass


class ValidationFailed(RecopsError):
    def __init__(self, message: str, *, quarantine_path: str | None = None,
                 failed: list[str] | None = None) -> None:
        super().__init__(message)
        self.quarantine_path = quarantine_path
        self.failed = failed or []


class FeatureError(RecopsError):
    pass


class TrainingError(RecopsError):
    pass


class PrivacyBudgetExceeded(TrainingError):
    pass


class RegistryError(RecopsError):
    pass


class GateRejected(RecopsError):
    pass


class AuditError(RecopsError):
    pass
