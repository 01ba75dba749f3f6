#!/usr/bin/env bash
# Builds the release artifacts into dist/ and checks them as pip and PyPI will see them:
#   * an abi3 wheel for CPython >= 3.11 tagged manylinux2014 (glibc 2.17), linked with zig;
#   * the sdist.
# `auditwheel show` must find the wheel consistent with manylinux_2_17_x86_64, and
# `twine check` must pass both. Needs a Rust toolchain; everything else comes from PyPI into
# a small tools venv (BATCHED_TOOLS_VENV, default ~/.cache/batched/tools-venv).
set -euo pipefail
cd "$(dirname "$0")/.."

tools=${BATCHED_TOOLS_VENV:-$HOME/.cache/batched/tools-venv}
[ -x "$tools/bin/python" ] || python3 -m venv "$tools"
"$tools/bin/python" -m pip install --quiet --disable-pip-version-check \
    "maturin>=1.9.4,<2" "ziglang>=0.13" "auditwheel>=6" "twine>=5"
export PATH="$tools/bin:$PATH"
export CARGO_TARGET_DIR=${BATCHED_WHEEL_TARGET_DIR:-$HOME/.cache/batched/target-wheel}

# zig links the LLVM unwinder into the library, but CPython <= 3.13 ends daemon threads at exit
# with pthread_exit, whose forced unwind runs glibc's unwinder (libgcc_s) through the Rust
# frames; their personality routine must then use that same unwinder, or the process crashes.
libgcc_s=$(gcc -print-file-name=libgcc_s.so.1)
[ -f "$libgcc_s" ] || { echo "wheel.sh: libgcc_s.so.1 not found (is gcc installed?)" >&2; exit 1; }
export RUSTFLAGS="-C link-arg=$libgcc_s${RUSTFLAGS:+ $RUSTFLAGS}"

rm -rf dist
maturin build --release --strip --zig --compatibility manylinux2014 --interpreter python3.11 \
    --out dist --quiet
maturin sdist --out dist

wheel=$(ls dist/*.whl)
sdist=$(ls dist/*.tar.gz)
case "$wheel" in
*-cp311-abi3-*manylinux_2_17_x86_64*.whl) ;;
*) echo "wheel.sh: unexpected wheel tag: $wheel" >&2; exit 1 ;;
esac

report=$(auditwheel show "$wheel")
echo "$report"
# auditwheel wraps its lines; compare with the whitespace folded.
tr -s ' \n' '  ' <<<"$report" |
    grep -q 'consistent with the following platform tag: "manylinux_2_17_x86_64"' ||
    { echo "wheel.sh: auditwheel does not find the wheel manylinux_2_17 compatible" >&2; exit 1; }
twine check --strict "$wheel" "$sdist"

# What the wheel must hold, and must not.
python3 - "$wheel" <<'PY'
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
required = ["batched/__init__.py", "batched/_core.pyi", "batched/py.typed", "batched/_core.abi3.so"]
missing = [name for name in required if name not in names]
if not any(name.endswith(".dist-info/licenses/LICENSE") for name in names):
    missing.append("LICENSE")
stray = [name for name in names if name.split("/")[0] in {"tests", "benches", "examples"}]
if missing or stray:
    sys.exit(f"wheel.sh: the wheel lacks {missing} or holds {stray}")
PY
# See the libgcc_s note above: the unwinder must be the system's, not a copy inside the library.
python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("batched/_core.abi3.so"))' \
    "$wheel" >"${TMPDIR:-/tmp}/batched-core-check.so"
readelf -d "${TMPDIR:-/tmp}/batched-core-check.so" | grep -q 'NEEDED.*libgcc_s.so.1' ||
    { echo "wheel.sh: the library does not use libgcc_s's unwinder" >&2; exit 1; }
rm "${TMPDIR:-/tmp}/batched-core-check.so"
ls -l dist
