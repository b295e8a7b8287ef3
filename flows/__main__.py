"""Legacy entry point: `WORKER_TYPE=<name> python -m flows`, as the old ECS tasks ran."""

from __future__ import annotations

import os
import sys

from flows._runner import run_worker

if __name__ == "__main__":
    sys.exit(run_worker(os.environ.get("WORKER_TYPE")))
