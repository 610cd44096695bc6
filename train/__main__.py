import sys

sys.exit("python -m train: the GRPO trainer is not built yet (see the trainer issue); calibrate first with `python -m calibrator run`.")
