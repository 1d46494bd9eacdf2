"""DVC stage `prepare`: the dataset chosen in params.yaml -> split table, image store, meta.json.

Usage: python stages/prepare.py --params params.yaml --out data/prepared
"""

import sys

from dsah.cli import main

if __name__ == "__main__":
    main(["prepare", *sys.argv[1:]])
