"""Wrapping a model with a PEFT tuner (LoRA, DoRA, IA3) so that the task head trains and is saved with it.

The head's modules (BERT: pooler + classifier; Llama: final norm + score) go in PEFT's
`modules_to_save`: PEFT then trains a copy of them, saves that copy in the adapter folder, and keeps
the original frozen (`original_module`), so the adapter folder alone rebuilds the fine-tuned model.
"""
from __future__ import annotations

import contextlib
import warnings

from ..errors import TunesmithError
from ..architectures import known_model_types, model_type_of


def head_module_names(groups) -> list[str]:
    """Dotted names of the modules that hold the head group's weights, in order, without repeats."""
    names = []
    for param_name, _ in groups.head:
        module = param_name.rpartition(".")[0]
        if module and module not in names:
            names.append(module)
    return names


@contextlib.contextmanager
def quiet_peft():
    """PEFT 0.21 calls a transformers 5 method that warns it is deprecated; users cannot act on that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def pass_every_input(model):
    """PEFT 0.21's PeftModelForQuestionAnswering.forward drops token_type_ids (and position_ids), so a
    BERT-style QA model under LoRA would train and predict without its segment ids, and disagree with
    the same adapter loaded by transformers; PeftModel's own forward passes every input to the model."""
    import types

    from peft import PeftModel, PeftModelForQuestionAnswering

    if isinstance(model, PeftModelForQuestionAnswering):
        model.forward = types.MethodType(PeftModel.forward, model)
    return model


def wrap_with_peft(model, peft_config_cls, groups, method: str, task=None, **options):
    """get_peft_model with the task's PEFT task type (SEQ_CLS when no task is given) and the head in
    modules_to_save; PEFT's errors as one sentence."""
    from peft import get_peft_model

    head = head_module_names(groups) if task is None or task.trains_output_head else []  # a causal LM keeps its own lm_head
    task_type = task.peft_task_type if task is not None else "SEQ_CLS"
    try:
        config = peft_config_cls(task_type=task_type, modules_to_save=head, exclude_modules=head, **options)
        with quiet_peft():
            return pass_every_input(get_peft_model(model, config))
    except ValueError as exc:
        text = str(exc).split(". ")[0].rstrip(".") if str(exc) else type(exc).__name__
        if options.get("target_modules") is None:
            raise TunesmithError(f"--method {method} has no default target modules for model type '{model_type_of(model)}' "
                                 f"(known: {known_model_types('lora')}); pass --target-modules with the names of its linear layers, e.g. 'q_proj,v_proj'.") from None
        targets = options["target_modules"]
        targets = ",".join(targets) if isinstance(targets, (list, tuple, set)) else targets
        raise TunesmithError(f"--method {method} could not adapt the model with target modules '{targets}' ({text}); pass --target-modules with the "
                             f"names of linear layers inside its transformer blocks, e.g. 'query,value' for BERT or 'q_proj,v_proj' for Llama.") from None
