"""tuneloop: self-hosted model customization (SFT, DPO, RLVR, RLAIF; LoRA or full-rank) with the SageMaker V3
trainer API. Heavy libraries load only when a job trains, so importing tuneloop is cheap.

    from tuneloop import SFTTrainer, TrainingType
    job = SFTTrainer(model="tuneloop/tiny-qwen3", training_type=TrainingType.LORA,
                     training_dataset="train.jsonl").train(wait=True)
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "BenchMarkEvaluator",
    "CustomScorerEvaluator",
    "CustomizationTechnique",
    "EvaluationResult",
    "LLMAsJudgeEvaluator",
    "DPOTrainer",
    "DataSet",
    "Evaluator",
    "EvaluatorType",
    "RLAIFTrainer",
    "RLVRTrainer",
    "SFTTrainer",
    "TrainingJob",
    "TrainingType",
    "TuneloopError",
    "list_supported_models",
]

from tuneloop.errors import TuneloopError
from tuneloop.sdk import (BenchMarkEvaluator, CustomScorerEvaluator, EvaluationResult, LLMAsJudgeEvaluator,
                          CustomizationTechnique, DataSet, DPOTrainer, Evaluator, EvaluatorType, RLAIFTrainer,
                          RLVRTrainer, SFTTrainer, TrainingJob, TrainingType, list_supported_models)
