"""``make bench``: every benchmark, each with its reference measured in the same run.

``python -m tests.bench [decode|engine|ingest|pipeline|delivery|web] [ARGS]`` runs one of them."""

import sys

from tests.bench import decode, delivery, engine, ingest, pipeline, web

BENCHES = {
    "decode": decode.main, "engine": engine.main, "ingest": ingest.main,
    "pipeline": pipeline.main,
    "delivery": delivery.main,
    "web": web.main,
}

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in BENCHES:
        sys.exit(BENCHES[sys.argv[1]](sys.argv[2:]))
    for run in BENCHES.values():
        run([])
        print(flush=True)
