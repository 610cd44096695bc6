"""`python -m calibrator`: calibrate a component's prompt against a gold set, score a prompt as it is, extract
training targets from expert logs, or serve the calibrated judge as a reward. One module per command group; `parser`
holds the shape of the command line."""

from calibrator.cli.calibrate import calibrate
from calibrator.cli.extract import extract
from calibrator.cli.goldset import goldset
from calibrator.cli.parser import build
from calibrator.cli.review import review
from calibrator.cli.serve import serve
from calibrator.cli.suggest import suggest

COMMANDS = {"run": calibrate, "eval": calibrate, "extract": extract, "review": review, "goldset": goldset, "serve": serve, "suggest": suggest}


def main(argv: list[str] | None = None) -> int:
    args = build().parse_args(argv)
    return COMMANDS[args.command](args)
