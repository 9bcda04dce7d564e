"""A run's directory: the one place that names a run's files, writes them durably, and audits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.core.atomic import atomic_file, write_json
from recops.core.audit import AuditLog
from recops.core.hashing import sha256_file
from recops.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from recops.config import Settings


class RunDir:
    """``<home>/runs/<run_id>/``: what each stage of one run leaves for the next and the report.

    Every file is written here, atomically (a reader sees the old file or the new one) and
    fsync'd; trainers return results and the caller saves them (``TrainResult.save(run)``).
    ``federated/`` and ``partitions/`` are the Flower run's own exchange folder (written for the
    ServerApp/ClientApp processes by ``federated.runner``, which gets it from :meth:`file`).
    """

    # The training record (inputs key, mode, kind, validation metrics, privacy, timings).
    TRAIN = "train.json"
    CHECKPOINT = "checkpoint.pt"
    RESUME = "last.pt"  # the resumable training state, replaced after every epoch
    HISTORY = "history.json"
    PRIVACY = "privacy.json"
    LABELS = "labels.parquet"  # the labelled frame the model trained and is evaluated on
    ROUNDS = "federated_rounds.json"  # written by the Flower ServerApp, one row per round
    FEDERATED = "federated"
    PARTITIONS = "partitions"
    VALIDATION = "validation.json"
    FEATURES = "features.json"
    METRICS = "metrics.json"  # test metrics, from the evaluate stage
    CHAMPION_METRICS = "champion_metrics.json"
    GATE = "gate.json"
    REGISTER = "register.json"
    REPORT = "report.json"
    # A retraining cycle's inputs.
    COLLECT = "collect.json"
    FEEDBACK = "feedback.parquet"
    WINDOW = "window.json"
    EVAL_USERS = "eval_users.json"

    def __init__(self, path: Path, *, audit_log: Path | None = None,
                 config: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self._audit_log = audit_log
        self._config = config

    @classmethod
    def of(cls, settings: Settings, run_id: str) -> RunDir:
        """The run directory of ``run_id`` under this home, auditing to the home's log."""
        return cls(settings.paths.runs / run_id, audit_log=settings.paths.audit_log,
                   config=settings.public_dict())

    @property
    def run_id(self) -> str:
        return self.path.name

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        return self.file(name).exists()

    def sha256(self, name: str) -> str:
        return sha256_file(self.file(name))

    # -- JSON records --------------------------------------------------------------------------

    def write_json(self, name: str, obj: Any) -> Path:
        return write_json(self.file(name), obj)

    def read_json(self, name: str) -> Any:
        path = self.file(name)
        if not path.exists():
            raise DataError(f"{path} is missing: run the stage that writes it first")
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path} cannot be read ({exc}); run its stage again") from exc

    def done(self, name: str, key: dict[str, Any]) -> bool:
        """Whether the stage that writes ``name`` already ran with exactly these inputs."""
        if not self.has(name):
            return False
        record = self.read_json(name)
        return all(record.get(k) == v for k, v in key.items())

    # -- tables and torch state -----------------------------------------------------------------

    def write_frame(self, name: str, df: pd.DataFrame) -> Path:
        path = self.file(name)
        with atomic_file(path) as f:
            df.to_parquet(f, index=False)
        return path

    def read_frame(self, name: str) -> pd.DataFrame:
        import pandas as pd

        path = self.file(name)
        if not path.exists():
            raise DataError(f"{path} is missing: run the stage that writes it first")
        return pd.read_parquet(path)

    def save_resume(self, state: dict[str, Any]) -> None:
        """The trainer's state after an epoch, for ``resume`` (see trainer.train_model)."""
        import torch

        with atomic_file(self.file(self.RESUME)) as f:
            torch.save(state, f)

    def load_resume(self) -> dict[str, Any]:
        import torch

        from recops.errors import TrainingError

        path = self.file(self.RESUME)
        if not path.is_file():
            raise TrainingError(f"cannot resume: {path} does not exist")
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
        return state

    # -- audit ---------------------------------------------------------------------------------

    def audit(self, stage: str, *, inputs: dict[str, Any], outputs: dict[str, Any],
              result: str = "ok", details: dict[str, Any] | None = None) -> None:
        """Append this run's record of ``stage`` to the home's hash-chained audit log."""
        if self._audit_log is None:
            raise DataError(f"{self!r} was opened without an audit log: use RunDir.of(settings, "
                            "run_id)")
        AuditLog(self._audit_log).append(stage, run_id=self.run_id, inputs=inputs,
                                         outputs=outputs, config=self._config, result=result,
                                         details=details)

