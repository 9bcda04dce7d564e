"""Train one RecBole 1.2.1 model on an exported recops split and score every item (peer venv only).

Run by ``benchmarks/peer_recbole.py`` with the peer virtual environment's python (RecBole is not
installed in the project's environment); imports nothing from recops. Steps:

1. RecBole loads ``<data-dir>/<dataset>/<dataset>.inter`` (and ``.item``, the whole catalogue)
   with ``eval_args`` LS valid_and_test, TO order, full mode. The file's rows are in recops'
   order (user, timestamp, item id), so RecBole's stable time sort puts the same last and second
   last event per user into test and valid. ``--expected`` holds recops' (user, valid item, test
   item) per evaluated user: any difference in RecBole's split stops the run (exit code 3).
2. Training with RecBole's own models (Pop with one fix: ``exact_pop``) and Trainer (subclassed,
   not patched): ``--max-seconds`` stops after the epoch (training + validation) in which the
   budget ran out; the best validated model (its checkpoint) is kept, as after early stopping.
   Per epoch: wall time since the start and RecBole's validation NDCG@10 (RecBole's masking:
   none for sequential models).
3. The best model scores EVERY item for each valid and test row of the evaluated users:
   ``full_sort_predict`` on RecBole's own eval rows (for SASRec the history up to the label,
   i.e. for test up to and including the valid item). Scores are written unmasked, columns in
   the order of ``item_ids``; recops' mask (training items, and the valid item for test) is
   applied by the main process with recops' code, since RecBole does not mask the history of
   sequential models and masks general models' history with its own code.

Settings here, RecBole's files untouched: checkpoints hold RecBole's Config and numpy state, so
torch.load must not default to weights_only (env var below); autograd's anomaly detection, which
importing RecBole's models switches on for the whole process, is switched off again (main).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

MODELS = {"pop": "Pop", "bpr": "BPR", "sasrec": "SASRec"}


class BudgetSpent(Exception):
    """Raised at the start of the epoch after the one in which the wall-time budget ran out."""


def budget_trainer(base: type, max_seconds: float | None) -> type:
    """``base`` (a RecBole trainer class) with a wall-time budget and a per-epoch record."""

    class BudgetTrainer(base):  # type: ignore[misc, valid-type]
        def __init__(self, config, model):  # noqa: ANN001
            super().__init__(config, model)
            self.t0 = time.perf_counter()
            self.cpu0 = time.process_time()  # CPU time: wall time means little on a busy box
            self.epoch_log: list[dict[str, float]] = []
            self.stopped_by_budget = False

        def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):  # noqa: ANN001, ANN202
            if max_seconds is not None and time.perf_counter() - self.t0 >= max_seconds:
                self.stopped_by_budget = True
                raise BudgetSpent
            return super()._train_epoch(train_data, epoch_idx, *args, **kwargs)

        def _valid_epoch(self, valid_data, *args, **kwargs):  # noqa: ANN001, ANN202
            score, result = super()._valid_epoch(valid_data, *args, **kwargs)
            self.epoch_log.append({"epoch": len(self.epoch_log),
                                   "elapsed_s": time.perf_counter() - self.t0,
                                   "cpu_s": time.process_time() - self.cpu0,
                                   "valid_ndcg@10": float(result.get("ndcg@10", float("nan")))})
            return score, result

    return BudgetTrainer


def exact_pop(base: type) -> type:
    """RecBole's Pop counting every occurrence of an item: its own ``item_cnt[item] += 1``
    counts an item once per training batch, whatever its number of rows there (RecBole issues
    1844 and 2198), so with 2,048-row batches its counts saturate at the number of batches and
    most of the top items tie. Everything else is RecBole's Pop."""

    class ExactCountPop(base):  # type: ignore[misc, valid-type]
        def calculate_loss(self, interaction):  # noqa: ANN001, ANN202
            item = interaction[self.ITEM_ID]
            self.item_cnt.index_add_(0, item, torch.ones_like(item).view(-1, 1))
            self.max_cnt = torch.max(self.item_cnt, dim=0)[0]
            return torch.nn.Parameter(torch.zeros(1)).to(self.device)

    return ExactCountPop


def config_dict(args: argparse.Namespace, workdir: Path) -> dict:
    cfg = {
        "data_path": str(args.data_dir), "checkpoint_dir": str(workdir / "saved"),
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id"]},
        "field_separator": "\t",
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user",
                      "mode": "full"},
        "metrics": ["Hit", "NDCG", "MRR"], "topk": [10], "valid_metric": "NDCG@10",
        "use_gpu": False, "device": "cpu", "show_progress": False, "seed": args.seed,
        "reproducibility": True, "state": "WARNING", "log_wandb": False,
    }
    if args.model == "pop":
        # Pop counts the item ids of its training batches: with RecBole's default negative
        # sampling it would count sampled negatives too.
        cfg.update({"train_neg_sample_args": None, "epochs": 1})
    if args.model == "sasrec":
        cfg.update({"train_neg_sample_args": None, "MAX_ITEM_LIST_LENGTH": args.max_seq_len})
    if args.epochs:
        cfg["epochs"] = args.epochs
    return cfg


