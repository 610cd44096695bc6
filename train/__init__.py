"""The bundled GRPO trainer (TRL underneath). Filled in by its own issue; it only reads calibrated prompts."""
