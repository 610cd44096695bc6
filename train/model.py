"""The policy's weights: the embedded SmolLM2 GGUF converted once to a safetensors folder, or any HF model dir.

transformers can read a GGUF (`gguf_file=`), dequantising it, which takes most of a minute; the
converted folder reloads in about a second. The GGUF quantizer flag is cleared before saving, or
the saved folder would claim a quantisation it no longer has.
"""

import hashlib
import shutil
from pathlib import Path

EMBEDDED = "smollm2"


def ensure_model(model: str, cache: Path) -> Path:
    """A directory `from_pretrained` can load: `model` itself, or the converted embedded model."""
    if model != EMBEDDED:
        path = Path(model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--model {model}: not a Hugging Face model folder (no config.json)")
        return path
    from calibrator.lm.local import embedded_gguf, model_fingerprint

    gguf = embedded_gguf()
    version = hashlib.sha256(model_fingerprint(gguf).encode()).hexdigest()[:12]
    target = cache / "models" / f"smollm2-135m-instruct-{version}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    weights = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    weights.hf_quantizer = None
    weights.config.quantization_config = None
    if hasattr(weights, "is_quantized"):
        weights.is_quantized = False
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by a killed conversion
    weights.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    return target
