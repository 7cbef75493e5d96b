"""What the progress bar shows while waiting: the loss, the live reward of an RL job, or that an
evaluation is running."""

from tuneloop.cli.follow import _progress_metrics


def test_progress_text_per_technique():
    assert _progress_metrics({"technique": "sft", "loss": 0.12345, "metrics": None}) == "loss 0.1235"
    assert _progress_metrics({"technique": "dpo", "loss": None, "metrics": None}) == "loss -"
    live = {"reward": 0.5, "reward_std": 0.25, "kl": 0.0123, "completions/mean_length": 7.4, "reward/failed": 0.125}
    assert _progress_metrics({"technique": "rlvr", "loss": 0.0, "metrics": live}) == \
        "reward 0.500±0.250 kl 0.0123 len 7 failed 12%"
    assert _progress_metrics({"technique": "rlaif", "loss": 0.0, "metrics": {"reward": 1.0}}) == "reward 1.000±0.000"
    assert _progress_metrics({"technique": "eval", "loss": None, "metrics": None}) == "evaluating"
