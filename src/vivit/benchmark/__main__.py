"""``python -m vivit.benchmark``: :func:`vivit.benchmark.cli.main`."""

from vivit.benchmark.cli import main

if __name__ == "__main__":  # not in the DataLoader workers of the loader suite, which import this module again
    main()
