"""Training: one trainer driven by objectives (`ce`, OFA's three losses), checkpoints keyed by their inputs."""
from xaibench.training.config import ModelConfig, TrainConfig
from xaibench.training.evaluation import classification_scores, medmnist_evaluate, predict_proba
from xaibench.training.objectives import OBJECTIVES, Objective, register_objective
from xaibench.training.trainer import (DataSpec, TrainedModel, checkpoint_key, checkpoint_path, load_trained,
                                       train_model)

__all__ = ["DataSpec", "ModelConfig", "OBJECTIVES", "Objective", "TrainConfig", "TrainedModel", "checkpoint_key",
           "checkpoint_path", "classification_scores", "load_trained", "medmnist_evaluate", "predict_proba",
           "register_objective", "train_model"]
