#!/usr/bin/env bash
# Model-checks the concurrent core with loom: admission, one call's outcome, the wake-up chain
# and the shipped scheduler (its channel, parker and clock swapped for loom-visible ones by
# rust/sync.rs), in every interleaving of a few threads (rust/loom_tests.rs). Each model prints
# how many interleavings it explored; loom reports a lost wake-up as a "deadlock".
#
#   scripts/loom.sh [--quick] [FILTER]
#
# --quick bounds every model to 3 preemptions: seconds instead of minutes. LOOM_MAX_PREEMPTIONS
# sets any bound (loom's own variable); without either, most models run exhaustively. FILTER
# picks models by name, as `cargo test` does.
#
# The #[ignore]d models named previous_rule_* run the shipped scheduler with its earlier wake-up
# rule switched back on (a loom-only switch), which lost wake-ups. Each runs in a process of its own (loom aborts on a deadlock) and must make loom
# report one: proof that the models catch the bug the shipped rule fixes.
set -euo pipefail
cd "$(dirname "$0")/.."

# `--cfg loom` rebuilds everything, so it gets a target folder of its own.
export CARGO_TARGET_DIR=${BATCHED_LOOM_TARGET_DIR:-$HOME/.cache/batched/target-loom}
export RUSTFLAGS="--cfg loom${RUSTFLAGS:+ $RUSTFLAGS}"
# Loom runs much faster optimised; fat LTO would only slow the build down.
export CARGO_PROFILE_RELEASE_LTO=false
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16

if [ "${1:-}" = --quick ]; then
    export LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-3}
    shift
fi
filter=${1:-}
test=(cargo test --release --lib)

start=$SECONDS
"${test[@]}" -- --nocapture "loom_tests::$filter"

known=$("${test[@]}" --quiet -- --list --ignored "loom_tests::$filter" 2>/dev/null |
    sed -n 's/^\(loom_tests::previous_rule_[a-z0-9_]*\): test$/\1/p')
fixed=()
for name in $known; do
    if output=$("${test[@]}" --quiet -- --ignored --exact "$name" 2>&1); then
        fixed+=("$name")
    elif grep -q "deadlock" <<<"$output"; then
        echo "the previous rule still loses a wake-up, as it should: $name"
    else
        echo "$output"
        echo "previous-rule model failed without a deadlock: $name" >&2
        exit 1
    fi
done
echo "loom: done in $((SECONDS - start)) s"
if [ ${#fixed[@]} -gt 0 ]; then
    echo "no longer finds the lost wake-up (the model is broken): ${fixed[*]}" >&2
    exit 1
fi
