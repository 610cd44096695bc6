"""What gradient checkpointing costs a GRPO update of the 135M policy on this CPU: one forward and backward pass over
8 sequences of 230 tokens (about cpu-learn's step: 2 prompts × 4 completions, 4 messages of context), with and
without it, alternated twice so drift shows.

    .venv/bin/python bench/update_checkpointing.py [MODEL_DIR]   (default: the embedded SmolLM2, converted once)

TRL's GRPOConfig and SFTConfig turn it on by default; it trades recomputing the forward pass for memory that a 135M
model does not need. cpu-learn.yaml turns it off from this figure.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train.model import ensure_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", nargs="?", type=Path, help="a Hugging Face model folder (default: the embedded SmolLM2)")
    model_dir = parser.parse_args().model_dir or ensure_model("smollm2", ROOT / ".cache")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.train()
    batch = torch.randint(100, 40000, (8, 230))
    seconds: dict[bool, list[float]] = {True: [], False: []}
    for checkpointing in (True, False, True, False):
        (model.gradient_checkpointing_enable if checkpointing else model.gradient_checkpointing_disable)()
        for _ in range(3):
            started = time.perf_counter()
            model(input_ids=batch, labels=batch).loss.backward()
            model.zero_grad()
            seconds[checkpointing].append(time.perf_counter() - started)
    on, off = statistics.median(seconds[True]), statistics.median(seconds[False])
    print(f"forward + backward, 8 x 230 tokens, median of 6: checkpointing on {on:.2f} s, off {off:.2f} s; off/on {off / on:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
