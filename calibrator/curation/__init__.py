"""Curation: the commands people grow and check gold sets with: goldset add, stats and audit, the template, a run's review sheet."""
