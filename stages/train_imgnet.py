"""DVC stage `train_imgnet`: see `dsah train-imgnet --help` (the arguments are written once, in dvc.yaml)."""

import sys

from dsah.cli import main

if __name__ == "__main__":
    main(["train-imgnet", *sys.argv[1:]])
