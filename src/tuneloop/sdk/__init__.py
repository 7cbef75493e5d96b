"""The Python SDK, after SageMaker V3's trainer classes. Same services as the CLI underneath
(tuneloop.service.app): trainers in train.py, registered datasets and evaluators in assets.py,
evaluation in evaluate.py.

    from tuneloop import DPOTrainer, TrainingType
    job = DPOTrainer(model="tuneloop/tiny-qwen3", training_type=TrainingType.LORA,
                     model_package_group="my-models", training_dataset="prefs.jsonl").train(wait=True)
    print(job.status, job.output_path, job.model_package_version)
"""

from __future__ import annotations

from tuneloop.sdk.assets import DataSet, Evaluator, EvaluatorType
from tuneloop.sdk.evaluate import (BenchMarkEvaluator, CustomScorerEvaluator, EvaluationResult,
                                   LLMAsJudgeEvaluator)
from tuneloop.sdk.train import (CustomizationTechnique, DPOTrainer, RLAIFTrainer, RLVRTrainer, SFTTrainer,
                                TrainingJob, TrainingType, list_supported_models)

__all__ = ["BenchMarkEvaluator", "CustomScorerEvaluator", "CustomizationTechnique", "DPOTrainer", "DataSet",
           "EvaluationResult", "Evaluator", "EvaluatorType", "LLMAsJudgeEvaluator", "RLAIFTrainer", "RLVRTrainer",
           "SFTTrainer", "TrainingJob", "TrainingType", "list_supported_models"]
