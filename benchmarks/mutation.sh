#!/usr/bin/env bash
# Mutation testing of the bar stream (bot/core/stream.py) and the per-bar kernels (bot/core/kernels/features.py,
# regime.py, paper.py), the kernels run as plain Python (PROGDISTILL_PURE_KERNELS=1, exported below).
#
# Not part of CI: it takes tens of minutes (25 with 2 workers on 2 busy cores). Configuration:
# [tool.mutmut] in pyproject.toml; what the scores mean and which survivors are equivalent: docs/mutation.md.
#
#   benchmarks/mutation.sh              # fresh run, 2 workers, prints the per-module scores and survivors
#   MAX_CHILDREN=1 benchmarks/mutation.sh
#   benchmarks/mutation.sh 'bot.core.kernels.paper.*'   # fresh run of these mutants only (mutmut patterns)
#   benchmarks/mutation.sh --report     # only summarise the last run in ./mutants/
#   benchmarks/mutation.sh --again [NAME...]  # re-run these mutants (default: the ones not killed) on the
#                                       # last run's ./mutants/ with the tests as they are now
#   benchmarks/mutation.sh --smoke      # seconds, runs no test: mutmut runs, the configured modules and
#                                       # test files exist, the kernels load as plain Python under the
#                                       # run's environment, the launcher's patch gives mutants in each
#                                       # kernel's step, the summary reads mutmut's result lines
#
# mutmut copies bot/ and tests/ into ./mutants/ (git-ignored) and runs from there; the run is fresh each time
# (mutmut's cache is keyed on function bodies and would keep verdicts of tests that have since changed).
# mutmut skips every decorated function, and every kernel function carries Cython's decorators (@cython.cfunc,
# @cython.ccall, ...), which are no-ops in plain Python: the run goes through a launcher ($launch below)
# that lets mutmut mutate a function whose decorators are all `cython.*`, so the kernels' math is mutated
# (without it only their few undecorated helpers were).
# A real run is the only way to exercise mutmut itself (even one mutant needs the copy and a clean test run,
# tens of seconds), so --smoke checks everything around it and leaves ./mutants/ alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# the mutants are the kernels' .py files: load them as plain Python even where compiled extensions exist
export PROGDISTILL_PURE_KERNELS=1
# Per-module score and the mutants not killed, from `mutmut results --all true` lines ("name: status").
summarise='
import collections, sys
counts = collections.Counter()
left = []
for line in sys.stdin:
    name, _, status = line.strip().rpartition(": ")
    if not name:
        continue
    module = name.split(".x")[0]
    counts[module, status] += 1
    if status not in ("killed", "timeout"):
        left.append(f"  {status:9} {name}")
for module in sorted({m for m, _ in counts}):
    total = sum(n for (m, _), n in counts.items() if m == module)
    killed = counts[module, "killed"] + counts[module, "timeout"]
    print(f"{module}: {killed}/{total} killed = {100 * killed / total:.1f}%")
print("not killed (docs/mutation.md lists the equivalent ones):")
print("\n".join(left) or "  none")
'
# mutmut (3.x) leaves every decorated function alone; the kernels' functions all carry Cython decorators,
# no-ops in plain Python. $cython_ok makes mutmut judge a function whose decorators are all `cython.*` as
# undecorated (the decorators stay on the trampoline, the original and every mutant).
cython_ok='
import libcst as cst
import libcst.matchers as m
from mutmut.mutation import file_mutation

skip = file_mutation.MutationVisitor._skip_node_and_children
cython = m.Attribute(value=m.Name("cython"))
cython_decorator = m.Decorator(decorator=cython | m.Call(func=cython))


def skip_unless_cython(self, node):
    decorators = node.decorators if isinstance(node, cst.FunctionDef) else ()
    if decorators and all(m.matches(d, cython_decorator) for d in decorators):
        node = node.with_changes(decorators=())
    return skip(self, node)


