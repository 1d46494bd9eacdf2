"""DVC stage `plan`: see `dsah plan --help` (the arguments are written once, in dvc.yaml)."""

import sys

from dsah.cli import main

if __name__ == "__main__":
    main(["plan", *sys.argv[1:]])
