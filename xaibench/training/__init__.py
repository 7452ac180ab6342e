"""Training: one trainer driven by objectives (`ce`, OFA's three losses), checkpoints keyed by their inputs."""
from xaibench.data.spec import DataSpec
from xaibench.training.building import build_model, model_kwargs_for
from xaibench.training.checkpoints import (
    TrainedModel,
    checkpoint_key,
    checkpoint_path,
    existing_checkpoint,
    load_trained,
)
from xaibench.training.config import ModelConfig, TrainConfig
from xaibench.training.evaluation import classification_scores, medmnist_evaluate, predict_proba
from xaibench.training.objectives import OBJECTIVES, Objective, register_objective
from xaibench.training.trainer import train_model

__all__ = ["DataSpec", "ModelConfig", "OBJECTIVES", "Objective", "TrainConfig", "TrainedModel", "build_model",
           "checkpoint_key", "checkpoint_path", "classification_scores", "existing_checkpoint", "load_trained",
           "medmnist_evaluate", "model_kwargs_for", "predict_proba", "register_objective", "train_model"]
