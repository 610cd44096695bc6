"""MkDocs hook: the site's home page is the README, written before every build with its `docs/` links made relative
to the site, so the two never differ."""

from pathlib import Path


def on_pre_build(config, **_):
    readme = (Path(config["config_file_path"]).parent / "README.md").read_text(encoding="utf-8")
    target = Path(config["docs_dir"]) / "index.md"
    text = readme.replace("](docs/", "](")
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")
