"""``python -m bench``: the W1 throughput benchmark (see ``bench/README.md``)."""

import sys

from bench.throughput import main

if __name__ == "__main__":
    sys.exit(main())
