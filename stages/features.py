"""DVC stage `features`: see `dsah features --help` (the arguments are written once, in dvc.yaml)."""

import sys

from dsah.cli import main

if __name__ == "__main__":
    main(["features", *sys.argv[1:]])
