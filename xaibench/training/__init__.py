"""Training: OFA's three losses, the baselines' cross-entropy, checkpoints keyed by their inputs."""
from xaibench.training.evaluation import classification_scores, medmnist_evaluate, predict_proba
from xaibench.training.trainer import DataSpec, TrainConfig, TrainedModel, checkpoint_key, checkpoint_path, load_trained, train_model

__all__ = ["DataSpec", "TrainConfig", "TrainedModel", "checkpoint_key", "checkpoint_path", "classification_scores", "load_trained",
           "medmnist_evaluate", "predict_proba", "train_model"]
