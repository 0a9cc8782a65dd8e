#!/usr/bin/env bash
# Run the MCP conformance suite's SERVER scenarios (@modelcontextprotocol/conformance,
# pinned in package.json) against a Streamable HTTP endpoint and condense the result.
#
# Usage: conformance.sh URL OUTDIR
#
# Writes:
#   OUTDIR/summary.json        {"passed": N, "failed": M, "scenarios": {"name": "pass"|"fail", ...},
#                               "checks": {"passed", "failed", "warnings"}, "suite", "url", "timedOut"}
#   OUTDIR/results/server-<scenario>-<timestamp>/checks.json   the suite's raw per-scenario checks
#   OUTDIR/conformance.stdout, OUTDIR/conformance.stderr        the suite's console output
#
# passed/failed count scenarios. A scenario fails if any of its checks is FAILURE or
# WARNING (the rule the suite applies to --expected-failures baselines; its console
# summary ignores warnings), or if it crashed before producing checks.
#
# Exit status: 0 once summary.json is written, whatever the scenarios did; non-zero if
# the suite could not run or overran the time limit (summary.json still lists what ran).
#
# Environment:
#   CONFORMANCE_SUITE    active (default; the suite's default, 30 scenarios),
#                        all (adds the 2 pending ones), or pending
#   CONFORMANCE_TIMEOUT  seconds for the whole run (default 300)
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 URL OUTDIR" >&2
    exit 2
fi
url="$1"
outdir="$2"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
suite="${CONFORMANCE_SUITE:-active}"
limit="${CONFORMANCE_TIMEOUT:-300}"

# Run the installed CLI directly: npx could prompt or reach for the network.
cli="$here/node_modules/@modelcontextprotocol/conformance/dist/index.js"
[[ -f "$cli" ]] || { echo "conformance.sh: $cli missing; run scripts/install-test-deps" >&2; exit 2; }

mkdir -p "$outdir"
outdir="$(cd "$outdir" && pwd)"
# Result directories are matched back to scenarios by name, so stale ones must go.
rm -rf "$outdir/results" "$outdir/summary.json"
mkdir -p "$outdir/results"

# The suite exits 1 when any scenario fails; that is a result, not an error.
status=0
timeout --kill-after=10 "$limit" \
    node "$cli" server --url "$url" --suite "$suite" --output-dir "$outdir/results" \
    </dev/null >"$outdir/conformance.stdout" 2>"$outdir/conformance.stderr" || status=$?
timed_out=false
case "$status" in
    0 | 1) ;;
    124 | 137) timed_out=true ;;
    *)
        echo "conformance.sh: suite exited with status $status; see $outdir/conformance.stderr" >&2
        exit 1
        ;;
esac

node - "$outdir" "$suite" "$url" "$timed_out" <<'EOF'
// Condense the suite's output into summary.json. The scenario list comes from the
// console ("=== Running scenario: X ==="), because a scenario that throws writes no
// checks.json; verdicts come from each scenario's checks.json.
const fs = require("node:fs");
const path = require("node:path");
const [outdir, suite, url, timedOut] = process.argv.slice(2);

const stdout = fs.readFileSync(path.join(outdir, "conformance.stdout"), "utf8");
const ran = [...stdout.matchAll(/^=== Running scenario: (\S+) ===$/gm)].map((m) => m[1]);

const checksByScenario = new Map();
for (const dir of fs.readdirSync(path.join(outdir, "results"))) {
  const m = /^server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$/.exec(dir);
  const file = path.join(outdir, "results", dir, "checks.json");
  if (m && fs.existsSync(file)) checksByScenario.set(m[1], JSON.parse(fs.readFileSync(file, "utf8")));
}
// --scenario runs print no "Running scenario" banner; fall back to what was written.
const names = ran.length > 0 ? ran : [...checksByScenario.keys()];
if (names.length === 0) {
  console.error("conformance.sh: no scenarios ran; see conformance.stdout/stderr");
  process.exit(1);
}

const scenarios = {};
const checks = { passed: 0, failed: 0, warnings: 0 };
for (const name of names) {
  const list = checksByScenario.get(name);
  if (!list) {
    scenarios[name] = "fail";
    checks.failed += 1;
    continue;
  }
  const count = (status) => list.filter((c) => c.status === status).length;
  checks.passed += count("SUCCESS");
  checks.failed += count("FAILURE");
  checks.warnings += count("WARNING");
  scenarios[name] = count("FAILURE") + count("WARNING") === 0 ? "pass" : "fail";
}
const verdicts = Object.values(scenarios);
const summary = {
  passed: verdicts.filter((v) => v === "pass").length,
  failed: verdicts.filter((v) => v === "fail").length,
  scenarios,
  checks,
  suite,
  url,
  timedOut: timedOut === "true",
};
fs.writeFileSync(path.join(outdir, "summary.json"), JSON.stringify(summary, null, 2) + "\n");
console.log(
  `conformance: ${summary.passed}/${names.length} scenarios passed ` +
    `(checks: ${checks.passed} passed, ${checks.failed} failed, ${checks.warnings} warnings)`,
);
EOF

if [[ "$timed_out" == true ]]; then
    echo "conformance.sh: suite did not finish within ${limit}s; summary.json is partial" >&2
    exit 1
fi
