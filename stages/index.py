"""DVC stage `index`: see `dsah index --help` (the arguments are written once, in dvc.yaml)."""

import sys

from dsah.cli import main

if __name__ == "__main__":
    main(["index", *sys.argv[1:]])
