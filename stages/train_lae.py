"""DVC stage `train_lae`: see `dsah train-lae --help` (the arguments are written once, in dvc.yaml)."""

import sys

from dsah.cli import main

if __name__ == "__main__":
    main(["train-lae", *sys.argv[1:]])
