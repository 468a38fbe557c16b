"""``python -m bench``: workloads W1..W5, the ceilings, DBOS, floors (see ``bench/README.md``)."""

import sys

from bench.harness import main

if __name__ == "__main__":
    sys.exit(main())
