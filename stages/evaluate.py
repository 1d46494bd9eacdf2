"""DVC stage `evaluate`: see `dsah evaluate --help` (the arguments are written once, in dvc.yaml)."""

import sys

from dsah.cli import main

if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]])