def split_targets(ds, uid: str, iid: str) -> dict[int, int]:  # noqa: ANN001
    """{user id: label item id} of a built valid/test dataset (one row per user under LS)."""
    users = ds.id2token(uid, ds.inter_feat[uid].numpy()).astype(np.int64)
    items = ds.id2token(iid, ds.inter_feat[iid].numpy()).astype(np.int64)
    if len(set(users.tolist())) != len(users):
        raise SystemExit("RecBole split: more than one label row for a user")
    return dict(zip(users.tolist(), items.tolist(), strict=True))


def check_split(valid: dict[int, int], test: dict[int, int], expected: Path) -> np.ndarray:
    """recops' evaluated users; fails loudly unless RecBole's valid/test labels equal recops'."""
    exp = np.loadtxt(expected, dtype=np.int64, delimiter="\t", ndmin=2)
    bad = [(int(u), int(v), int(t), valid.get(int(u)), test.get(int(u)))
           for u, v, t in exp if valid.get(int(u)) != v or test.get(int(u)) != t]
    extra = sorted(set(valid) - set(exp[:, 0].tolist()))
    if bad or extra:
        print(f"SPLIT MISMATCH: {len(bad)} of {len(exp)} evaluated users differ "
              f"(user, recops valid, recops test, recbole valid, recbole test): {bad[:10]}; "
              f"valid rows for users recops does not evaluate: {extra[:10]}", file=sys.stderr)
        raise SystemExit(3)
    return exp[:, 0]


@torch.no_grad()
def score_rows(model, ds, users: np.ndarray, batch: int = 256) -> np.ndarray:  # noqa: ANN001
    """Scores [len(users), n_items] of ``full_sort_predict`` on ``ds``'s row of each user."""
    uid = model.USER_ID
    row_users = ds.id2token(uid, ds.inter_feat[uid].numpy()).astype(np.int64)
    row_of = {int(u): i for i, u in enumerate(row_users)}
    rows = torch.as_tensor([row_of[int(u)] for u in users], dtype=torch.long)
    model.eval()
    out = []
    for s in range(0, len(rows), batch):
        inter = ds.inter_feat[rows[s:s + batch]]
        out.append(model.full_sort_predict(inter).view(len(inter), -1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, ds.item_num), dtype=np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--model", choices=list(MODELS), required=True)
    ap.add_argument("--expected", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="npz of scores; + .json summary")
    ap.add_argument("--max-seconds", type=float)
    ap.add_argument("--epochs", type=int, help="RecBole's epochs (default: its own, 300)")
    ap.add_argument("--max-seq-len", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--recbole-pop-counts", action="store_true",
                    help="Pop with RecBole's own once-per-batch counting (see exact_pop)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    workdir = args.out.parent
    os.chdir(workdir)  # RecBole writes log/ and log_tensorboard/ into the working directory

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    t_load = time.perf_counter()
    config = Config(model=MODELS[args.model], dataset=args.dataset,
                    config_dict=config_dict(args, workdir))
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(args.threads)  # init_seed may reset it
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    uid, iid = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    valid_t = split_targets(valid_data._dataset, uid, iid)
    test_t = split_targets(test_data._dataset, uid, iid)
    users = check_split(valid_t, test_t, args.expected)
    load_s = time.perf_counter() - t_load

    init_seed(config["seed"], config["reproducibility"])
    model_class = get_model(config["model"])
    # Importing RecBole's sequential models runs sine.py's module-level
    # torch.autograd.set_detect_anomaly(True): every backward op then checks for NaN (SASRec
    # about 6x slower per batch on one CPU thread). Off again, for every model.
    torch.autograd.set_detect_anomaly(False)
    if args.model == "pop" and not args.recbole_pop_counts:
        model_class = exact_pop(model_class)
    model = model_class(config, train_data._dataset).to(config["device"])
    trainer = budget_trainer(get_trainer(config["MODEL_TYPE"], config["model"]),
                             args.max_seconds)(config, model)
    with contextlib.suppress(BudgetSpent):
        trainer.fit(train_data, valid_data, saved=True, show_progress=False, verbose=False)
    wall = time.perf_counter() - trainer.t0
    cpu = time.process_time() - trainer.cpu0
    ckpt = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt["state_dict"])
    model.load_other_parameter(ckpt.get("other_parameter"))
    own_test = trainer.evaluate(test_data, load_best_model=False)

    item_ids = dataset.id2token(iid, np.arange(1, dataset.item_num)).astype(np.int64)
    np.savez_compressed(
        args.out, users=users, item_ids=item_ids,
        valid_targets=np.asarray([valid_t[int(u)] for u in users]),
        test_targets=np.asarray([test_t[int(u)] for u in users]),
        valid_scores=score_rows(model, valid_data._dataset, users)[:, 1:],
        test_scores=score_rows(model, test_data._dataset, users)[:, 1:])
    best = ckpt.get("epoch", -1)
    log = trainer.epoch_log
    summary = {"model": MODELS[args.model], "wall_s": wall, "cpu_s": cpu, "load_s": load_s,
               "epochs": len(log), "best_epoch": best,
               "time_to_best_s": next((e["elapsed_s"] for e in log if e["epoch"] == best), wall),
               "stopped_by_budget": trainer.stopped_by_budget, "epoch_log": log,
               "recbole_test": {k: float(v) for k, v in (own_test or {}).items()},
               "max_seq_len": args.max_seq_len if args.model == "sasrec" else None,
               "n_items": int(dataset.item_num - 1), "n_users": int(dataset.user_num - 1),
               "torch": torch.__version__, "threads": torch.get_num_threads()}
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
