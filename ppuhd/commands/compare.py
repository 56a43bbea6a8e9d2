"""Compare trainings side by side: their last and best validation metrics.

    ppuhd compare output/deit_demo output/deit_plain_demo

Each argument is a training's output folder (its ``runtime.output_dir``),
finished or still running. The table shows each run's model, the metrics of
its last validation that all runs report, and its best metric with the step
it came at; from the second run on, how far each run's best is from the
first run's. Reads only the folders' ``metrics.json`` and ``config.yml``.
"""

import sys

from ..engine.reports import read_run
from .common import exit_on_user_error, run_main


def add_arguments(parser):
    parser.add_argument("runs", nargs="+", metavar="OUTPUT_DIR",
                        help="training output folders (runtime.output_dir); the others are compared with the first")


def _best_cell(best):
    return "-" if best is None else f"{best['metric']} {best['value']:.2f} ({best['step']})"


def _difference_cell(best, reference):
    if best is None or reference is None:
        return "-"
    if best["metric"] != reference["metric"]:
        return f"not comparable: best by {best['metric']}"
    return f"{best['value'] - reference['value']:+.2f}"


def comparison_table(runs):
    """The rows of the comparison, a header first, as lists of strings; ``runs`` from :func:`read_run`."""
    first = runs[0]
    shared = [key for key in first["final"] if all(key in run["final"] for run in runs[1:])]
    header = ["run", "model", *(f"last {key}" for key in shared), "best (step)"]
    if len(runs) > 1:
        header.append(f"best against {first['output_dir']}")
    rows = [header]
    for index, run in enumerate(runs):
        row = [run["output_dir"], run["model"], *(f"{run['final'][key]:.2f}" for key in shared), _best_cell(run["best"])]
        if len(runs) > 1:
            row.append("" if index == 0 else _difference_cell(run["best"], first["best"]))
        rows.append(row)
    return rows


def format_table(rows):
    """Rows of strings as aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def run(args):
    with exit_on_user_error():
        runs = [read_run(folder) for folder in args.runs]
    print(format_table(comparison_table(runs)))


def main(argv=None):
    return run_main(sys.modules[__name__], argv)
