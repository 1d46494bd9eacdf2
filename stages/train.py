"""DVC stage `train`: see `dsah train --help` (the arguments are written once, in dvc.yaml)."""

import sys

from dsah.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
