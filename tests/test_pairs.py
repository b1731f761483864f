"""Sentence pairs: two text columns named (--text-column a,b or --text-pair-column) or inferred by
their names, encoded together; predict and eval find the pair (and the label) as training did."""
from __future__ import annotations

import json
import random

import pandas as pd
import pytest

import tunesmith
from conftest import FILLER, NEGATIVE, POSITIVE
from tunesmith.cli import main
from tunesmith.config import RunConfig
from tunesmith.data import prepare
from tunesmith.data.columns import infer_text_pair, input_columns
from tunesmith.errors import TunesmithError, did_you_mean


def pairs(n: int = 160, seed: int = 0, first: str = "premise", second: str = "hypothesis", label: str = "label") -> pd.DataFrame:
    """The label is in the second text only (its sentiment cue), so a run that drops the pair cannot learn it."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        polarity = i % 2
        cue = rng.choice(POSITIVE if polarity else NEGATIVE)
        rows.append({first: " ".join(rng.sample(FILLER, 5)), second: f"{' '.join(rng.sample(FILLER, 3))} {cue}",
                     label: "agree" if polarity else "disagree"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("names", [("premise", "hypothesis"), ("Sentence1", "Sentence2"), ("question", "sentence"),
                                   ("headline", "body"), ("review_a", "review_b"), ("text1", "text2")])
def test_pairs_are_inferred_by_their_names(names):
    assert infer_text_pair(pairs(20, first=names[0], second=names[1])) == names


def test_two_unrelated_text_columns_are_not_a_pair():
    frame = pairs(20, first="title", second="review")
    assert infer_text_pair(frame) is None
    frame["sentence2"] = "1"  # a pair name over numbers is no text
    assert infer_text_pair(frame.rename(columns={"title": "sentence1"})) is None


def columns_of(tmp_path, frame, **options):
    path = tmp_path / "pairs.csv"
    frame.to_csv(path, index=False)
    cfg = RunConfig.from_dict({"data": str(path), **options}).data
    data = prepare.load_labeled_data(cfg, 0)
    return (data.text_column, data.text_pair_column, data.label_column), data.notes


def test_the_pair_is_named_or_inferred_with_a_note(tmp_path):
    columns, notes = columns_of(tmp_path, pairs(60))
    assert columns == ("premise", "hypothesis", "label")
    assert any("read as a text pair" in note for note in notes)
    frame = pairs(60, first="left side", second="right side")
    assert columns_of(tmp_path, frame, text_column="left side,right side")[0] == ("left side", "right side", "label")
    assert columns_of(tmp_path, frame, text_column="left side", text_pair_column="right side")[0] == ("left side", "right side", "label")
    assert columns_of(tmp_path, pairs(60), text_column="hypothesis")[0] == ("hypothesis", None, "label")  # one text, as asked


@pytest.mark.parametrize("options, words", [({"text_column": "premise,nope"}, "no column 'nope'"),
                                            ({"text_column": "a,b,c"}, "names 3 columns"),
                                            ({"text_column": "premise,hypothesis", "text_pair_column": "hypothesis"}, "not both"),
                                            ({"text_column": "premise", "text_pair_column": "premise"}, "again")])
def test_wrong_pair_options_get_one_sentence(tmp_path, options, words):
    with pytest.raises(TunesmithError, match=words):
        columns_of(tmp_path, pairs(60), **options)


def test_a_pair_run_learns_from_the_second_text_and_predicts_pairs(tmp_path, tiny_options, capsys):
    train = tmp_path / "train.csv"
    pairs(240).to_csv(train, index=False)
    run = tunesmith.finetune(str(train), out=str(tmp_path / "run"), **tiny_options)
    assert run.record["text_pair_column"] == "hypothesis"
    assert run.metrics["validation"]["accuracy"] >= 0.85  # the cue is only in the pair's second text
    found = run.predict(["the film was", "the film was"], pairs=["it is great", "it is awful"])
    assert [p["label"] for p in found] == ["agree", "disagree"]
    with pytest.raises(TunesmithError, match="reads text pairs"):
        run.predict(["the film was"])
    # eval on a file with other column names: the pair and the label are found as training finds them
    other = tmp_path / "other.csv"
    pairs(80, seed=3, first="sentence1", second="sentence2", label="gold").to_csv(other, index=False)
    assert run.evaluate(str(other))["accuracy"] >= 0.85
    assert main(["predict", str(run.path), "the film was", "--pair", "superb and lovely"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("agree\t")
    assert main(["predict", str(run.path), "the film was"]) == 2
    assert "--pair" in capsys.readouterr().err
    assert main(["eval", str(run.path), str(other), "--label-column", "gold", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] >= 0.85


def test_eval_finds_renamed_columns_and_names_its_own_options():
    frame = pd.DataFrame({"Date": ["2020-01-01"] * 4, "Customer Review": ["a lovely warm film"] * 4, "Stars": ["1", "2", "1", "2"]})
    # the training run called them review/rating: inferred here as training would
    assert input_columns(frame, "x.csv", "review", None, "rating", with_labels=True) == ("Customer Review", None, "Stars")
    assert input_columns(frame, "x.csv", "REVIEW", None, "label", given_label="Stars", with_labels=True)[2] == "Stars"
    with pytest.raises(TunesmithError, match="--label-column"):
        input_columns(frame, "x.csv", "review", None, "label", given_label="nope", with_labels=True)
    assert "'Customer Review'" in did_you_mean("review", frame.columns)
