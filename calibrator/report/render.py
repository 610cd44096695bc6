"""Render a run record as one self-contained HTML page: no scripts, no external URLs."""

from typing import TYPE_CHECKING

from jinja2 import Environment, PackageLoader, select_autoescape

if TYPE_CHECKING:
    from calibrator.runs import RunRecord

_env = Environment(loader=PackageLoader("calibrator.report", "templates"), autoescape=select_autoescape(default=True))
_env.filters["num"] = lambda v, digits=2: "–" if v is None else f"{v:.{digits}f}"

# Per component: (attribute, column title) of the split metrics, the confusion table and its labels.
VIEWS = {
    "grader": {"metrics": [("accuracy", "accuracy"), ("qwk", "qwk"), ("mae", "MAE")],
               "confusion": "confusion", "labels": ("0", "0.5", "1"), "label": "content_score"},
    "extractor": {"metrics": [("item_precision", "item precision"), ("item_recall", "item recall"), ("item_f1", "item F1"),
                              ("decision_accuracy", "decision accuracy")],
                  "confusion": "decision_confusion", "labels": ("continue", "stop"), "label": "decision"},
}


def render_run(record: "RunRecord") -> str:
    return _env.get_template("run.html").render(r=record, view=VIEWS[record.component])
