"""Image and audio classification: tunesmith against the Hugging Face Trainer as run_image_classification.py
and run_audio_classification.py run it.

    python bench/image_audio.py image --quick     # fashion-mnist, 1,500 training / 1,000 test images, 1 epoch
    python bench/image_audio.py audio --quick     # spoken-letters, 255 training / 150 test clips, 3 epochs, Trainer in bf16 only
    python bench/image_audio.py all               # both, the larger default settings below
    python bench/image_audio.py image --peers example,bf16,crop --rounds 2

Every arm is a whole job in its own process (common.run_job: wall time from spawn to exit, the
child's peak RSS), on the same train and test files, model, epochs, batch size, learning rate and
seed; rounds alternate the order of the arms.
- image: the bundled fashion-mnist (28 x 28 grayscale PNGs, 10 classes) on tunesmith's embedded
  mobilenet-v2 (MobileNetV2ForImageClassification, ImageNet weights, a new 10-class head on both sides).
- audio: the bundled spoken-letters (Ogg clips, 17 languages: spoken-language identification) on
  tunesmith's whisper-tiny-en (WhisperForAudioClassification); training clips are cut to a random
  window of the length chosen from the training clips (the 95% quantile in whole seconds,
  tunesmith.assets.whisper_window.clip_window_seconds), passed to both sides (tunesmith
  `--max-seconds`, the peer `--max-length-seconds`); the peer pads every clip to Whisper's 30 s, as the
  example does, tunesmith chooses its own window.
`--train-examples` / `--test-examples` take fixed seeded stratified subsets, written once under
bench/results/data/ with their files beside them (hard links, else copies), because tunesmith reads
only paths inside a data file's own folder.
tunesmith: `tunesmith train TRAIN.csv --test TEST.csv --task image-classification|audio-classification
--val-fraction 0 --epochs E --batch-size B --lr LR --seed S --model M [--max-seconds X] --out DIR
--overwrite`, its defaults otherwise (method full, augmentation, precision by measurement, warmup,
weight decay); no validation split, as the peer has none. Throughput is training examples (images
or clips) a second: rows x epochs / training seconds, the same formula on both sides. Peers: see SETUPS.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from common import (BENCH, PYTHON, RESULTS, alternate, base_model_folder, machine, median, print_table, read_run_config,
                    save_result, try_job, tunesmith_command)


@dataclass
class TaskSetup:
    key: str                  # image | audio
    title: str
    tunesmith_task: str       # the --task name
    dataset: str              # bundled dataset name
    model: str                # embedded model name (tunesmith --model; the peer gets its folder)
    peer_script: str
    unit: str                 # images | clips
    epochs: float
    batch_size: int
    lr: float
    train_examples: int | None
    test_examples: int | None
    peers: dict               # name -> (arm label, peer script flags)
    default_peers: str
    quick: dict = field(default_factory=dict)   # --quick: settings that replace the task's own


SETUPS = {
    # batch 16 and lr 1e-3 on both sides: MobileNetV2's full fine-tune with AdamW learns fashion-mnist in a few hundred
    # steps at that rate (480 images, one epoch: 74% test accuracy, Trainer fp32), where the example's 2e-5 is for ViTs
    "image": TaskSetup("image", "image classification", "image-classification", "fashion-mnist", "mobilenet-v2", "peer_image.py",
                       "images", 2, 16, 1e-3, 3000, 2000,
                       {"example": ("Trainer (run_image_classification.py)", []),
                        "bf16": ("Trainer (run_image_classification.py) bf16", ["--bf16"]),
                        "crop": ("Trainer (run_image_classification.py) at the processor's crop size", ["--image-size", "CROP"])},
                       "example,bf16",
                       # the Trainer (fp32, 256 px) ran 11.5 images/s training and ~35 scoring on a quiet moment of the 2-core
                       # machine (2.75 and ~10 at a busy one): 1,500 images (94 steps) train in ~2 min and 1,000 test images score
                       # in ~30 s (480 images, 30 steps, left tunesmith at 58% and the Trainer at 74%: too few steps to compare)
                       quick={"epochs": 1.0, "train_examples": 1500, "test_examples": 1000}),
    "audio": TaskSetup("audio", "audio classification", "audio-classification", "spoken-letters", "whisper-tiny-en", "peer_audio.py",
                       "clips", 3, 8, 5e-4, None, None,
                       {"example": ("Trainer (run_audio_classification.py, padded to 30 s)", []),
                        "bf16": ("Trainer (run_audio_classification.py, padded to 30 s) bf16", ["--bf16"])},
                       "example,bf16",
                       # 3 epochs at 5e-4: at 30 s of padding the mean-pooled encoder learns slowly (255 clips, bf16: 1 epoch at
                       # 1e-4 gave 37% accuracy / 7 macro-F1, 1e-3 46 / 14, 3 epochs at 5e-4 55 / 23; majority 29%); the fp32
                       # arm ran 0.93 clips/s (~14 min for 765 clip passes), bf16 ~4 clips/s, so --quick runs bf16 alone
                       quick={"epochs": 3.0, "train_examples": 255, "test_examples": 150, "peers": "bf16"}),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=["image", "audio", "all"])
    p.add_argument("--quick", action="store_true", help="a few minutes an arm: image 1,500 training / 1,000 test images, 1 epoch; "
                                                     "audio 255 training / 150 test clips, 3 epochs, the Trainer in bf16 only (its fp32 arm takes ~15 min)")
    p.add_argument("--train-examples", type=int, help="a fixed seeded stratified subset of the training split "
                                                      "(default: image 3,000, audio all 1,067; 0 = the whole split)")
    p.add_argument("--test-examples", type=int, help="a fixed seeded stratified subset of the test split (default: image 2,000, "
                                                     "audio all 445; 0 = the whole split)")
    p.add_argument("--epochs", type=float, help="default: the task's (image 2, audio 3; with --quick 1 and 3)")
    p.add_argument("--batch-size", type=int, help="default: the task's (image 16, audio 8)")
    p.add_argument("--lr", type=float, help="default: the task's (image 1e-3, audio 5e-4)")
    p.add_argument("--max-seconds", type=float, help="audio: training crop length for both sides (default: chosen from the training clips)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=1, help="repeat every arm this many times, alternating the order")
    p.add_argument("--peers", help="comma-separated peer arms (image: example,bf16,crop; audio: example,bf16; none: "
                                   "tunesmith alone); default example,bf16 (audio --quick: bf16)")
    p.add_argument("--tunesmith-flags", default="", help="extra `tunesmith train` flags")
    p.add_argument("--no-tunesmith", action="store_true", help="run the peer arms only")
    return p.parse_args()


# -- data: the same files for both sides --------------------------------------------------------
def link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows one (no space, and no symlink for tunesmith to refuse), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def stratified_subset(source: Path, rows: int | None, seed: int, tag: str) -> Path:
    """A fixed seeded stratified subset of a path,label CSV, written once as bench/results/data/TAG-ROWS-seedS/FILE with
    the files it lists beside it at the same relative paths (tunesmith reads only paths inside a CSV's folder, so the
    subset cannot point back into the dataset's folder). The source itself when rows is None/0 or not smaller."""
    import pandas as pd

    table = pd.read_csv(source)
    if not rows or rows >= len(table):
        return Path(source)
    folder = RESULTS / "data" / f"{tag}-{rows}-stratified-seed{seed}"
    path = folder / Path(source).name
    if path.is_file():
        return path
    from sklearn.model_selection import train_test_split

    chosen, _ = train_test_split(table, train_size=rows, stratify=table["label"], random_state=seed)
    chosen = chosen.sort_index()
    base = Path(source).parent
    for relative in chosen["path"]:
        if Path(relative).is_absolute() or ".." in Path(relative).parts:
            raise SystemExit(f"{source} lists '{relative}', outside its folder; subsets copy only files inside it.")
        link_or_copy(base / relative, folder / relative)
    partial = path.with_suffix(".partial")
    chosen.to_csv(partial, index=False)
    partial.replace(path)  # the CSV last: a subset folder with its CSV is complete
    return path


def task_data(setup: TaskSetup, settings: dict) -> dict:
    from tunesmith.assets.registry import dataset_files

    files = dataset_files(setup.dataset)
    return {"train": stratified_subset(files["train"], settings["train_examples"], settings["seed"], f"{setup.dataset}-train"),
            "test": stratified_subset(files["test"], settings["test_examples"], settings["seed"], f"{setup.dataset}-test")}


def count_rows(path: Path) -> int:
    import pandas as pd

    return len(pd.read_csv(path))


def audio_crop_seconds(train_csv: Path) -> float:
    """The training crop both sides use: tunesmith's own rule for a Whisper window (the 95% quantile of the clips'
    durations, whole seconds), read from the files' headers."""
    import pandas as pd
    import soundfile

    from tunesmith.assets.whisper_window import clip_window_seconds

    base = Path(train_csv).parent
    return float(clip_window_seconds(soundfile.info(str(base / p)).duration for p in pd.read_csv(train_csv)["path"]))


# -- the two sides ------------------------------------------------------------------------------
def tunesmith_missing_task(setup: TaskSetup) -> str | None:
    """Why `tunesmith train --task T` cannot run here, or None when the task is registered."""
    from tunesmith.tasks import TASKS

    if setup.tunesmith_task in TASKS:
        return None
    return (f"tunesmith cannot run the {setup.tunesmith_task} task yet: tunesmith.tasks registers only {', '.join(TASKS)} "
            f"(tasks/__init__.py does not import its module); the Trainer arms ran alone")


def tunesmith_has_option(option: str) -> bool:
    """Whether this tunesmith's `train` command takes an option (--max-seconds arrives with the audio task)."""
    text = subprocess.run([PYTHON, "-m", "tunesmith.cli", "train", "--help"], capture_output=True, text=True, cwd=BENCH.parent).stdout
    return re.search(rf"{re.escape(option)}(?![\w-])", text) is not None


def run_tunesmith(setup: TaskSetup, data: dict, settings: dict, tag: str) -> dict:
    """One `tunesmith train` job through the CLI, and what its metrics.json says."""
    missing = tunesmith_missing_task(setup)
    if missing:
        print(f"  {tag}: {missing}", flush=True)
        return {"name": tag, "failed": missing}
    out = RESULTS / "runs" / tag
    flags = ["--task", setup.tunesmith_task, "--val-fraction", "0", "--epochs", f"{settings['epochs']:g}", "--batch-size", str(settings["batch_size"]),
             "--lr", f"{settings['lr']:g}", "--seed", str(settings["seed"]), "--model", setup.model]
    if settings.get("max_seconds") and settings.get("tunesmith_max_seconds"):
        flags += ["--max-seconds", f"{settings['max_seconds']:g}"]
    job = try_job(tag, tunesmith_command(data, out, flags + settings["tunesmith_flags"].split()))
    if "failed" not in job:
        job.update(read_tunesmith_run(out, settings))
    return job


def read_tunesmith_run(out: Path, settings: dict) -> dict:
    """metrics.json's figures; examples/s is training rows x epochs run / training seconds, as the peer counts it
    (tunesmith's own `tokens_per_second` counts each example's length, 1 for an image)."""
    metrics = json.loads((out / "metrics.json").read_text())
    test, train = metrics["test"], metrics["train"]
    train_s = train["seconds"] + train.get("frozen_cache_seconds", 0.0)
    epochs = train.get("epochs") or settings["epochs"]
    examples = settings["n_train"] * epochs
    return {"accuracy": test["accuracy"], "macro_f1": test.get("macro_f1"), "train_s": train_s, "examples": examples,
            "examples_per_second": examples / train_s, "tokens_per_second_inside": train.get("tokens_per_second"),
            "steps": train.get("steps"), "precision_used": train.get("precision"), "eval_s": test.get("seconds"),
            "job_s_inside": metrics.get("job_seconds"), "peak_memory_mb_inside": metrics.get("peak_memory_mb"),
            "method": read_run_config(out).get("method")}


def crop_side(model_folder: str) -> int:
    """The processor's crop height (mobilenet-v2: 224), for the peer's `crop` arm."""
    config = json.loads((Path(model_folder) / "preprocessor_config.json").read_text())
    crop = config.get("crop_size") or {}
    return int(crop.get("height") or crop.get("shortest_edge") or config["size"].get("shortest_edge"))


def run_peer(setup: TaskSetup, peer: str, data: dict, settings: dict, tag: str) -> dict:
    out = RESULTS / "runs" / f"{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = base_model_folder(setup.model)
    flags = [str(crop_side(folder)) if flag == "CROP" else flag for flag in setup.peers[peer][1]]
    command = [PYTHON, str(BENCH / setup.peer_script), str(data["train"]), str(data["test"]), f"{settings['epochs']:g}", str(out),
               "--model", folder, "--batch-size", str(settings["batch_size"]), "--lr", f"{settings['lr']:g}",
               "--seed", str(settings["seed"]), *flags]
    if setup.key == "audio":
        command += ["--max-length-seconds", f"{settings['max_seconds']:g}"]
    job = try_job(tag, command)
    if "failed" not in job:
        result = json.loads(out.read_text())
        job.update(result, peak_rss_mb=job["peak_rss_mb"], precision_used="bf16" if result["bf16"] else "fp32")
    return job


# -- one task: arms, rounds, tables ---------------------------------------------------------------
def task_settings(setup: TaskSetup, args) -> dict:
    quick = setup.quick if args.quick else {}
    pick = lambda given, key, default: given if given is not None else quick.get(key, default)  # noqa: E731
    return {"epochs": pick(args.epochs, "epochs", setup.epochs), "batch_size": pick(args.batch_size, "batch_size", setup.batch_size),
            "lr": pick(args.lr, "lr", setup.lr), "seed": args.seed,
            "train_examples": pick(args.train_examples, "train_examples", setup.train_examples),
            "test_examples": pick(args.test_examples, "test_examples", setup.test_examples),
            "max_seconds": args.max_seconds, "tunesmith_flags": args.tunesmith_flags, "rounds": args.rounds}


def summarise(arm: str, side: str, jobs: list[dict]) -> dict:
    done = [j for j in jobs if "failed" not in j]
    row = {"arm": arm, "side": side, "runs": len(done)}
    if not done:
        return {**row, "failed": jobs[0]["failed"] if jobs else "not run"}
    row.update(job_s=median([j["wall_s"] for j in done]), train_s=median([j["train_s"] for j in done]),
               examples_per_s=median([j["examples_per_second"] for j in done]), peak_mb=max(j["peak_rss_mb"] for j in done),
               dtype=done[0].get("precision_used"))
    for key in ("accuracy", "macro_f1"):
        values = [j[key] for j in done if j.get(key) is not None]
        row[key] = 100 * sum(values) / len(values) if values else None
    return row


def ratio_rows(rows: list[dict]) -> list[dict]:
    """tunesmith against each peer: speedups are peer / tunesmith time, throughput and memory tunesmith / peer, metrics in points."""
    ratios = []
    for ours in (r for r in rows if r["side"] == "tunesmith" and r["runs"]):
        for peer in (r for r in rows if r["side"] == "peer" and r["runs"]):
            ratio = {"pair": f"tunesmith vs {peer['arm']}", "job_speedup": peer["job_s"] / ours["job_s"], "train_speedup": peer["train_s"] / ours["train_s"],
                     "throughput_ratio": ours["examples_per_s"] / peer["examples_per_s"], "memory_ratio": ours["peak_mb"] / peer["peak_mb"]}
            for key in ("accuracy", "macro_f1"):
                if ours.get(key) is not None and peer.get(key) is not None:
                    ratio[f"{key}_points"] = ours[key] - peer[key]
            ratios.append(ratio)
    return ratios


def majority_share(test_csv: Path) -> float:
    """The test accuracy of always answering the most frequent test label, in percent (the floor a model must clear)."""
    import pandas as pd

    labels = pd.read_csv(test_csv)["label"]
    return 100 * labels.value_counts().iloc[0] / len(labels)


def describe_run(setup: TaskSetup, data: dict, settings: dict) -> str:
    """One sentence naming the files and the settings both sides ran with (the table's heading)."""
    files = ", ".join(f"{role} {path} ({settings['n_' + role]:,} {setup.unit})" for role, path in data.items())
    crop = f", training crops of {settings['max_seconds']:g} s" if setup.key == "audio" else ""
    return (f"{setup.title}: {setup.dataset} on {setup.model}, {files}; {settings['epochs']:g} epochs, batch {settings['batch_size']}, "
            f"lr {settings['lr']:g}{crop}, seed {settings['seed']}, {settings['rounds']} round(s); always the majority label: "
            f"{settings['majority']:.1f}% test accuracy.")


def run_task(setup: TaskSetup, args) -> dict:
    settings = task_settings(setup, args)
    chosen = args.peers or (setup.quick.get("peers") if args.quick else None) or setup.default_peers
    peers = [] if chosen == "none" else [p for p in chosen.split(",") if p]
    unknown = [p for p in peers if p not in setup.peers]
    if unknown:
        raise SystemExit(f"--peers: {setup.key} has no peer {', '.join(unknown)}; choose from {', '.join(setup.peers)}")
    data = task_data(setup, settings)
    settings.update(n_train=count_rows(data["train"]), n_test=count_rows(data["test"]), majority=majority_share(data["test"]))
    notes = []
    if setup.key == "audio":
        settings["max_seconds"] = settings["max_seconds"] or audio_crop_seconds(data["train"])
        settings["tunesmith_max_seconds"] = not args.no_tunesmith and tunesmith_has_option("--max-seconds")
        if not args.no_tunesmith and not settings["tunesmith_max_seconds"]:
            notes.append(f"- tunesmith train has no --max-seconds option here: it chose its own clip length; the peer crops to "
                         f"{settings['max_seconds']:g} s")
    arms = ([] if args.no_tunesmith else [("tunesmith", "tunesmith", None)]) + [(setup.peers[p][0], "peer", p) for p in peers]
    header = describe_run(setup, data, settings)
    print(f"\n{header}", flush=True)
    jobs = {name: [] for name, _, _ in arms}
    for round_, (name, side, peer) in alternate(arms, args.rounds):
        tag = f"{setup.key}-{'tunesmith' if side == 'tunesmith' else 'peer-' + peer}-r{round_}"
        job = run_tunesmith(setup, data, settings, tag) if side == "tunesmith" else run_peer(setup, peer, data, settings, tag)
        if "failed" not in job:
            print(f"  {tag}: whole job {job['wall_s']:.1f} s, train {job['train_s']:.1f} s, {job['examples_per_second']:,.2f} {setup.unit}/s, "
                  f"accuracy {100 * job['accuracy']:.2f}, macro-F1 {100 * (job.get('macro_f1') or 0):.2f}, peak {job['peak_rss_mb']:,.0f} MB, "
                  f"{job.get('precision_used')} (load {job['load_before']})", flush=True)
        jobs[name].append(job)
    rows = [summarise(name, side, jobs[name]) for name, side, _ in arms]
    print()
    table = print_table([r for r in rows if r["runs"]], [("arm", "arm", ""), ("job_s", "whole job s", ".1f"), ("train_s", "train s", ".1f"),
                                                          ("examples_per_s", f"train {setup.unit}/s", ",.2f"), ("peak_mb", "peak MB", ",.0f"),
                                                          ("dtype", "precision", ""), ("accuracy", "test accuracy %", ".2f"),
                                                          ("macro_f1", "test macro-F1 %", ".2f")])
    ratios = ratio_rows(rows)
    print()
    ratio_table = print_table(ratios, [("pair", "comparison", ""), ("job_speedup", "whole-job speedup", ".2f"), ("train_speedup", "train speedup", ".2f"),
                                       ("throughput_ratio", f"{setup.unit}/s ratio", ".2f"), ("memory_ratio", "peak memory ratio", ".2f"),
                                       ("accuracy_points", "accuracy (points)", "+.2f"), ("macro_f1_points", "macro-F1 (points)", "+.2f")]) if ratios else ""
    failures = notes + [f"- {r['arm']}: {r['failed']}" for r in rows if not r["runs"]]
    for line in failures:
        print(line)
    markdown = "\n\n".join(part for part in (f"### {header}", table, ratio_table, "\n".join(failures)) if part)
    return {"settings": dict(settings), "files": {k: str(v) for k, v in data.items()}, "peers": peers, "rows": rows, "ratios": ratios,
            "jobs": jobs, "markdown": markdown}


def main():
    args = parse_args()
    keys = ["image", "audio"] if args.task == "all" else [args.task]
    host = machine()
    print(f"Machine: {host['cpu']}, {host['cores']} cores, {host['vector_flags']}, fp32 matmul {host['matmul_gflops']} GFLOP/s, "
          f"load {host['load_average']}.", flush=True)
    results = {key: run_task(SETUPS[key], args) for key in keys}
    payload = {"scenario": "image_audio", "arguments": vars(args), "machine": host, "machine_load_after": machine(0.5)["load_average"],
               "tasks": results, "markdown": "\n\n".join(r["markdown"] for r in results.values())}
    save_result(f"image_audio-{args.task}", payload)


if __name__ == "__main__":
    main()
