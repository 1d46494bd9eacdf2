"""DVC stage `report`: see `dsah report --help` (the arguments are written once, in dvc.yaml)."""

import sys

from dsah.cli import main

if __name__ == "__main__":
    main(["report", *sys.argv[1:]])
