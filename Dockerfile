# The AVIAN workers' image. It serves `prefect flow-run execute` (what the ECS worker starts for a
# deployment's flow run) and the legacy `WORKER_TYPE=<worker> python -m flows` (default command).
#
# The base image matches the locked Prefect version and our Python. For reproducible builds pin
# its digest as well, e.g. FROM prefecthq/prefect:3.9.1-python3.12@sha256:<digest>
# (`docker buildx imagetools inspect prefecthq/prefect:3.9.1-python3.12` prints it).
FROM prefecthq/prefect:3.9.1-python3.12

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv

# Flow runs do not run as root; they write only to $HOME (Prefect's local state).
RUN useradd --create-home --uid 10001 --user-group avian

# Must match the pull step of prefect.yaml (set_working_directory).
WORKDIR /opt/prefect/avian-workers

ENV UV_PROJECT_ENVIRONMENT=/opt/prefect/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    PATH=/opt/prefect/venv/bin:$PATH \
    PYTHONUNBUFFERED=1

# glibc's allocator: two arenas instead of one per thread (8 per core), and every block over
# 128 KiB mapped on its own, so a finished API page (megabytes) goes back to the system rather
# than staying in a thread's arena. edr-polling's peak RSS at 20,000 devices per tenant fell
# from 449 to 331 MB, at the same throughput (bench/README.md).
ENV MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=131072

# Dependencies from the lock file only, in their own layer: a code change does not reinstall them.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

COPY README.md ./
COPY avian_workers ./avian_workers
COPY flows ./flows
COPY blocks ./blocks
COPY migrations ./migrations
RUN uv sync --frozen --no-dev

USER 10001

CMD ["python", "-m", "flows"]
