"""The LLM components being calibrated: one module per component, plus how demonstrations are retrieved."""
