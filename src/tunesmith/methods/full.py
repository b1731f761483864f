"""Full fine-tuning: every weight of the base model and the new head is updated."""
from . import register_method


@register_method("full", "update every weight of the base model and the new head")
def apply(model, cfg, groups, task):
    for param in model.parameters():
        param.requires_grad_(True)
    return model
