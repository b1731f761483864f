"""One batch-prediction job, run as its own process by predict.py.

    python bench/predict_worker.py {tunesmith|pipeline} RUN_DIR TEST.csv OUT.json [--batch-size N]

Loads the fine-tuned model, labels every text of TEST.csv, and writes load and prediction seconds,
texts per second (prediction only) and accuracy against the file's labels.
"""
import time

STARTED = time.perf_counter()
import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("side", choices=["tunesmith", "pipeline"])
    p.add_argument("run"), p.add_argument("test"), p.add_argument("out")
    p.add_argument("--batch-size", type=int, default=None, help="pipeline batch size (default: the pipeline's own, 1)")
    args = p.parse_args()
    import pandas as pd

    table = pd.read_csv(args.test)
    texts, labels = table["text"].astype(str).tolist(), table["label"].astype(str).tolist()
    started = time.perf_counter()
    if args.side == "tunesmith":
        import tunesmith

        run = tunesmith.load(args.run)
        run.predict(["warm-up"])  # loads the model and tokenizer
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        predicted = [p["label"] for p in run.predict(texts)]
    else:
        from transformers import pipeline

        classify = pipeline("text-classification", model=args.run, device="cpu")
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        options = {"batch_size": args.batch_size} if args.batch_size else {}
        predicted = [p["label"] for p in classify(texts, truncation=True, max_length=128, **options)]
    predict_s = time.perf_counter() - started
    import torch

    result = {"side": args.side, "batch_size": args.batch_size, "texts": len(texts), "load_s": round(load_s, 2),
              "predict_s": round(predict_s, 3), "texts_per_second": round(len(texts) / predict_s, 1),
              "accuracy": sum(a == b for a, b in zip(predicted, labels)) / len(labels),
              "job_s_inside": round(time.perf_counter() - STARTED, 2), "torch_threads": torch.get_num_threads(),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    Path(args.out).with_suffix(".labels.json").write_text(json.dumps(predicted))
    Path(args.out).write_text(json.dumps(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
