"""Gradual unfreezing (ULMFiT, Howard & Ruder 2018): the head trains first, then one more layer group
from the top joins each epoch (or each --unfreeze-every steps) until the embeddings train too.

What is unfrozen is a function of the optimizer step alone, re-applied when training starts, so a
resumed run unfreezes exactly what the uninterrupted one had at that step.
"""
from __future__ import annotations

from . import register_callbacks, register_method
from ..architectures import set_trainable


@register_method("gradual", "train the head first, then unfreeze one more layer group from the top each epoch (--unfreeze-every K steps)", lr=1e-3)
def apply(model, cfg, groups, task):
    groups.require_layers("--method gradual")
    model.requires_grad_(False)
    set_trainable(groups.head, True)
    return model


def groups_unfrozen(step: int, every: int, num_groups: int) -> int:
    """Layer groups below the head that train after `step` optimizer steps: one more per `every` steps."""
    return min(num_groups, step // every)


class GradualUnfreezing:
    """Loop callback: sets requires_grad of the layer groups below the head from the step count."""

    def __init__(self, groups, unfreeze_every: int | None):
        self.top_down = [params for _, params in reversed(groups.ordered()[:-1])]  # layer.L-1, ..., layer.0, embeddings
        self.unfreeze_every = unfreeze_every

    def update(self, loop) -> None:
        every = self.unfreeze_every or loop.state.steps_per_epoch
        unfrozen = groups_unfrozen(loop.state.step, every, len(self.top_down))
        for depth, params in enumerate(self.top_down):
            set_trainable(params, depth < unfrozen)

    on_train_start = update  # after a resume, before the first step
    on_step_end = update


@register_callbacks("gradual")
def callbacks(model, cfg, groups, train_cfg):
    return [GradualUnfreezing(groups, cfg.unfreeze_every)]
