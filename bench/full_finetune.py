"""Scenario (a): full fine-tune of minilm-l6 on rotten-tomatoes, tunesmith vs the Hugging Face Trainer.

    python bench/full_finetune.py --quick                 # 3,000 examples, 1 epoch, vs Trainer best practice
    python bench/full_finetune.py                         # full split, 3 epochs, vs both Trainer configurations
    python bench/full_finetune.py --variants default,freeze-word-embeddings --peers dynamic --rounds 2

Peers: `dynamic` (the Trainer's best practice: dynamic padding + length-grouped batches) and
`pad128` (run_glue.py: every example padded to 128 tokens). Variants of tunesmith: `default`, and
`freeze-word-embeddings` (the --freeze-word-embeddings option).
"""
import argparse

from training_bench import Arm, add_common_options, compare

VARIANTS = {"default": [], "freeze-word-embeddings": ["--freeze-word-embeddings"]}
PEERS = {"dynamic": "Trainer dynamic+grouped", "pad128": "Trainer pad-to-128"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_options(parser, lr=5e-5)
    parser.add_argument("--variants", default="default", help=f"tunesmith variants, comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--peers", help="dynamic,pad128 (default; dynamic only with --quick)")
    parser.add_argument("--tunesmith-flags", default="", help="extra `tunesmith train` flags for every variant")
    args = parser.parse_args()
    peers = (args.peers or ("dynamic" if args.quick else "dynamic,pad128")).split(",")
    arms = [Arm(f"tunesmith {v}", "tunesmith", VARIANTS[v] + args.tunesmith_flags.split()) for v in args.variants.split(",")]
    arms += [Arm(PEERS[p], "peer", peer_mode=p) for p in peers]
    compare("full_finetune", arms, args)


if __name__ == "__main__":
    main()
