#!/usr/bin/env bash
# The test command (README): starts the servers the tests use, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh start
# shellcheck disable=SC1091
source "${WF_SERVICES_DIR:-/tmp/wf-services}/env"
cargo test --workspace "$@"
