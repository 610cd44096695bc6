"""How predictable is the stop point from what the policy sees? A ceiling for bench/l2a_cpu.py's goal, from the
training sessions only (the held-out ones are never read).

    .venv/bin/python bench/stop_predictability.py [--config train/configs/cpu-learn.yaml] [--logs PATH]

Decision accuracy counts a stop the policy says as +1 on a stop sample and −1 (a lost continue) on a continue sample,
so against a policy that never stops it changes by (right stops − wrong stops) / n: it does not fall only if the
policy's stops are right at least half the time. This bench asks whether anything in the prompt the policy gets (the
last `context_turns` messages, cut at the config's stop rule) finds stops that often: a bag-of-words logistic
regression, trained and scored by 5-fold cross-validation over whole sessions of the config's training side. It has
far more supervision than GRPO's reward gives a 135M model in an hour, so what it cannot find is not there for the
policy either, in these words. Printed: the stop share, the classifier's ROC AUC with a 95% session-bootstrap CI, its
stop precision at 10/20/40% stop recall, and the best change in decision accuracy any threshold of it gives.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_predict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibrator.expert_logs.samples_file import TrainingSample  # noqa: E402
from calibrator.expert_logs.logs import render  # noqa: E402
from train import data  # noqa: E402
from train.config import load_config  # noqa: E402


def mostly_cjk(texts: list[str]) -> bool:
    chars = "".join(texts)
    return sum("\u4e00" <= c <= "\u9fff" for c in chars) > 0.3 * max(1, len(chars))


def session_bootstrap_auc(y: np.ndarray, p: np.ndarray, groups: list[str], n_boot: int, seed: int) -> tuple[float, float]:
    sessions = sorted(set(groups))
    labels = np.array(groups)
    index = {s: np.flatnonzero(labels == s) for s in sessions}
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        rows = np.concatenate([index[s] for s in rng.choice(sessions, len(sessions))])
        if 0 < y[rows].sum() < len(rows):
            values.append(roc_auc_score(y[rows], p[rows]))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "train/configs/cpu-learn.yaml")
    parser.add_argument("--logs", type=Path, help="expert logs (default: the config's)")
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap replicates over sessions")
    args = parser.parse_args()
    config = load_config(args.config)
    if args.logs:
        config = config.model_copy(update={"logs": args.logs})
    samples = [TrainingSample(**s.model_dump(), target_info=[]) for s in data.segment_logs(config)]
    train, _ = data.split(samples, config.eval_fraction, config.seed, content=False)
    shown = [render(s.context[-config.context_turns:] if config.context_turns else s.context) for s in train]
    y = np.array([s.decision == "stop" for s in train])
    groups = [s.session_id for s in train]
    cjk = mostly_cjk(shown)
    features = TfidfVectorizer(analyzer="char" if cjk else "word", ngram_range=(1, 3) if cjk else (1, 2), min_df=2).fit_transform(shown)
    p = cross_val_predict(LogisticRegression(max_iter=3000, class_weight="balanced"), features, y, groups=groups,
                          cv=GroupKFold(5), method="predict_proba")[:, 1]
    order = np.argsort(-p, kind="stable")
    right = np.cumsum(y[order])
    said = np.arange(1, len(y) + 1)
    precision, recall = right / said, right / y.sum()
    gain = (right - (said - right)) / len(y)  # decision accuracy change vs never stopping, stopping on the top k
    low, high = session_bootstrap_auc(y, p, groups, args.boot, config.seed)
    print(f"{len(train)} training samples from {len(set(groups))} sessions ({config.logs}, stop rule {config.stop_rule!r}, "
          f"last {config.context_turns or 'all'} messages, {'character' if cjk else 'word'} n-grams): stop share {y.mean():.3f}")
    print(f"ROC AUC {roc_auc_score(y, p):.3f} [{low:.3f}, {high:.3f}]")
    for share in (0.1, 0.2, 0.4):
        k = int(np.argmax(recall >= share))
        print(f"stop precision at {share:.0%} stop recall: {precision[k]:.3f} ({right[k]} right of {said[k]} stops)")
    best = int(np.argmax(gain))
    print(f"best decision-accuracy change over never stopping: {max(gain[best], 0.0):+.3f}"
          + (f" (stopping on the top {said[best]} samples, {right[best]} right)" if gain[best] > 0 else
             " (no threshold: every set of stops it can pick is wrong at least half the time)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
