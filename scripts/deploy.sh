#!/usr/bin/env bash
# Create or update the three Prefect deployments from prefect.yaml (docs/operator-guide.md).
#
#   scripts/deploy.sh               build and push the image, then deploy
#   scripts/deploy.sh --skip-build  deploy an image that is already in ECR (tagged AVIAN_IMAGE_TAG)
#
# prefect.yaml reads its values from the environment; this script fills in the defaults below and
# stops, naming them, when required ones are missing (prefect.yaml has no default syntax).
set -euo pipefail
cd "$(dirname "$0")/.."

skip_build=false
args=()
for arg in "$@"; do
  case "$arg" in
    --skip-build) skip_build=true ;;
    *) args+=("$arg") ;;
  esac
done

export PREFECT_WORK_POOL_NAME="${PREFECT_WORK_POOL_NAME:-avian-ecs}"
export AVIAN_ECS_CLUSTER="${AVIAN_ECS_CLUSTER:-avian-platform}"
export AVIAN_ASSIGN_PUBLIC_IP="${AVIAN_ASSIGN_PUBLIC_IP:-DISABLED}"
export AWS_REGION="${AWS_REGION:-ca-central-1}"
export NODE_ENV="${NODE_ENV:-production}"
if [[ -z "${AVIAN_IMAGE_TAG:-}" ]]; then
  AVIAN_IMAGE_TAG="$(git rev-parse --short=12 HEAD 2>/dev/null || true)"
  export AVIAN_IMAGE_TAG
fi

required=(AVIAN_IMAGE_REPOSITORY AVIAN_IMAGE_TAG AVIAN_TASK_ROLE_ARN AVIAN_EXECUTION_ROLE_ARN
  AVIAN_VPC_ID AVIAN_SUBNET_ID_A AVIAN_SUBNET_ID_B AVIAN_SECURITY_GROUP_ID)
missing=()
for name in "${required[@]}"; do
  [[ -n "${!name:-}" ]] || missing+=("$name")
done
if ((${#missing[@]})); then
  echo "deploy: set ${missing[*]} (see docs/operator-guide.md)" >&2
  exit 1
fi

prefect_file=prefect.yaml
if [[ "$skip_build" == true ]]; then
  # The same deployments without the build and push sections.
  prefect_file="$(mktemp --suffix=.yaml)"
  trap 'rm -f "$prefect_file"' EXIT
  python - "$prefect_file" <<'PY'
import sys

import yaml

with open("prefect.yaml", encoding="utf-8") as source:
    config = yaml.safe_load(source)
config.pop("build", None)
config.pop("push", None)
with open(sys.argv[1], "w", encoding="utf-8") as target:
    yaml.safe_dump(config, target, sort_keys=False)
PY
fi

prefect --no-prompt deploy --all --prefect-file "$prefect_file" "${args[@]}"
