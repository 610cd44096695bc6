"""Agreement: how far a judge's answers are from people's labels (metrics, items, decision rules, the floor, PPI)."""
