"""Training length, refit and the selection metric, chosen from the data when not given.

A newcomer keeps the defaults, so they must fit a 400-row file as well as a 40,000-row one.
Fixed epochs do not: 3 epochs of 360 examples are 36 optimizer steps, and the loss is still
falling at the end. The rule (Mosbach et al. 2021, "On the stability of fine-tuning BERT": train
small data for more iterations, let validation decide when to stop):

- epochs: 3, raised so that training gets at least MIN_STEPS optimizer steps, at most
  MAX_EPOCHS; early stopping on validation ends a run sooner when more epochs stop helping;
- refit: with a validation split held out of at most REFIT_MAX_EXAMPLES training examples, train
  once more on training + validation for the epochs that scored best (AutoGluon's refit_full):
  on small data the held-out rows are worth having back;
- metric: accuracy, or macro-F1 when the largest class has IMBALANCE_RATIO times the examples of
  the smallest (accuracy rewards never predicting a rare class).

Every choice comes with the sentence that explains it; job.py prints them and writes the chosen
values into config.yaml, so the run folder says exactly what ran.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

MIN_STEPS = 300
MIN_EPOCHS = 3
MAX_EPOCHS = 20
REFIT_MAX_EXAMPLES = 3000
IMBALANCE_RATIO = 3.0


@dataclass
class TrainingChoices:
    """What was chosen automatically, and why (one sentence each)."""

    reasons: list[str] = field(default_factory=list)

    def note(self, sentence: str) -> None:
        self.reasons.append(sentence)


def steps_per_epoch(examples: int, batch_size: int) -> int:
    return max(1, math.ceil(examples / batch_size))


def choose_epochs(examples: int, batch_size: int) -> tuple[float, str]:
    """Epochs for `examples` training rows at `batch_size`, and the reason."""
    per_epoch = steps_per_epoch(examples, batch_size)
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(MIN_STEPS / per_epoch)))
    if epochs == MIN_EPOCHS:
        why = f"{MIN_EPOCHS} epochs ({per_epoch * epochs:,} steps of {batch_size})"
    else:
        capped = " (the cap)" if epochs == MAX_EPOCHS else ""
        why = (f"{epochs} epochs{capped}: {examples:,} examples make {per_epoch} steps of {batch_size} an epoch, and small data needs "
               f"about {MIN_STEPS} steps to converge")
    return float(epochs), why


def choose_refit(setting: str, examples: int, validation_from_split: bool) -> tuple[bool, str | None]:
    """Whether to train again on training + validation after the run picked its epochs."""
    if setting == "off":
        return False, None
    if not validation_from_split:
        if setting == "on":
            return False, "--refit on does nothing here: there is no validation split held out of the training data to give back"
        return False, None
    if setting == "on":
        return True, "refit on training + validation data for the best epochs (--refit on)"
    if examples <= REFIT_MAX_EXAMPLES:
        return True, (f"refit: with {examples:,} training examples (at most {REFIT_MAX_EXAMPLES:,}), the model is trained again on training + "
                      f"validation data for the epochs that scored best (--refit off to skip)")
    return False, None


def choose_metric(imbalance_ratio: float) -> tuple[str, str | None]:
    if imbalance_ratio >= IMBALANCE_RATIO:
        return "macro_f1", (f"the largest class has {imbalance_ratio:.1f}x the examples of the smallest, so the best weights are picked "
                            f"by macro-F1, not accuracy (--metric to choose)")
    return "accuracy", None


def resolve_training_choices(cfg, examples: int, validation_from_split: bool, metric: tuple[str, str | None]) -> tuple[bool, TrainingChoices]:
    """Fill cfg.train's automatic fields in place; returns (refit, choices with their reasons).

    `metric` is the task's choice for --metric auto and why (task.default_metric)."""
    tc, choices = cfg.train, TrainingChoices()
    if tc.epochs is None:
        tc.epochs, why = choose_epochs(examples, tc.batch_size)
        choices.note(f"Training length: {why}" + (f"; early stopping after {tc.early_stopping} evaluations without improvement." if tc.early_stopping else "."))
    if tc.metric == "auto":
        tc.metric, why = metric
        if why:
            choices.note(f"Metric: {why}.")
    refit, why = choose_refit(tc.refit, examples, validation_from_split)
    tc.refit = "on" if refit else "off"  # config.yaml records what ran
    if why:
        choices.note(f"{why[0].upper()}{why[1:]}.")
    return refit, choices


def refit_epochs(best_step: int | None, steps_done: int, per_epoch: int) -> float:
    """Epochs of the refit: those of the best validation pass (all that ran when none was better)."""
    step = best_step if best_step else steps_done
    return max(step / per_epoch, 1.0 / per_epoch)
