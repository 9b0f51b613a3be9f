#!/usr/bin/env bash
# The project's one test command (README: "Test"). Runs every Rust test of the workspace: unit tests,
# doc tests and the cross-crate tests in tests/. Safe to run on a fresh machine: cargo fetches the locked
# dependencies from crates.io.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
