import os
import sys

# Before DSPy or Hugging Face are imported: their caches live with ours, and nothing asks a hub.
os.environ.setdefault("DSPY_CACHEDIR", os.path.join(os.environ.get("CALIBRATOR_CACHE", ".cache"), "dspy"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from calibrator.cli import main  # noqa: E402

sys.exit(main())
