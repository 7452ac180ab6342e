"""Cascading model parameter randomization (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

`cascade_stages(model)` splits a model's parameters into stages from the output down to the input;
`randomized_copies(model, generator)` yields copies with the top 1, 2, ... stages re-initialised. A method whose
maps survive the randomization of the whole network explains the input, not the model (metrics/sanity.py).

Stages. ViT family (vit, ofa, segm, or a wrapped timm ViT): "head" (the encoder's final norm and linear head and,
for OFA/Segm, the explanation head: decoder, decoder norm, patch/class projections, class embeddings and logit
scale), then "block <depth-1>" ... "block 0", then "embed" (patch embedding, position embedding, class, register
and mask tokens). ResNets (timm or torchvision): "head" (fc), "layer4" ... "layer1", "stem" (conv1, bn1). The
modules registered before the body (blocks / layer1..4) belong to the input stage, those after it to "head", so
every parameter of the model lies in exactly one stage (checked on every call).

Re-initialisation, with draws from the given generator only (the global RNG is never used): weights of norm
layers 1 and their biases 0 (BatchNorm running statistics reset too); every parameter named "bias" 0; every other
parameter, matrices, convolution kernels, tokens, position embeddings, LayerScale gammas and OFA's 0-d log logit
scale alike, N(0, 0.02^2) truncated at 2 standard deviations (timm's ViT initialisation). For the logit scale that
means a scale of about 1 instead of 10: it multiplies every phi of an image alike, so ranks do not change.
"""
from __future__ import annotations

import copy
from typing import Iterator

import torch
from torch import nn

from xaibench.errors import XaibenchError

INIT_STD = 0.02
RESNET_LAYERS = ("layer1", "layer2", "layer3", "layer4")
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)

Stage = tuple[str, list[nn.Module]]


class DirectParameters(nn.Module):
    """A stage's share of the parameters a module holds itself (a ViT's tokens and position embedding, OFA's class
    embeddings): the same Parameter objects, so re-initialising them here changes the model. Not part of the model."""

    def __init__(self, owner: nn.Module):
        super().__init__()
        for name, parameter in owner.named_parameters(recurse=False):
            self.register_parameter(name, parameter)


def _core(model: nn.Module) -> nn.Module:
    """The network inside an xaibench model: a ViT classifier's / OFA's `encoder`, a wrapped classifier's `net`."""
    for attribute in ("encoder", "net"):
        inner = getattr(model, attribute, None)
        if isinstance(inner, nn.Module):
            return inner
    return model


def _body(core: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The core's stages between input and head, from the input up, or None for an unknown architecture."""
    blocks = getattr(core, "blocks", None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and hasattr(core, "patch_embed") and len(blocks):
        return [(f"block {i}", block) for i, block in enumerate(blocks)]
    if hasattr(core, "conv1") and hasattr(core, "fc") and all(
            isinstance(getattr(core, name, None), nn.Module) for name in RESNET_LAYERS):
        return [(name, getattr(core, name)) for name in RESNET_LAYERS]
    return None


def _split_children(core: nn.Module, body: list[tuple[str, nn.Module]]) -> tuple[list[nn.Module], list[nn.Module]]:
    """The core's children registered before the body (input side) and after it (head side)."""
    body_ids = {id(module) for _, module in body}
    if isinstance(getattr(core, "blocks", None), (nn.Sequential, nn.ModuleList)):
        body_ids.add(id(core.blocks))
    before, after, seen_body = [], [], False
    for child in core.children():
        if id(child) in body_ids:
            seen_body = True
        else:
            (after if seen_body else before).append(child)
    return before, after


def cascade_stages(model: nn.Module) -> list[Stage]:
    """The model's parameter groups from the output down to the input, each (name, modules); see the module doc.

    Raises XaibenchError for an architecture without known stages, or if a parameter falls in no stage or two.
    """
    core = _core(model)
    body = _body(core)
    if body is None:
        inner = f" (its network: {type(core).__name__})" if core is not model else ""
        raise XaibenchError(f"cascading randomization does not know the layers of {type(model).__name__}{inner}; "
                            f"it knows ViTs (vit, ofa, segm, timm ViTs with blocks) and ResNets (conv1, layer1..4, fc)")
    before, after = _split_children(core, body)
    head: list[nn.Module] = []
    if core is not model:  # the wrapper's own parts (OFA's explanation head) sit on top of its network
        head = [DirectParameters(model), *(child for child in model.children() if child is not core)]
    head += after
    is_vit = body[0][0].startswith("block")
    stages = [("head", head), *((name, [module]) for name, module in reversed(body)),
              ("embed" if is_vit else "stem", [DirectParameters(core), *before])]
    _check_partition(model, stages)
    return stages


def _check_partition(model: nn.Module, stages: list[Stage]) -> None:
    """Every parameter of `model` in exactly one stage (shared parameters counted once per stage)."""
    count: dict[int, int] = {}
    for _, modules in stages:
        for parameter in {id(p): p for module in modules for p in module.parameters()}.values():
            count[id(parameter)] = count.get(id(parameter), 0) + 1
    names = {id(p): name for name, p in model.named_parameters()}
    outside = [name for key, name in names.items() if count.get(key, 0) != 1]
    stray = [key for key in count if key not in names]
    if outside or stray:
        raise XaibenchError(f"cascade stages of {type(model).__name__} do not partition its parameters: "
                            f"{len(outside)} in no stage or several (e.g. {outside[:3]}), {len(stray)} foreign")


def _draw(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """N(0, INIT_STD^2) truncated at 2 std, drawn on the generator's device."""
    values = torch.empty(shape, dtype=torch.float32, device=generator.device)
    return nn.init.trunc_normal_(values, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD, generator=generator)


@torch.no_grad()
def reinitialize(modules: list[nn.Module], generator: torch.Generator) -> None:
    """Re-initialise every parameter of `modules` in place (rules in the module doc), in a fixed order."""
    done: set[int] = set()
    for top in modules:
        for module in top.modules():
            is_norm = isinstance(module, NORM_TYPES) or type(module).__name__.endswith(("Norm", "Norm2d", "Norm1d"))
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
                module.reset_running_stats()
            for name, parameter in module.named_parameters(recurse=False):
                if id(parameter) in done:
                    continue
                done.add(id(parameter))
                if name == "bias":
                    parameter.zero_()
                elif is_norm and name == "weight":
                    parameter.fill_(1.0)
                else:
                    parameter.copy_(_draw(parameter.shape, generator))


def randomized_copies(model: nn.Module, generator: torch.Generator) -> Iterator[tuple[str, nn.Module]]:
    """(stage name, copy) for each stage from the top: copy k has stages 1..k re-initialised (cumulative).

    `model` is never modified. Copy k is a deep copy of copy k-1 with stage k re-initialised, so stages 1..k-1 keep
    the values drawn for the earlier copies; one copy is built at a time (drop the last one to free it). Draws come
    from `generator` only, in a fixed order: one seed gives the same copies.
    """
    if not isinstance(generator, torch.Generator):
        raise XaibenchError("randomized_copies needs a seeded torch.Generator for the new weights")
    names = [name for name, _ in cascade_stages(model)]
    current = model
    for index, name in enumerate(names):
        current = copy.deepcopy(current)
        reinitialize(cascade_stages(current)[index][1], generator)
        yield name, current
