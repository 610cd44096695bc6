"""MkDocs hook: one page per bench script, written before every build from the script's own docstring (what it
measures, its command) with a link to where its recorded figures and their analysis are kept."""

import ast
from pathlib import Path

HELPERS = {"corpus.py", "replay_server.py"}  # imported by the benches, not benches themselves
FIGURES = {  # script -> the page that holds its recorded figures, dated, with what they do and do not show
    "engine_concurrency.py": "index.md", "extract_scale.py": "index.md", "grpo_step.py": "index.md",
    "judge_floor.py": "index.md", "lm_throughput.py": "index.md", "report_scale.py": "index.md",
    "primock57_extractor.py": "../guides/public-corpora.md", "l2a_cpu.py": "../guides/public-corpora.md",
    "stop_predictability.py": "../guides/public-corpora.md", "update_checkpointing.py": "../guides/public-corpora.md",
    "remedi_actions.py": "../guides/public-corpora.md", "target_scope.py": "../learn-to-ask-reference.md",
    "reward_service.py": "../guides/judge-behind-rl-engine.md", "suggest_gold.py": "../guides/judge-behind-rl-engine.md",
}


def scripts(root: Path) -> list[Path]:
    return sorted(p for p in (root / "bench").glob("*.py") if p.name not in HELPERS)


def write(root: Path, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for script in scripts(root):
        if script.name not in FIGURES:
            raise ValueError(f"bench/{script.name} has no entry in docs/hooks/bench_pages.py FIGURES: say where its figures are")
        doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
        title, _, body = doc.partition("\n")
        text = (f"# `bench/{script.name}`\n\n{title}\n\n```text\n{body.strip()}\n```\n\n"
                f"Recorded figures, with the date, the machine and what they do and do not show: "
                f"[here]({FIGURES[script.name]}).\n")
        target = folder / f"{script.stem}.md"
        if not target.is_file() or target.read_text() != text:
            target.write_text(text)
        written.append(target)
    return written


def on_pre_build(config, **_):
    write(Path(config["config_file_path"]).parent, Path(config["docs_dir"]) / "benchmarks")
