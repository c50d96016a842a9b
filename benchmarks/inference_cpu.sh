#!/usr/bin/env bash
# CPU inference latency of both backends: tiny and mid-size π0/π0.5, float32 and bfloat16.
set -euo pipefail
PI_LOAD_PLUGINS=jax,torch pi bench --backends jax,torch --size tiny,mid --family pi0,pi05 \
  --dtype float32,bfloat16 --repeats 7 --json "${1:-benchmarks/results-cpu-2core.json}"
