"""The data defaults of data/prepare.py and data/columns.py: label spellings merged, close column
inferences noted, a validation split sized for the data, per-label sampling, and the notes that say so."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tunesmith.config import RunConfig
from tunesmith.data import LabeledData, load_labeled_data
from tunesmith.data import prepare, sources
from tunesmith.data.prepare import apportion, split_off_validation
from tunesmith.errors import TunesmithError


def table(labels, **columns) -> pd.DataFrame:
    """A training table: one distinct text per row and the given labels (plus any other columns)."""
    return pd.DataFrame({"text": [f"review number {i} of the film" for i in range(len(labels))], "label": labels, **columns})


def write(tmp_path, name: str, frame: pd.DataFrame) -> str:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def load(tmp_path, frame: pd.DataFrame, seed: int = 0, **options) -> LabeledData:
    cfg = RunConfig.from_dict({"data": write(tmp_path, "train.csv", frame), **options})
    return load_labeled_data(cfg.data, seed)


def column_notes(data: LabeledData) -> list[str]:
    return [note for note in data.notes if " column " in note]


def label_counts(data: LabeledData, split: str) -> dict[str, int]:
    ids = getattr(data, split)["label"].value_counts()
    return {data.label_names[i]: int(n) for i, n in ids.items()}


# -- LabeledData: notes, validation_from_split, imbalance_ratio --------------------------------------

def test_a_plain_file_has_no_notes(tmp_path):
    data = load(tmp_path, table(["neg", "pos"] * 500))
    assert data.notes == []
    assert data.validation_from_split and (len(data.train), len(data.validation)) == (900, 100)


def test_validation_from_split_is_false_for_a_file_or_no_split(tmp_path):
    validation = write(tmp_path, "validation.csv", table(["neg", "pos"] * 5))
    assert not load(tmp_path, table(["neg", "pos"] * 50), validation=validation).validation_from_split
    none = load(tmp_path, table(["neg", "pos"] * 50), val_fraction=0)
    assert none.validation is None and not none.validation_from_split and none.notes == []


def test_a_bundled_datasets_validation_file_is_not_a_split(tmp_path, monkeypatch):
    files = {split: write(tmp_path, f"{split}.csv", table(["neg", "pos"] * n)) for split, n in (("train", 50), ("validation", 5), ("test", 5))}
    monkeypatch.setattr(sources, "require_dataset", lambda name: SimpleNamespace(name=name, task="text classification", task_name="text-classification"))
    monkeypatch.setattr(sources, "dataset_files", lambda name: files)
    data = load_labeled_data(RunConfig.from_dict({"data": "toy-bundled-set"}).data, 0)
    assert (len(data.train), len(data.validation), len(data.test)) == (100, 10, 10) and not data.validation_from_split
    split = load_labeled_data(RunConfig.from_dict({"data": "toy-bundled-set", "val_fraction": 0}).data, 0)
    assert split.validation is None


def test_imbalance_ratio_is_largest_over_smallest_train_class(tmp_path):
    assert load(tmp_path, table(["a"] * 95 + ["b"] * 5), val_fraction=0).imbalance_ratio == 19.0
    assert load(tmp_path, table(["a", "b", "c"] * 10 + ["c"] * 10), val_fraction=0).imbalance_ratio == 2.0


# -- label spellings -----------------------------------------------------------------------------------

def test_labels_differing_in_case_or_spaces_are_merged_into_the_most_frequent(tmp_path):
    data = load(tmp_path, table(["positive"] * 120 + ["Positive"] * 30 + [" POSITIVE "] * 2 + ["negative"] * 100), val_fraction=0)
    assert data.label_names == ["negative", "positive"] and label_counts(data, "train") == {"positive": 152, "negative": 100}
    assert data.notes == ["Labels that differ only in case or spaces were merged: 'positive' (120) <- 'Positive' (30), 'POSITIVE' (2); "
                          "pass --keep-label-spelling to keep them apart."]


def test_a_spelling_tie_goes_to_the_first_seen(tmp_path):
    data = load(tmp_path, table(["Neg", "pos", "neg", "Pos"] * 10), val_fraction=0)
    assert data.label_names == ["Neg", "pos"]
    assert "'Neg' (10) <- 'neg' (10); 'pos' (10) <- 'Pos' (10)" in data.notes[0]


def test_validation_and_test_labels_map_onto_the_training_spellings(tmp_path):
    other = table(["NEGATIVE", " Positive", "negative ", "positive"])
    data = load(tmp_path, table(["negative", "positive"] * 20), validation=write(tmp_path, "v.csv", other), test=write(tmp_path, "t.csv", other))
    for split in ("validation", "test"):
        assert label_counts(data, split) == {"negative": 2, "positive": 2}
    assert data.notes == []  # nothing merged in the training file


def test_keep_label_spelling_keeps_every_spelling_apart(tmp_path):
    frame = table(["positive", "Positive", " positive", "negative"] * 10)
    data = load(tmp_path, frame, val_fraction=0, keep_label_spelling=True)
    assert data.label_names == [" positive", "Positive", "negative", "positive"] and data.notes == []
    with pytest.raises(TunesmithError, match="validation file .* labels never seen in training \\('POSITIVE'\\)"):
        load(tmp_path, frame, keep_label_spelling=True, validation=write(tmp_path, "v.csv", table(["POSITIVE", "negative"])))


def test_merging_into_a_single_label_says_how_to_keep_them_apart(tmp_path):
    with pytest.raises(TunesmithError, match="has a single label \\('pos'\\) \\(spellings .* merged; pass --keep-label-spelling"):
        load(tmp_path, table(["pos", "POS", "pos"] * 10))


# -- inferred columns with a runner-up ---------------------------------------------------------------

def test_two_known_label_names_give_a_runner_up_note(tmp_path):
    frame = pd.DataFrame({"text": [f"a review {i}" for i in range(100)], "Stars": ["1", "5"] * 50, "Verdict": ["bad", "good"] * 50})
    data = load(tmp_path, frame)
    assert data.label_column == "Stars"
    assert "Label column 'Stars' was inferred (runner-up: 'Verdict'); pass --label-column to choose another." in data.notes


def test_close_candidates_by_content_give_notes(tmp_path):
    frame = pd.DataFrame({"a": [f"a first long text {i}" for i in range(100)], "b": [f"a second long one {i}" for i in range(100)],
                          "m": ["up", "down"] * 50, "n": ["p", "q", "r"] * 33 + ["p"]})
    data = load(tmp_path, frame)
    assert (data.text_column, data.label_column) == ("a", "m")
    assert data.notes[:2] == ["Text column 'a' was inferred (runner-up: 'b'); pass --text-column to choose another.",
                              "Label column 'm' was inferred (runner-up: 'n'); pass --label-column to choose another."]


def test_a_named_label_gets_a_note_only_for_a_content_rival_with_as_few_values(tmp_path):
    rival = pd.DataFrame({"review": [f"a review {i}" for i in range(100)], "rating": [str(i % 5) for i in range(100)],
                          "recommended": ["yes", "no"] * 50})
    assert "Label column 'rating' was inferred (runner-up: 'recommended'); pass --label-column to choose another." in load(tmp_path, rival).notes
    no_rival = rival.assign(recommended=[str(i % 40) for i in range(100)])  # 40 values against rating's 5: not close
    assert column_notes(load(tmp_path, no_rival)) == []


def test_unambiguous_or_given_columns_give_no_note(tmp_path):
    frame = pd.DataFrame({"id": range(100), "sentence": [f"a sentence {i}" for i in range(100)], "label": ["x", "y"] * 50,
                          "source": ["web", "news", "book", "blog", "wiki"] * 20})
    assert column_notes(load(tmp_path, frame)) == []  # 'source' has 5 values to the label's 2: not close
    stars = pd.DataFrame({"text": [f"a review {i}" for i in range(100)], "Stars": ["1", "5"] * 50, "Verdict": ["bad", "good"] * 50})
    assert column_notes(load(tmp_path, stars, label_column="Verdict")) == []
    pairs = pd.DataFrame({"first": [f"a premise number {i}" for i in range(100)], "second": [f"a hypothesis no {i}" for i in range(100)],
                          "label": ["yes", "no"] * 50})
    assert column_notes(load(tmp_path, pairs)) == ["Text column 'first' was inferred (runner-up: 'second'); pass --text-column to choose another."]
    assert column_notes(load(tmp_path, pairs, text_pair_column="second")) == []  # the runner-up is the pair column: no rival


# -- the validation split ------------------------------------------------------------------------------

@pytest.mark.parametrize("rows, labels, size, words", [
    (1000, 2, 100, None),
    (100, 2, 20, "Held out 20 of 100 training rows for validation (20% rather than 10%: at least min(50, 20% of the rows)"),
    (300, 2, 50, "Held out 50 of 300 training rows for validation (16.7% rather than 10%: at least min(50, 20% of the rows)"),
    (30_000, 3, 2000, "Held out 2,000 of 30,000 training rows for validation (6.67% rather than 10%: validation is capped at 2,000 rows)"),
    (1000, 150, 150, "Held out 150 of 1,000 training rows for validation (15% rather than 10%: one row of each label that has more than one"),
])
def test_the_automatic_split_is_sized_for_the_data(tmp_path, rows, labels, size, words):
    data = load(tmp_path, table([f"L{i % labels}" for i in range(rows)]))
    assert len(data.validation) == size and len(data.train) == rows - size
    assert set(label_counts(data, "validation")) == set(data.label_names) == set(label_counts(data, "train"))
    assert data.notes == ([] if words is None else [data.notes[0]]) and (words is None or data.notes[0].startswith(words))


def test_the_split_is_stratified_in_proportion(tmp_path):
    data = load(tmp_path, table(["a"] * 900 + ["b"] * 100))
    assert label_counts(data, "validation") == {"a": 90, "b": 10}
    rare = load(tmp_path, table(["a"] * 990 + ["b"] * 10))
    assert label_counts(rare, "validation") == {"a": 99, "b": 1}  # 0.99 rounds to 1 for b anyway; a gets the rest


def test_too_many_labels_for_the_split_keep_its_size_and_a_note_says_which_are_missing(tmp_path):
    data = load(tmp_path, table([f"L{i}" for i in range(60)] * 2))  # 10% is 12, one per label would be 60 (50%)
    assert len(data.validation) == 24 and len(label_counts(data, "validation")) == 24
    assert label_counts(data, "train").keys() == set(data.label_names)
    assert data.notes[1].startswith("36 of 60 labels (")
    assert data.notes[1].endswith("have no validation rows (36 did not fit in a validation split of 24 rows, which goes to the largest labels first), "
                                  "so validation metrics cover only the other 24; add rows of those labels or pass --validation FILE.")


def test_a_label_with_a_single_row_stays_in_training(tmp_path):
    data = load(tmp_path, table(["a"] * 8 + ["b", "c"]))
    assert label_counts(data, "train") == {"a": 6, "b": 1, "c": 1} and label_counts(data, "validation") == {"a": 2}
    assert data.notes[-1] == ("2 of 3 labels ('b', 'c') have no validation rows (2 have a single row, which stays in training), so validation "
                              "metrics cover only the other 1; add rows of those labels or pass --validation FILE.")


def test_an_explicit_val_fraction_is_exact_and_not_capped(tmp_path):
    data = load(tmp_path, table(["a", "b"] * 50), val_fraction=0.3)
    assert label_counts(data, "validation") == {"a": 15, "b": 15} and data.notes == [] and data.validation_from_split
    big = load(tmp_path, table(["a", "b"] * 3000), val_fraction=0.5)
    assert len(big.validation) == 3000 and big.notes == []
    small = load(tmp_path, table(["a", "b"] * 500), val_fraction=0.01)
    assert len(small.validation) == 10  # below the automatic floor of 50: asked for, so kept


def test_an_explicit_val_fraction_that_cannot_be_met_is_an_error(tmp_path):
    with pytest.raises(TunesmithError, match="--val-fraction 0.5 asks for 2 of 4 training examples, but holding out more than 1 would leave "
                                             "a label with no training examples; use a smaller --val-fraction"):
        load(tmp_path, table(["a", "b", "c", "c"]), val_fraction=0.5)
    with pytest.raises(TunesmithError, match="--val-fraction 0.01 of 20 training examples is less than one row"):
        load(tmp_path, table(["a", "b"] * 10), val_fraction=0.01)
    with pytest.raises(TunesmithError, match="too few to hold out a validation split; add data, pass --validation FILE"):
        load(tmp_path, table(["a", "b"]))


def test_the_split_is_seeded(tmp_path):
    frame = table(["a", "b", "c"] * 100)
    first, again, other = (load(tmp_path, frame, seed=s) for s in (1, 1, 2))
    assert first.validation.equals(again.validation) and not first.validation.equals(other.validation)


def test_the_split_never_empties_a_label_nor_holds_out_more_than_asked():
    rng = np.random.default_rng(0)
    for case in range(40):
        counts = rng.integers(1, 30, size=rng.integers(2, 40))
        frame = pd.DataFrame({"text": "x", "label": np.repeat([f"L{i}" for i in range(len(counts))], counts)})
        fraction = None if case % 2 else float(rng.choice([0.05, 0.1, 0.3]))
        try:
            rest, held, notes = split_off_validation(frame, fraction, seed=case)
        except TunesmithError as exc:
            assert fraction is not None and "would leave a label with no training examples" in str(exc)
            continue
        assert set(rest["label"]) == set(frame["label"]) and len(rest) + len(held) == len(frame)
        if fraction is None:
            assert len(held) <= max(round(0.2 * len(frame) + 0.5), round(0.1 * len(frame) + 0.5))
        else:
            assert len(held) == int(np.floor(fraction * len(frame) + 0.5))
        assert (len(set(held["label"])) < len(counts)) == any("no validation rows" in n for n in notes)


def test_apportion_is_proportional_with_at_least_one_and_at_most_the_cap():
    counts = pd.Series({"a": 900, "b": 95, "c": 5})
    assert apportion(counts, 100, cap=counts).to_dict() == {"a": 90, "b": 9, "c": 1}
    assert apportion(counts, 3, cap=counts).to_dict() == {"a": 1, "b": 1, "c": 1}
    assert apportion(counts, 997, cap=counts - 1).to_dict() == {"a": 899, "b": 94, "c": 4}


# -- --max-train-examples: sampled per label -----------------------------------------------------------

def test_max_train_examples_samples_per_label(tmp_path):
    data = load(tmp_path, table(["a"] * 95 + ["b"] * 5), val_fraction=0, max_train_examples=10)
    assert label_counts(data, "train") == {"a": 9, "b": 1}
    assert data.notes == ["Sampled 10 of 100 training rows, per label."]
    again = load(tmp_path, table(["a"] * 95 + ["b"] * 5), val_fraction=0, max_train_examples=10)
    assert again.train.equals(data.train)  # seeded


def test_sampling_comes_before_the_split_and_its_note_first(tmp_path):
    data = load(tmp_path, table(["a", "b"] * 500), max_train_examples=100)
    assert (len(data.train), len(data.validation)) == (80, 20)
    assert data.notes[0] == "Sampled 100 of 1,000 training rows, per label." and data.notes[1].startswith("Held out 20 of 100")
    assert load(tmp_path, table(["a", "b"] * 5), max_train_examples=100, val_fraction=0).notes == []  # fewer rows: nothing sampled


def test_max_train_examples_below_the_number_of_labels_is_an_error(tmp_path):
    with pytest.raises(TunesmithError, match="--max-train-examples 2 is fewer than the 3 labels of .*; pass at least 3"):
        load(tmp_path, table(["a", "b", "c"] * 10), max_train_examples=2)
