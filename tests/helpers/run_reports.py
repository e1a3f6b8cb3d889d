"""Fixed ``report.json`` contents for the report and model-card tests (no run needed)."""

from __future__ import annotations

from pathlib import Path


def trainer_log_history(seed: float, steps: int = 12, distilled: bool = True) -> list[dict]:
    """A DistillationTrainer's log (``loss`` is the objective, with its parts) or, with ``distilled=False``,
    a plain Trainer's (``loss`` is the task cross-entropy)."""
    entries = []
    for step in range(1, steps + 1):
        parts = {
            "loss_task": 1.2 * seed / step + 0.05,
            "loss_kd": 0.8 * seed / step + 0.05,
            "loss_hidden": 0.0,
        }
        loss = 0.3 * parts["loss_task"] + 0.7 * parts["loss_kd"] if distilled else 1.2 * seed / step + 0.05
        entries.append(
            {
                "step": step,
                "epoch": step / steps,
                "loss": loss,
                **(parts if distilled else {}),
                "learning_rate": 5e-5,
            }
        )
        if step % 4 == 0:
            entries.append({"step": step, "epoch": step / steps, "eval_loss": 1.5 * seed / step + 0.2})
    entries.append({"step": steps, "train_loss": 0.5, "train_runtime": 3.2})  # Trainer's closing entry
    return entries


def make_run_report() -> dict:
    return {
        "task": "sentiment",
        "metric_name": "accuracy",
        "higher_is_better": True,
        "teacher": {
            "name_or_path": "textattack/bert-base-uncased-SST-2",
            "revision": "8f2e3b1",
            "metric": 0.9243,
            "parameters": 109_483_778,
            "size_bytes": 437_958_648,
            "latency_ms_b1": 12.5,
            "latency_ms_b32": 180.25,
        },
        "students": [
            {
                "name": "distilled",
                "kind": "distilled",
                "init": "teacher layers [0, 5, 11]",
                "output_dir": "runs/sst2/distilled",
                "metric": 0.8876,
                "parameters": 45_685_250,
                "size_bytes": 182_748_000,
                "latency_ms_b1": 4.1,
                "latency_ms_b32": 55.0,
                "retention": 0.8876 / 0.9243,
                "speedup_b1": 12.5 / 4.1,
                "speedup_b32": 180.25 / 55.0,
            },
            {
                "name": "no_kd_baseline",
                "kind": "no_kd_baseline",
                "init": "teacher layers [0, 5, 11]",
                "output_dir": "runs/sst2/no_kd_baseline",
                "metric": 0.8512,
                "parameters": 45_685_250,
                "size_bytes": 182_748_000,
                "latency_ms_b1": 4.0,
                "latency_ms_b32": 54.5,
                "retention": 0.8512 / 0.9243,
                "speedup_b1": 12.5 / 4.0,
                "speedup_b32": 180.25 / 54.5,
            },
        ],
        "distillation": {
            "distillation_loss": "forward_kl",
            "temperature": 3.0,
            "alpha": 0.7,
            "hidden_state_weight": 0.0,
            "hidden_state_loss": "mse",
            "hidden_layer_map": "uniform",
        },
        "data": {"dataset": "stanfordnlp/sst2", "train_size": 2000, "validation_size": 500, "test_size": 872},
        "log_history": {
            "distilled": trainer_log_history(1.0),
            "no_kd_baseline": trainer_log_history(1.3, distilled=False),
        },
    }


def make_card_run_report(output_dir: str = "runs/sst2/distilled") -> dict:
    teacher = {
        "name_or_path": "textattack/bert-base-uncased-SST-2",
        "revision": "8f2e3b1",
        "metric": 0.9243,
        "parameters": 109_483_778,
        "size_bytes": 437_958_648,
        "latency_ms_b1": 12.5,
        "latency_ms_b32": 180.25,
    }

    def student(name: str, metric: float, output_dir: str) -> dict:
        return {
            "name": name,
            "kind": name,
            "init": "teacher layers [0, 5, 11]",
            "output_dir": output_dir,
            "metric": metric,
            "parameters": 45_685_250,
            "size_bytes": 182_748_000,
            "latency_ms_b1": 4.1,
            "latency_ms_b32": 55.0,
            "retention": metric / teacher["metric"],
            "speedup_b1": 12.5 / 4.1,
            "speedup_b32": 180.25 / 55.0,
        }

    logs = [{"step": s, "loss": 1.0 / s, "loss_task": 0.6 / s, "loss_kd": 0.4 / s} for s in range(1, 5)]
    return {
        "task": "sentiment",
        "metric_name": "accuracy",
        "higher_is_better": True,
        "teacher": teacher,
        "students": [
            student("distilled", 0.8876, output_dir),
            student("no_kd_baseline", 0.8512, str(Path(output_dir).parent / "no_kd_baseline")),
        ],
        "distillation": {
            "distillation_loss": "forward_kl",
            "temperature": 3.0,
            "alpha": 0.7,
            "hidden_state_weight": 0.5,
            "hidden_state_loss": "cosine",
            "hidden_layer_map": "0:0,1:6,2:12",
        },
        "data": {"dataset": "stanfordnlp/sst2", "train_size": 2000, "validation_size": 500, "test_size": 872},
        "log_history": {"distilled": logs, "no_kd_baseline": logs},
    }
