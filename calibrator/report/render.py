"""Render a run record as one self-contained HTML page: no scripts, no external URLs."""

from typing import TYPE_CHECKING

from jinja2 import Environment, PackageLoader, select_autoescape

if TYPE_CHECKING:
    from calibrator.runs import RunRecord

_env = Environment(loader=PackageLoader("calibrator.report", "templates"), autoescape=select_autoescape(default=True))
_env.filters["num"] = lambda v, digits=2: "–" if v is None else f"{v:.{digits}f}"


def render_run(record: "RunRecord") -> str:
    return _env.get_template("run.html").render(r=record, labels=("0", "0.5", "1"))
