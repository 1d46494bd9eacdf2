"""DVC stage `encode`: see `dsah encode --help` (the arguments are written once, in dvc.yaml)."""

import sys

from dsah.cli import main

if __name__ == "__main__":
    main(["encode", *sys.argv[1:]])
