"""The SDK's evaluators (SageMaker V3 names): CustomScorerEvaluator, LLMAsJudgeEvaluator and
BenchMarkEvaluator run through the evaluation service (service/evaluations.py), as `tuneloop
eval` does, but in this process; evaluate() returns an EvaluationResult.

    result = CustomScorerEvaluator(evaluator="builtin:exact_match", dataset="val.jsonl", model=job).evaluate()
"""

from __future__ import annotations

from typing import Any

from tuneloop.evaluation.run import EvalRequest
from tuneloop.sdk.common import services as _services


class EvaluationResult:
    """What an evaluator's `evaluate()` returns: it has run (evaluation is synchronous here), so
    `wait()` returns at once. `results` holds the metrics of the model (and base), `output_path` the
    folder with results.json, report.md and metrics.png."""

    def __init__(self, result: dict[str, Any]):
        self.results = result
        self.status = "Completed"
        self.output_path = result["output"]

    def wait(self) -> "EvaluationResult":
        return self

    def refresh(self) -> "EvaluationResult":
        return self

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.results["model"])

    @property
    def base_metrics(self) -> dict[str, float] | None:
        return dict(self.results["base"]) if self.results.get("base") else None

    def show_results(self) -> None:
        from pathlib import Path

        print(Path(self.output_path, "report.md").read_text())


class _Evaluation:
    def __init__(self, model: Any, dataset: Any, *, evaluate_base_model: bool = False, s3_output_path: str | None = None,
                 output_path: str | None = None, project: str | None = None, max_new_tokens: int = 64,
                 samples: int | None = None):
        self.model = str(getattr(model, "output_path", None) or model)   # a TrainingJob, a reference or a folder
        self.dataset = str(dataset) if dataset is not None else None
        self.evaluate_base_model = evaluate_base_model
        self.output = output_path or s3_output_path
        self.project, self.max_new_tokens, self.samples = project, max_new_tokens, samples

    def _run(self, **kwargs: Any) -> EvaluationResult:
        from tuneloop.errors import ValidationError

        if not self.dataset:
            raise ValidationError("No evaluation dataset given.", hint="Pass dataset='eval.jsonl'.", param="dataset")
        req = EvalRequest(model=self.model, dataset=self.dataset, compare_base=self.evaluate_base_model,
                          output=self.output, project=self.project, max_new_tokens=self.max_new_tokens,
                          samples=self.samples, **kwargs)
        return EvaluationResult(_services().evaluations.evaluate(req))


class CustomScorerEvaluator(_Evaluation):
    """Score a model's answers with a reward function: an Evaluator, or any reward reference
    (builtin:NAME, file.py:FUNC, an http(s) URL, grader JSON).

        CustomScorerEvaluator(evaluator="builtin:exact_match", dataset="val.jsonl", model=job,
                              evaluate_base_model=True).evaluate().metrics"""

    def __init__(self, evaluator: Any, dataset: Any, model: Any, **kwargs: Any):
        super().__init__(model, dataset, **kwargs)
        self.evaluators = [str(e) for e in (evaluator if isinstance(evaluator, (list, tuple)) else [evaluator])]

    def evaluate(self) -> EvaluationResult:
        return self._run(evaluators=self.evaluators, technique="rlvr")


class LLMAsJudgeEvaluator(_Evaluation):
    """A judge model scores the answers on built-in metrics (Correctness, Helpfulness, Harmlessness,
    Conciseness, Summarize) and custom rubric prompts; with evaluate_base_model=True it also
    compares the model's and the base model's answers pairwise for a win rate.

        LLMAsJudgeEvaluator(model=job, evaluator_model="openai:gpt-4o-mini@http://host/v1",
                            dataset="prompts.jsonl", builtin_metrics=["Correctness"]).evaluate()"""

    def __init__(self, model: Any, evaluator_model: str, dataset: Any, builtin_metrics: list[str] | None = None,
                 custom_metrics: list[Any] | None = None, **kwargs: Any):
        super().__init__(model, dataset, **kwargs)
        names = [m if str(m).startswith("Builtin.") else f"Builtin.{str(m).capitalize()}" for m in builtin_metrics or []]
        self.evaluators = names + [str(getattr(m, "ref", m)) for m in custom_metrics or []]
        if not self.evaluators and not self.evaluate_base_model:
            self.evaluators = ["Builtin.Correctness"]
        self.judge = evaluator_model

    def evaluate(self) -> EvaluationResult:
        return self._run(evaluators=self.evaluators, judge=self.judge, technique="rlvr")


class BenchMarkEvaluator(_Evaluation):
    """A standard benchmark (e.g. "mmlu", "gsm8k", "hellaswag") through EleutherAI's lm-eval, when it
    and the benchmark's data are available; otherwise a clear error saying what is missing."""

    def __init__(self, benchmark: Any, model: Any, **kwargs: Any):
        super().__init__(model, None, **kwargs)
        self.benchmark = str(getattr(benchmark, "value", benchmark)).lower()

    def evaluate(self) -> EvaluationResult:
        return EvaluationResult(_services().evaluations.benchmark(self.benchmark, self.model, project=self.project,
                                                                  samples=self.samples, output=self.output))
