"""``make bench``: every benchmark in this folder, in order."""

import sys

from tests.bench import pipeline

if __name__ == "__main__":
    sys.exit(pipeline.main(sys.argv[1:]))
