"""HTML pages rendered from run records (Jinja2 with autoescaping: user text is always escaped)."""
