#!/usr/bin/env bash
# What must pass before a commit: formatting, clippy on every target, the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
scripts/test.sh
