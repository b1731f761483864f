"""Scenario (c): batch prediction on the 2,000-snippet test set, tunesmith vs `transformers.pipeline`.

    python bench/predict.py --quick        # one round
    python bench/predict.py --rounds 3
    python bench/predict.py --run runs/demo

The model: a finished tunesmith run (--run), or one trained here once on 1,000 examples for an
epoch (cached in bench/results/predict-model; prediction speed does not depend on how well it was
trained). Arms, each a whole process: tunesmith's Python API (`tunesmith.load(run).predict(texts)`),
the `tunesmith predict --file` command, and the pipeline with its default batch size (1) and with
--pipeline-batch (default 64). Throughput counts the prediction only (texts/s); whole-job seconds
include imports and loading.
"""
import argparse
import json

from common import (PYTHON, RESULTS, BENCH, alternate, data_split, machine, median, print_table, run_job, save_result,
                    tunesmith_train)


def ensure_model(args, data) -> str:
    if args.run:
        return args.run
    out = RESULTS / "predict-model"
    if not (out / "metrics.json").is_file():
        small = data_split(1000, 0)
        print(f"Training the model to predict with once, into {out} ...", flush=True)
        run_job("predict-model", tunesmith_train({**data, "train": small["train"]}, out, 1, 32, 5e-5, 0))
    return str(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--run", help="a finished tunesmith run folder with a plain (non-adapter) model")
    parser.add_argument("--pipeline-batch", type=int, default=64)
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    data = data_split()
    run = ensure_model(args, data)
    host = machine()
    print(f"predict: {run} on {data['test']}; machine {host['cpu']}, fp32 matmul {host['matmul_gflops']} GFLOP/s, load {host['load_average']}", flush=True)

    def worker(side, extra=()):
        return lambda out: [PYTHON, str(BENCH / "predict_worker.py"), side, run, str(data["test"]), str(out), *extra]

    arms = {"tunesmith API": worker("tunesmith"),
            "tunesmith predict CLI": lambda out: [PYTHON, "-m", "tunesmith.cli", "predict", run, "--file", str(data["test"]), "--out", str(out.with_suffix(".csv"))],
            "pipeline (batch 1)": worker("pipeline"),
            f"pipeline (batch {args.pipeline_batch})": worker("pipeline", ["--batch-size", str(args.pipeline_batch)])}
    jobs = {name: [] for name in arms}
    for round_, name in alternate(list(arms), rounds):
        out = RESULTS / "runs" / f"predict-{name.replace(' ', '_').replace('(', '').replace(')', '')}-r{round_}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        job = run_job(out.stem, arms[name](out))
        if out.is_file():
            job.update(json.loads(out.read_text()))
        jobs[name].append(job)
        print(f"  {name} r{round_}: whole job {job['wall_s']:.1f} s" + (f", {job['texts_per_second']:,.0f} texts/s, accuracy {job['accuracy']:.4f}" if "texts_per_second" in job else ""), flush=True)

    rows = []
    for name, runs in jobs.items():
        row = {"arm": name, "job_s": median([j["wall_s"] for j in runs]), "peak_mb": max(j["peak_rss_mb"] for j in runs)}
        if "texts_per_second" in runs[0]:
            row.update(texts_per_s=median([j["texts_per_second"] for j in runs]), predict_s=median([j["predict_s"] for j in runs]),
                       load_s=median([j["load_s"] for j in runs]), accuracy=runs[0]["accuracy"])
        rows.append(row)
    table = print_table(rows, [("arm", "arm", ""), ("job_s", "whole job s", ".1f"), ("load_s", "load s", ".2f"), ("predict_s", "predict s", ".2f"),
                               ("texts_per_s", "texts/s", ",.0f"), ("peak_mb", "peak MB", ",.0f"), ("accuracy", "accuracy", ".4f")])
    ours = next(r for r in rows if r["arm"] == "tunesmith API")
    cli = next(r for r in rows if r["arm"] == "tunesmith predict CLI")
    ratios = [{"pair": f"tunesmith vs {r['arm']}", "throughput": ours["texts_per_s"] / r["texts_per_s"],
               "job_speedup_api": r["job_s"] / ours["job_s"], "job_speedup_cli": r["job_s"] / cli["job_s"]}
              for r in rows if r["arm"].startswith("pipeline")]
    print()
    ratio_table = print_table(ratios, [("pair", "comparison", ""), ("throughput", "prediction throughput ratio", ".2f"),
                                       ("job_speedup_api", "whole-job speedup (API)", ".2f"), ("job_speedup_cli", "whole-job speedup (CLI)", ".2f")])
    save_result("predict", {"scenario": "predict", "run": run, "rounds": rounds, "machine": host, "rows": rows, "ratios": ratios,
                            "jobs": jobs, "markdown": table + "\n\n" + ratio_table})


if __name__ == "__main__":
    main()
