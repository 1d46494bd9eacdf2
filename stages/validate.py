"""DVC stage `validate`: a Great Expectations suite over the prepared split; fails on any defect.

Usage: python stages/validate.py --prepared data/prepared --params params.yaml --out reports/validation.json
Exit status: 0 all checks passed, 1 a check failed (listed on stderr; the report is still written),
2 missing input or bad params.
"""

import sys

from dsah.cli import main

if __name__ == "__main__":
    main(["validate", *sys.argv[1:]])
