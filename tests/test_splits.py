"""Splits that never move: a row's split is a function of its id, whatever happens to the other rows."""

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibrator.components.grader import GraderRow
from calibrator.gold.goldset import SPLITS, load_goldset
from calibrator.gold.splits import MIN_DEV, SPLIT_FRACTIONS, balance, dev_ids, split_of

from support import examples
from support.files import write_csv

LABELS = ("0", "0.5", "1")


def row(i: str, label: str, candidate: str = "") -> dict:
    return {"id": i, "context": "patient: I have a cough.", "target_info": "duration: three days",
            "candidate": candidate or f"Question {i}?", "content_score": label}


ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start=st.dictionaries(ids, st.sampled_from(LABELS), min_size=2, max_size=40),
    added=st.dictionaries(ids, st.sampled_from(LABELS), max_size=15),
    data=st.data(),
)
def test_other_rows_never_move_a_row(tmp_path_factory, start, added, data):
    """Add, delete and relabel other rows (through files, as users do): every surviving row keeps its split."""
    folder: Path = tmp_path_factory.mktemp("g")
    before = load_goldset(write_csv(folder / "a.csv", [row(i, lab) for i, lab in start.items()]), GraderRow)
    watched = data.draw(st.sampled_from(sorted(start)))
    others = sorted(set(start) - {watched})
    deleted = set(data.draw(st.lists(st.sampled_from(others), unique=True, max_size=len(others)))) if others else set()
    kept = [i for i in others if i not in deleted]
    chosen = data.draw(st.lists(st.sampled_from(kept), unique=True, max_size=len(kept))) if kept else []
    relabelled = {i: LABELS[(LABELS.index(start[i]) + 1) % 3] for i in chosen}
    rows = {i: lab for i, lab in start.items() if i not in deleted} | relabelled
    rows |= {i: lab for i, lab in added.items() if i not in start}
    after = load_goldset(write_csv(folder / "b.csv", [row(i, lab) for i, lab in rows.items()]), GraderRow)
    for i in rows:
        if i in start:
            assert after.splits[i] == before.splits[i]
    assert after.splits[watched] == before.splits[watched] == split_of(watched)


def test_relabelling_a_row_itself_keeps_its_split(tmp_path):
    rows = [row(f"r{i}", LABELS[i % 3]) for i in range(30)]
    before = load_goldset(write_csv(tmp_path / "a.csv", rows), GraderRow)
    rows[7]["content_score"] = "1" if rows[7]["content_score"] != "1" else "0"
    after = load_goldset(write_csv(tmp_path / "b.csv", rows), GraderRow)
    assert after.splits == before.splits


@settings(max_examples=examples(60), deadline=None)
@given(st.dictionaries(ids, st.sampled_from(LABELS), min_size=90, max_size=160))
def test_balance_within_one_row_of_40_30_30_or_a_warning(labels):
    """For every label with at least 30 rows: each split's count is within one row of its share, or the balance
    names that label in a warning; and a warning is never raised for a label that is within one row."""
    class Row:
        def __init__(self, i: str, label: str):
            self.id, self.label = i, float(label)

    rows = [Row(i, lab) for i, lab in labels.items()]
    splits = {r.id: split_of(r.id) for r in rows}
    found = balance(rows, splits)
    for entry in found.labels:
        off = [s for s in SPLITS if abs(entry.counts[s] - entry.total * SPLIT_FRACTIONS[s]) > 1]
        warned = [w for w in found.warnings if w.startswith(f"label {entry.label}:")]
        assert sum(entry.counts.values()) == entry.total
        if entry.total >= 30 and off:
            assert len(warned) == 1
            assert all(f"{s} {entry.counts[s]}" in warned[0] for s in SPLITS)
        if not off and all(entry.counts[s] for s in SPLITS):
            assert warned == []


def test_a_missing_label_is_warned(tmp_path):
    ids_in = {s: [] for s in SPLITS}
    n = 0
    while any(len(v) < 3 for v in ids_in.values()):
        ids_in[split_of(f"x{n}")].append(f"x{n}")
        n += 1
    rows = [row(i, "0") for s in SPLITS for i in ids_in[s][:3]] + [row(ids_in["train"][0] + "-one", "1")]
    gold = load_goldset(write_csv(tmp_path / "g.csv", rows), GraderRow)
    warnings = gold.balance().warnings
    assert any(w.startswith("label 1:") and "no " in w for w in warnings)


def test_split_fractions_hold_in_the_large():
    counts = {s: 0 for s in SPLITS}
    for i in range(20000):
        counts[split_of(f"row-{i}")] += 1
    for s in SPLITS:
        assert abs(counts[s] / 20000 - SPLIT_FRACTIONS[s]) < 0.015


def test_dev_slice_is_inside_train_stable_and_never_empty(tmp_path):
    rows = [row(f"r{i}", LABELS[i % 3]) for i in range(200)]
    gold = load_goldset(write_csv(tmp_path / "a.csv", rows), GraderRow)
    fit, dev = gold.fit_and_dev()
    assert len(dev) > MIN_DEV  # past the minimum, the slice is by hash alone
    train = {r.id for r in gold.split("train")}
    assert dev and fit
    assert {r.id for r in dev} | {r.id for r in fit} == train
    assert not {r.id for r in dev} & {r.id for r in fit}
    bigger = load_goldset(write_csv(tmp_path / "b.csv", rows + [row(f"new{i}", "1") for i in range(40)]), GraderRow)
    big_dev = {r.id for r in bigger.fit_and_dev()[1]}
    assert {r.id for r in dev} <= big_dev  # rows that were dev stay dev once the slice is past its minimum
    assert len(dev_ids(["a", "b"])) == 1 and len(dev_ids(["a"])) == 0  # a tiny train keeps rows to learn from


def test_split_ids_are_recorded_for_every_split(tmp_path):
    rows = [row(f"r{i}", LABELS[i % 3]) for i in range(40)]
    gold = load_goldset(write_csv(tmp_path / "a.csv", rows), GraderRow)
    recorded = gold.split_ids()
    assert set(recorded) == {"train", "val", "test", "dev"}
    assert sorted(recorded["train"] + recorded["val"] + recorded["test"]) == sorted(r["id"] for r in rows)
    assert set(recorded["dev"]) <= set(recorded["train"])
