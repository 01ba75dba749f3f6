#!/usr/bin/env bash
# Proves the artifacts in dist/ (from scripts/wheel.sh) install as a user installs them:
#   * the wheel into a brand-new venv on a PATH with no cargo and no rustc, where the fast test
#     tier then runs against the installed package (not the editable build), and
#     `import batched` must import neither numpy nor torch;
#   * the sdist into another brand-new venv, built from source by pip.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
wheel=$(ls dist/*.whl)
sdist=$(ls dist/*.tar.gz)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "check_dist: the wheel, in a fresh venv without a Rust toolchain"
python3 -m venv "$work/wheel-venv"
(
    export PATH="$work/wheel-venv/bin:/usr/local/bin:/usr/bin:/bin"
    # This venv holds the wheel and its test extra only: torch's tests skip here (they ran in the
    # main tier), so skips are allowed.
    unset VIRTUAL_ENV PYO3_PYTHON BATCHED_REQUIRE_ALL
    if command -v cargo || command -v rustc; then
        echo "check_dist: a Rust toolchain is still on PATH" >&2
        exit 1
    fi
    python -m pip install --quiet --disable-pip-version-check "$wheel[test]"
    cd "$work"
    python - "$work/wheel-venv" <<'PY'
import sys

import batched

assert batched.__file__.startswith(sys.argv[1]), f"imported {batched.__file__}, not the wheel"
heavy = sorted({"numpy", "torch"} & set(sys.modules))
assert not heavy, f"import batched imported {heavy}"
print(f"batched {batched.__version__} from {batched.__file__}")
PY
    # The repository's tests, run against the installed package: rootdir-relative imports put
    # only tests/ on sys.path, never python/.
    cd "$repo"
    BATCHED_EXPECT_INSTALLED_IN="$work/wheel-venv" \
        python -m pytest -q -p no:cacheprovider -m "not slow and not examples" tests
)

echo "check_dist: the sdist, built from source by pip in a fresh venv"
python3 -m venv "$work/sdist-venv"
sdist_target=${BATCHED_SDIST_TARGET_DIR:-$HOME/.cache/batched/target-sdist}
# Every file of the sdist carries one fixed date, older than any cached build, so cargo would
# take this crate's last build for fresh: drop it (the dependencies' builds stay cached).
cargo clean --quiet --release --package batched --target-dir "$sdist_target"
CARGO_TARGET_DIR=$sdist_target \
    "$work/sdist-venv/bin/python" -m pip install --quiet --disable-pip-version-check "$sdist"
(cd "$work" && "$work/sdist-venv/bin/python" -c '
import batched

@batched.dynamically(batch_size=4)
def double(xs):
    return [2 * x for x in xs]

assert double(21) == 42 and double([1, 2]) == [2, 4]
print("sdist install works:", batched.__version__)
')
