"""A run's directory: the one place that names a run's files, writes them durably, and audits."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.errors import DataError
from recops.fsutil import write_json
from recops.hashing import sha256_file

if TYPE_CHECKING:
    import pandas as pd

    from recops.config import Settings
    from recops.training.trainer import TrainResult


class RunDir:
    """``<home>/runs/<run_id>/``: what each stage of one run leaves for the next and the report.

    Every file is written here, atomically (a reader sees the old file or the new one) and
    fsync'd; trainers return results and the caller hands them to :meth:`save_training`.
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

    # -- tables and checkpoints ----------------------------------------------------------------

    def write_frame(self, name: str, df: pd.DataFrame) -> Path:
        path = self.file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        df.to_parquet(tmp, index=False)
        _fsync(tmp)
        os.replace(tmp, path)
        return path

    def read_frame(self, name: str) -> pd.DataFrame:
        import pandas as pd

        path = self.file(name)
        if not path.exists():
            raise DataError(f"{path} is missing: run the stage that writes it first")
        return pd.read_parquet(path)

    def save_checkpoint(self, ckpt: dict[str, Any]) -> Path:
        from recops.training.models import save_checkpoint

        return save_checkpoint(ckpt, self.file(self.CHECKPOINT))

    def read_checkpoint(self) -> dict[str, Any]:
        from recops.training.models import read_checkpoint

        return read_checkpoint(self.file(self.CHECKPOINT))

    def save_training(self, result: TrainResult) -> None:
        """A trainer's result: the checkpoint, the per-epoch (or per-round) history, privacy."""
        self.save_checkpoint(result.checkpoint)
        self.write_json(self.HISTORY, result.history)
        self.write_json(self.PRIVACY, result.privacy)

    def save_resume(self, state: dict[str, Any]) -> None:
        """The trainer's state after an epoch, for ``resume`` (see trainer.train_model)."""
        import torch

        path = self.file(self.RESUME)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        _fsync(tmp)
        os.replace(tmp, path)

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
        from recops.compliance.audit import AuditLog

        AuditLog(self._audit_log).append(stage, run_id=self.run_id, inputs=inputs,
                                         outputs=outputs, config=self._config, result=result,
                                         details=details)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
