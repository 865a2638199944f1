#!/usr/bin/env bash
# Acceptance of issue 3 on configs/cartpole__em.toml: EM group recovery (ARI) and held-out
# accuracy per group of the single pooled, EM mixture and oracle models over seeds 1–5, then
# the majority:minority ratio sweep (configs/cartpole__em-ratio-sweep.toml).
# Usage: benches/em_cartpole.sh [OUT_DIR]   (needs `cargo build --release -p maxmin`)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/bench-em}
bin=target/release/maxmin
mkdir -p "$out"
printf '| seed | ARI | purity | iterations | single left | single right | mixture left | mixture right | oracle left | oracle right | wall s |\n|---|---|---|---|---|---|---|---|---|---|---|\n'
for s in 1 2 3 4 5; do
  rm -rf "$out/seed$s"
  start=$(date +%s.%N)
  "$bin" run configs/cartpole__em.toml --seed "$s" --out "$out/seed$s" >/dev/null 2>&1
  end=$(date +%s.%N)
  python3 - "$out/seed$s/summary.json" "$s" "$(echo "$end - $start" | bc)" <<'PY'
import json, sys
em = json.load(open(sys.argv[1]))["em"]
p = lambda d, g: f"{100 * d[g]:.1f}" if g in d else "–"
print(f"| {sys.argv[2]} | {em['ari']:.3f} | {em['purity']:.3f} | {em['iterations']} | "
      + " | ".join(p(em[m], g) for m in ("single", "mixture", "oracle") for g in ("left", "right"))
      + f" | {float(sys.argv[3]):.1f} |")
PY
done
rm -rf "$out/sweep"
start=$(date +%s.%N)
"$bin" run configs/cartpole__em-ratio-sweep.toml --out "$out/sweep" >/dev/null 2>&1
end=$(date +%s.%N)
echo
sed -n '/^| ratio/,/^$/p' "$out/sweep/report.md"
echo "ratio sweep wall time: $(echo "$end - $start" | bc) s; plot: $out/sweep/plots/em_ratio_sweep.svg"
