"""Scenario (a): full fine-tune of minilm-l6 on rotten-tomatoes, tunesmith vs the Hugging Face Trainer.

    python bench/full_finetune.py --quick                 # 3,000 examples, 1 epoch, vs Trainer best practice in fp32 and bf16
    python bench/full_finetune.py                         # full split, 3 epochs, vs both Trainer configurations
    python bench/full_finetune.py --variants default,freeze-word-embeddings --peers dynamic --rounds 2

Peers: `dynamic` (the Trainer's best practice: dynamic padding + length-grouped batches),
`dynamic-bf16` (the same with `bf16=True, use_cpu=True`: CPU bf16 autocast, as a user who knows
the option sets it) and `pad128` (run_glue.py: every example padded to 128 tokens). Variants of
tunesmith: `default`, and `freeze-word-embeddings` (the --freeze-word-embeddings option).
"""
import argparse

from training_bench import Arm, add_common_options, compare

VARIANTS = {"default": [], "freeze-word-embeddings": ["--freeze-word-embeddings"]}
# name: (arm label, peer_trainer.py mode, its extra flags)
PEERS = {"dynamic": ("Trainer dynamic+grouped", "dynamic", []),
         "dynamic-bf16": ("Trainer dynamic+grouped bf16", "dynamic", ["--bf16"]),
         "pad128": ("Trainer pad-to-128", "pad128", [])}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_options(parser, lr=5e-5)
    parser.add_argument("--variants", default="default", help=f"tunesmith variants, comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--peers", help=f"comma-separated: {', '.join(PEERS)} (default dynamic,pad128; dynamic,dynamic-bf16 with --quick)")
    parser.add_argument("--tunesmith-flags", default="", help="extra `tunesmith train` flags for every variant")
    args = parser.parse_args()
    peers = (args.peers or ("dynamic,dynamic-bf16" if args.quick else "dynamic,pad128")).split(",")
    for kind, names, known in (("--peers", peers, PEERS), ("--variants", args.variants.split(","), VARIANTS)):
        if set(names) - set(known):
            parser.error(f"{kind}: unknown {', '.join(sorted(set(names) - set(known)))}; choose from {', '.join(known)}")
    arms = [Arm(f"tunesmith {v}", "tunesmith", VARIANTS[v] + args.tunesmith_flags.split()) for v in args.variants.split(",")]
    arms += [Arm(PEERS[p][0], "peer", PEERS[p][2], peer_mode=PEERS[p][1]) for p in peers]
    compare("full_finetune", arms, args)


if __name__ == "__main__":
    main()
