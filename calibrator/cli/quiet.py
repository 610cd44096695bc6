"""Library chatter off for the commands that call an LM: their own output is the summary."""

import logging
import warnings


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("dspy", "LiteLLM", "litellm", "httpx", "optuna", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
