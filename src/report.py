"""Report a sweep: python src/report.py <sweep dir> writes <sweep dir>/report.md and report.png."""

import argparse
from pathlib import Path

from vivit.report import write_report
from vivit.search import is_search, write_search_report

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="e.g. logs/train/sweeps/table2_model_variants")
    args = parser.parse_args()
    if is_search(args.sweep_dir):  # hparams_search=: its trials, best first, and Optuna's plots (vivit.search)
        md, png = write_search_report(args.sweep_dir)
    else:
        md, png = write_report(args.sweep_dir)
    print(md.read_text())
    print(f"table: {md}\nplot:  {png}")
