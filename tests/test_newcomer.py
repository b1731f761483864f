"""What a newcomer trips over first: a misspelled flag, `| head`, a narrow or piped terminal, API errors
worded as flags, running the README example twice, a second command on a folder that is still training,
and a run with no test file."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

import tunesmith
from tunesmith.api import api_message
from tunesmith.cli import PIPE_WIDTH, SIGPIPE_EXIT, console, main, print_summary
from tunesmith.compare import print_table
from tunesmith.config import OutputConfig
from tunesmith.errors import TunesmithError, did_you_mean
from tunesmith.rundir import RUN_LOCK, default_run_dir, hold_run_lock, prepare_run_dir, training_pid


def quick_options(model) -> dict:
    return {"model": str(model), "epochs": 2, "batch_size": 16, "lr": 3e-3, "early_stopping": 0, "checkpoint_every": 0, "threads": 2}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model) -> Path:
    """A finished run trained without a test file."""
    from conftest import toy_reviews

    folder = tmp_path_factory.mktemp("newcomer")
    toy_reviews(160).to_csv(folder / "reviews.csv", index=False)
    tunesmith.finetune(folder / "reviews.csv", out=str(folder / "run"), console=Console(file=StringIO()), **quick_options(tiny_model))
    return folder / "run"


# -- 1. a misspelled flag ----------------------------------------------------------------------------

def test_misspelled_flag_gets_one_line_with_the_closest_flag(capsys):
    assert main(["train", "x.csv", "--epocs", "3"]) == 2
    printed = capsys.readouterr()
    assert printed.err == "error: unknown option --epocs. Did you mean --epochs?\n" and printed.out == ""
    assert main(["train", "x.csv", "--overwite=yes"]) == 2
    assert capsys.readouterr().err == "error: unknown option --overwite. Did you mean --overwrite?\n"


def test_argparse_errors_stay_readable_on_one_line(capsys):
    assert main(["export", "runs/x"]) == 2
    err = capsys.readouterr().err
    assert err == "error: the following arguments are required: --out; see `tunesmith export --help`.\n"
    assert main(["eval", "runs/x", "test.csv", "extra"]) == 2
    assert capsys.readouterr().err == "error: unexpected argument 'extra'; see `tunesmith eval --help`.\n"
    assert main(["train", "x.csv", "--zzzz"]) == 2
    assert "unknown option --zzzz; see `tunesmith train --help`" in capsys.readouterr().err
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'trian'" in err and "usage:" not in err
    assert main(["--help"]) == 0 and "usage: tunesmith" in capsys.readouterr().out
    assert did_you_mean("lroa", ["lora", "full"]) == " Did you mean 'lora'?"  # other callers keep their quotes


# -- 2. stdout closed early ------------------------------------------------------------------------------

def test_predict_into_a_pipe_closed_early_ends_quietly(finished_run, tmp_path):
    from conftest import toy_reviews

    big = tmp_path / "big.csv"
    toy_reviews(5000, seed=2).to_csv(big, index=False)  # far more output than a pipe's buffer holds
    child = subprocess.Popen([sys.executable, "-m", "tunesmith.cli", "predict", str(finished_run), "--file", str(big)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = child.stdout.readline()
    child.stdout.close()  # what `| head -1` does
    err = child.stderr.read().decode()
    assert child.wait(timeout=300) == SIGPIPE_EXIT == 141
    assert first.startswith(b"review,sentiment,prediction")
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err


def test_any_command_whose_reader_is_gone_returns_141(monkeypatch):
    class ClosedPipe(StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["methods"]) == 141


# -- 3. tables in a narrow console and in a pipe ----------------------------------------------------------

COMPARISON_ROWS = [{"method": method, "status": status, "lr": lr, "trainable_params": trainable, "total_params": 22_713_986,
                    "train_seconds": 1234.56, "peak_memory_mb": 12345.6, "val_accuracy": val, "test_accuracy": test,
                    "run_dir": f"runs/compare-reviews/{method}", "message": ""}
                   for method, status, lr, trainable, val, test in [("full", "trained", 5e-5, 22_713_986, 0.81254, 0.79876),
                                                                     ("gradual", "resumed", 1e-3, 1_122, 0.70312, 0.69531),
                                                                     ("adapter", "reused", 1e-3, 24_410, 0.75, 0.7421875)]]
COMPARISON_CELLS = ["full", "gradual", "adapter", "trained", "resumed", "reused", "5e-05", "0.001", "22.71M", "1,122", "24.4k",
                    "1,234.6", "12,346", "0.8125", "0.7988", "0.7031", "0.6953", "0.7500", "0.7422"]


def narrow_console(width: int = 60) -> Console:
    return Console(width=width, file=StringIO())


def assert_fits_uncut(text: str, width: int, cells: list[str]) -> None:
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines()), text
    missing = [c for c in cells if c not in text]
    assert not missing, f"{missing} not whole in:\n{text}"


def test_compare_table_fits_a_narrow_console_without_cutting_a_number():
    out = narrow_console()
    print_table(COMPARISON_ROWS, out, title="Comparison on reviews.csv (minilm-l6, seed 42)")
    text = out.file.getvalue()
    assert_fits_uncut(text, 60, COMPARISON_CELLS)
    assert text.count("Comparison on") == 1 and text.count("method") == 2  # wrapped as two tables, the method column in both


def summary_metrics(test: bool) -> dict:
    scores = {"accuracy": 0.81254, "macro_f1": 0.80127, "mcc": 0.61093, "loss": 0.45678}
    return {"validation": scores, "test": dict(scores, accuracy=0.79876) if test else None,
            "train": {"steps": 120, "epochs": 3.0, "seconds": 12.3, "tokens_per_second": 12345.6},
            "parameters": {"trainable": 1000, "total": 2000}, "peak_memory_mb": 1234.0, "job_seconds": 15.0}


@pytest.mark.parametrize("width", [60, 30])
def test_train_summary_fits_a_narrow_console_without_cutting_a_number(tmp_path, width):
    out = narrow_console(width)
    print_summary(out, tmp_path / "runs" / "reviews", summary_metrics(test=True))
    assert_fits_uncut(out.file.getvalue(), width, ["validation", "test", "0.8125", "0.8013", "0.6109", "0.4568", "0.7988"])


def test_piped_console_is_as_wide_as_the_table_or_columns(monkeypatch, capsys):
    monkeypatch.delenv("COLUMNS", raising=False)
    piped = console()  # pytest's captured stdout is no terminal
    assert not piped.is_terminal and piped.width == PIPE_WIDTH
    print_table(COMPARISON_ROWS, piped, title="Comparison")
    text = capsys.readouterr().out
    assert_fits_uncut(text, PIPE_WIDTH, COMPARISON_CELLS)
    assert text.count("method") == 1  # one table at its natural width
    monkeypatch.setenv("COLUMNS", "100")
    assert console().width == 100


# -- 4. API errors in keyword-argument terms ----------------------------------------------------------

@pytest.mark.parametrize("cli_message, api", [
    ("'runs/x' already holds a finished run; pass --overwrite to replace it or choose another --out.",
     "'runs/x' already holds a finished run; pass overwrite=True to replace it or choose another out='...'."),
    ("Option --lr must be float, got 'abc'.", "Option lr=... must be float, got 'abc'."),
    ("'a.csv' has no column 'txt' (its columns: text, label); pass the right one with --text-column. Did you mean 'text'?",
     "'a.csv' has no column 'txt' (its columns: text, label); pass the right one with text_column='...'. Did you mean 'text'?"),
    ("--batch-size 32 is not a multiple of --grad-accum 3; pick values where it divides evenly.",
     "batch_size=32 is not a multiple of grad_accum=3; pick values where it divides evenly."),
    ("--resume: 'runs/x' holds no tunesmith run to continue; check --out, or drop --resume to start a new run.",
     "resume=True: 'runs/x' holds no tunesmith run to continue; check out='...', or drop resume=True to start a new run."),
    ("Only 3 training examples: too few to hold out a validation split; add data, pass --validation FILE, or use --val-fraction 0.",
     "Only 3 training examples: too few to hold out a validation split; add data, pass validation='...', or use val_fraction=0."),
    ("--method freeze found no transformer layers in this model; use --method full or head.",
     "method='freeze' found no transformer layers in this model; use method='full' or head."),
    ("The text and label columns are both 'a'; name them with --text-column and --label-column.",
     "The text and label columns are both 'a'; name them with text_column='...' and label_column='...'."),
    ("--out 'runs/x' is a file, not a folder; choose another --out.", "out='runs/x' is a file, not a folder; choose another out='...'."),
    ("Model 'm' needs to run its own code; pass --trust-remote-code only if you trust its authors.",
     "Model 'm' needs to run its own code; pass trust_remote_code=True only if you trust its authors."),
    ("The run in 'r' did not finish (status: running); resume it with `tunesmith train ... --out r --resume`.",
     "The run in 'r' did not finish (status: running); resume it with `tunesmith train ... --out r --resume`."),  # a shell command
])
def test_api_message_names_keyword_arguments(cli_message, api):
    assert api_message(cli_message) == api


def test_finetune_and_load_errors_name_keyword_arguments_and_the_cli_keeps_its_flags(finished_run, tiny_model, capsys):
    data = finished_run.parent / "reviews.csv"
    with pytest.raises(TunesmithError) as caught:
        tunesmith.finetune(data, out=str(finished_run), console=Console(file=StringIO()), **quick_options(tiny_model))
    assert "pass overwrite=True to replace it" in str(caught.value) and "--" not in str(caught.value)
    with pytest.raises(TunesmithError, match=r"Option lr=\.\.\. must be float"):
        tunesmith.finetune(data, lr="abc")
    with pytest.raises(TunesmithError) as caught:
        tunesmith.load(finished_run).predict_file(data, text_column="txt")
    assert "pass the right one with text_column='...'" in str(caught.value)
    assert main(["predict", str(finished_run), "--file", str(data), "--text-column", "txt"]) == 2
    assert "pass the right one with --text-column" in capsys.readouterr().err


# -- 5. the default run folder ------------------------------------------------------------------------

def fake_run(folder: Path, status: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"status": status}))
    return folder


def test_default_run_dir_takes_the_next_free_name_and_resumes_the_newest_unfinished(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    said = []
    assert default_run_dir("data/reviews.csv", say=said.append) == Path("runs/reviews") and said == []
    fake_run(Path("runs/reviews"), "done")
    assert default_run_dir("data/reviews.csv", say=said.append) == Path("runs/reviews-2")
    assert said == ["'runs/reviews' holds a finished run, so this run goes to 'runs/reviews-2'."]
    fake_run(Path("runs/reviews-2"), "running")
    fake_run(Path("runs/reviews-3"), "done")
    Path("runs/reviews-4").mkdir()
    (Path("runs/reviews-4") / RUN_LOCK).write_text("12345\n")  # a run killed before it wrote anything
    assert default_run_dir("reviews.csv") == Path("runs/reviews-4")
    said.clear()
    assert default_run_dir("reviews.csv", resume=True, say=said.append) == Path("runs/reviews-2")
    assert said == ["Resuming 'runs/reviews-2', the newest unfinished run of 'runs/reviews'."]
    assert default_run_dir("reviews.csv", overwrite=True) == Path("runs/reviews")
    assert default_run_dir("other.csv", resume=True) == Path("runs/other")  # nothing to resume: prepare_run_dir says so


def test_the_readme_example_runs_twice_in_a_fresh_folder(tmp_path, monkeypatch, tiny_model):
    from conftest import toy_reviews

    monkeypatch.chdir(tmp_path)
    toy_reviews(160).to_csv("reviews.csv", index=False)
    options = dict(quick_options(tiny_model), epochs=1)
    first = tunesmith.finetune("reviews.csv", console=Console(file=StringIO()), **options)
    second = tunesmith.finetune("reviews.csv", console=Console(file=StringIO()), **options)
    assert (first.path, second.path) == (Path("runs/reviews"), Path("runs/reviews-2"))
    assert second.predict(["what a lovely film"])[0]["label"] in ("neg", "pos")


# -- 6. the lock a live run holds ------------------------------------------------------------------------

def start_lock_holder(run_dir: Path) -> subprocess.Popen:
    code = ("import sys, time\nfrom tunesmith.rundir import hold_run_lock\n"
            "with hold_run_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(600)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def test_a_live_run_keeps_other_commands_off_its_folder(tmp_path, capsys):
    run_dir = fake_run(tmp_path / "run", "running")
    child = start_lock_holder(run_dir)
    try:
        said = fr"'{run_dir}' is still training \(pid {child.pid}\); wait for it to finish or stop it \(kill {child.pid}\) first\."
        for output in (OutputConfig(resume=True), OutputConfig(overwrite=True), OutputConfig()):
            with pytest.raises(TunesmithError, match=said):
                prepare_run_dir(run_dir, output)
        assert (run_dir / "run.json").is_file()  # --overwrite removed nothing
        with pytest.raises(TunesmithError, match=said):
            tunesmith.load(run_dir)
        with pytest.raises(TunesmithError, match=said):
            with hold_run_lock(run_dir):
                pass
        for command in (["predict", str(run_dir), "a text"], ["eval", str(run_dir), "test.csv"], ["export", str(run_dir), "--out", str(tmp_path / "x")]):
            assert main(command) == 2
            assert f"is still training (pid {child.pid})" in capsys.readouterr().err
    finally:
        child.kill()
        child.wait()


def test_a_run_killed_with_sigkill_leaves_no_stale_lock(tmp_path):
    run_dir = fake_run(tmp_path / "run", "running")
    child = start_lock_holder(run_dir)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert (run_dir / RUN_LOCK).read_text().strip() == str(child.pid)  # the file stays; the kernel dropped the lock
    assert training_pid(run_dir) is None
    assert prepare_run_dir(run_dir, OutputConfig(resume=True)) is None  # resumes (from scratch: no checkpoint yet)
    with hold_run_lock(run_dir):
        assert training_pid(run_dir) == os.getpid()
    assert training_pid(run_dir) is None


def test_a_lock_file_does_not_change_what_a_folder_holds(tmp_path):
    only_lock = tmp_path / "only-lock"
    only_lock.mkdir()
    (only_lock / RUN_LOCK).write_text("12345\n")
    prepare_run_dir(only_lock, OutputConfig())  # a run killed before writing anything: the folder counts as empty
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / RUN_LOCK).write_text("12345\n")
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(TunesmithError, match="not a tunesmith run"):
        prepare_run_dir(stray, OutputConfig(overwrite=True))
    finished = fake_run(tmp_path / "finished", "done")
    (finished / RUN_LOCK).write_text("12345\n")
    with pytest.raises(TunesmithError, match="already holds a finished run"):
        prepare_run_dir(finished, OutputConfig())
    prepare_run_dir(finished, OutputConfig(overwrite=True))
    assert finished.is_dir() and not any(finished.iterdir())


# -- 7. the summary lists what the run wrote ----------------------------------------------------------------

def test_summary_of_a_run_without_a_test_file_says_so(finished_run):
    out = narrow_console(PIPE_WIDTH)
    print_summary(out, finished_run, json.loads((finished_run / "metrics.json").read_text()))
    last = out.file.getvalue().strip().splitlines()[-1]
    assert last.startswith(f"Model, metrics.json and curves.png are in {finished_run} (no test file: pass --test FILE to score one).")
    assert "test_predictions.csv" not in out.file.getvalue()


def test_summary_of_a_run_with_a_test_file_lists_its_predictions(tmp_path):
    for name in ("model.safetensors", "metrics.json", "curves.png", "test_predictions.csv"):
        (tmp_path / name).write_text("x")
    out = narrow_console(PIPE_WIDTH)
    print_summary(out, tmp_path, summary_metrics(test=True))
    last = out.file.getvalue().strip().splitlines()[-1]
    assert last.startswith(f"Model, metrics.json, curves.png and test_predictions.csv are in {tmp_path}. Try: tunesmith predict")