file_mutation.MutationVisitor._skip_node_and_children = skip_unless_cython
'
# `python -c "$launch" ARGS` is `mutmut ARGS` with $cython_ok applied (its workers are forked: they keep it).
launch="$cython_ok
import sys
from mutmut.__main__ import cli
sys.argv[0] = 'mutmut'
cli()
"
if [[ "${1:-}" == "--smoke" ]]; then
    "$PY" -m mutmut --version
    "$PY" - <<'PY'
import sys
import tomllib
from pathlib import Path

cfg = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))["tool"]["mutmut"]
paths = [*cfg["only_mutate"], *cfg["pytest_add_cli_args_test_selection"]]
print(f"{'[tool.mutmut] path':<36} exists")
for p in paths:
    print(f"{p:<36} {Path(p).is_file()}")
sys.path.insert(0, ".")
from bot.core import kernels  # noqa: E402 - after the env is set (PROGDISTILL_PURE_KERNELS=1)

plain = [f"bot/core/kernels/{k}.py" for k, compiled in kernels.compiled().items() if not compiled]
mutated = [p for p in cfg["only_mutate"] if p.startswith("bot/core/kernels/")]
print(f"kernels run as plain Python: {', '.join(mutated) if set(mutated) <= set(plain) else 'NO'}")
sys.exit(0 if all(Path(p).is_file() for p in paths) and set(mutated) <= set(plain) else 1)
PY
    # the launcher's patch reaches the kernels' math: mutants in every kernel's `step`, as mutmut makes them
    "$PY" -c "$cython_ok
import collections, sys, tomllib
from pathlib import Path
cfg = tomllib.loads(Path('pyproject.toml').read_text(encoding='utf-8'))['tool']['mutmut']
bad = []
for path in cfg['only_mutate']:
    _, mutations, _, _ = file_mutation.create_mutations(path, Path(path).read_text(encoding='utf-8'))
    funcs = [mu.contained_by_top_level_function for mu in mutations]
    per = collections.Counter(f.name.value for f in funcs if f is not None)
    print(f'{path:<36} {sum(per.values()):5} mutants in {len(per)} functions')
    if path.startswith('bot/core/kernels/') and not per['step']:
        bad.append(path)
print('kernel steps mutated:', 'NO: ' + ', '.join(bad) if bad else 'yes')
sys.exit(1 if bad else 0)
"
    echo "the summary, on two sample result lines:"
    printf '%s\n' "bot.core.stream.x_push__mutmut_1: killed" "bot.core.stream.x_push__mutmut_2: survived" \
        | "$PY" -c "$summarise"
    exit 0
fi
if [[ "${1:-}" == "--again" ]]; then
    # re-run named mutants (default: every one the last run did not kill) on the last run's ./mutants/,
    # with the tests as they are now (mutmut copies tests/ again and collects stats for new tests)
    shift
    if [[ $# -eq 0 ]]; then
        # shellcheck disable=SC2046 # one mutant name per word
        set -- $("$PY" -m mutmut results 2>/dev/null | awk -F': ' '$2 != "killed" && $2 != "timeout" {print $1}')
    fi
    if [[ $# -gt 0 ]]; then
        log=$(mktemp)
        if ! "$PY" -c "$launch" run --max-children "${MAX_CHILDREN:-2}" "$@" >"$log" 2>&1; then
            tail -c 2000 "$log" >&2
            echo "mutmut run failed (log: $log)" >&2
            exit 1
        fi
        rm -f "$log"
    fi
elif [[ "${1:-}" != "--report" ]]; then
    rm -rf mutants
    log=$(mktemp)
    if ! "$PY" -c "$launch" run --max-children "${MAX_CHILDREN:-2}" "$@" >"$log" 2>&1; then
        tail -c 2000 "$log" >&2
        echo "mutmut run failed (log: $log)" >&2
        exit 1
    fi
    rm -f "$log"
fi
"$PY" -m mutmut results --all true 2>/dev/null | "$PY" -c "$summarise"
