"""Scenario (b): LoRA on minilm-l6 / rotten-tomatoes, tunesmith `--method lora` vs Trainer + PEFT LoRA.

    python bench/lora.py --quick          # 3,000 examples, 1 epoch
    python bench/lora.py                  # full split, 3 epochs

Both sides: the same rank, alpha, dropout and target modules (default: every linear layer of the
blocks, tunesmith's default for BERT), the head (pooler + classifier) trained in full through
PEFT's modules_to_save, the same learning rate (default 5e-4, LoRA's usual order), batch and epochs.
The peer uses dynamic padding and length grouping (the Trainer's best practice).
"""
import argparse
import sys

from training_bench import Arm, add_common_options, compare

TARGETS = "query,key,value,attention.output.dense,intermediate.dense,output.dense"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_options(parser, lr=5e-4)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--targets", default=TARGETS)
    args = parser.parse_args()

    from tunesmith.methods import METHODS

    if "lora" not in METHODS:
        sys.exit("tunesmith has no `lora` method yet (src/tunesmith/methods/lora.py); this benchmark runs once it exists.")
    lora = ["--lora-rank", str(args.rank), "--lora-alpha", str(args.alpha), "--lora-dropout", str(args.dropout)]
    arms = [Arm("tunesmith lora", "tunesmith", ["--method", "lora", *lora, "--target-modules", args.targets]),
            Arm("Trainer+PEFT lora dynamic+grouped", "peer", peer_mode="dynamic")]
    peer_flags = ["--lora-rank", str(args.rank), "--lora-alpha", str(args.alpha), "--lora-dropout", str(args.dropout), "--lora-targets", args.targets]
    compare("lora", arms, args, extra_peer=peer_flags)


if __name__ == "__main__":
    main()
