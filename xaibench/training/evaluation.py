"""Predictions on a split and medmnist's AUC/ACC (its Evaluator's functions, also for synthetic data)."""
from __future__ import annotations

import numpy as np
import torch

from xaibench.data import ImageDataset


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA, a no-op elsewhere (the training and evaluation precision policy)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def eval_batch_size(image_size: int) -> int:
    """Images per evaluation batch: 512 up to 64 px, then as many pixels as 512 images of 64 px (128 at 128 px,
    41 at 224 px), so that a batch's float copy and activations stay the same size at every image size."""
    return max(1, min(512, 512 * 64 * 64 // (image_size * image_size)))


@torch.inference_mode()
def predict_proba(model, dataset: ImageDataset, device: torch.device | str,
                  batch_size: int | None = None) -> torch.Tensor:
    """Class probabilities [N, C] of the unmasked images, on `device`; the split crosses to the device one
    uint8 batch at a time (default size `eval_batch_size`)."""
    device = torch.device(device)
    batch_size = batch_size or eval_batch_size(dataset.images.shape[-1])
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, len(dataset), batch_size):
        x, _ = dataset.batch(slice(start, start + batch_size), device=device)
        with autocast_for(device):
            outputs.append(model.forward_fn(x))
    model.train(was_training)
    return torch.cat(outputs)


def classification_scores(probabilities: torch.Tensor, dataset: ImageDataset) -> dict[str, float]:
    """AUC and ACC as medmnist's Evaluator defines them for the dataset's task."""
    from medmnist.evaluator import getACC, getAUC

    y_score = probabilities.float().cpu().numpy()
    y_true = dataset.labels.numpy().reshape(-1, 1)
    task = dataset.info.task
    return {"auc": float(getAUC(y_true, y_score, task)), "acc": float(getACC(y_true, y_score, task))}


def medmnist_evaluate(probabilities: torch.Tensor, dataset: ImageDataset, root) -> dict[str, float]:
    """Test-split AUC/ACC through medmnist's own Evaluator (reads the labels from the npz file)."""
    from medmnist import Evaluator

    evaluator = Evaluator(dataset.info.name, dataset.split, size=dataset.info.size, root=str(root))
    y_score = probabilities.float().cpu().numpy()
    if not np.array_equal(evaluator.labels.reshape(-1), dataset.labels.numpy()):
        raise RuntimeError("labels of the loaded split differ from the Evaluator's")
    auc, acc = evaluator.evaluate(y_score)
    return {"auc": float(auc), "acc": float(acc)}
