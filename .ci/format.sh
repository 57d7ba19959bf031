#!/usr/bin/env bash
# The one formatting commit: ruff's import order and formatter over the Python, clang-format over
# csrc/, and the switches that make CI check the format from then on. Purely mechanical: run it on
# a clean tree, after the branches in flight have merged, and commit the result alone:
#
#   bash .ci/format.sh && git commit -qam "Format the tree: bash .ci/format.sh"
#
#   bash .ci/format.sh --count   what it would change (files, lines), on a copy: the tree is
#                                untouched
#
# What it does, in order:
#   1. the switches: deletes the `# FORMAT-COMMIT` lines of pyproject.toml (E501 and I001, held
#      back until now, on) and sets FORMATTED=1 in .ci/run (the lint stage's format checks on);
#   2. `ruff check --select I --fix` (imports sorted: ruff format does not), `ruff format`,
#      `clang-format -i` on csrc/;
#   3. checks the result as CI's lint stage will: `ruff check`, `ruff format --check`,
#      `clang-format --dry-run -Werror`. A finding there (a comment or string still past 100
#      columns: the formatter does not break those) must be fixed by hand in a commit before this
#      one: `git checkout -- .`, fix, run again.
# The tools' versions are the ones .pre-commit-config.yaml pins, installed into .venv-lint.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

pins=$(grep -oE '"(ruff|clang-format)==[0-9.]+"' .pre-commit-config.yaml | tr -d '"' | sort -u)
if [ "$(echo "$pins" | wc -l)" != 2 ]; then
  echo "format.sh: one pin each of ruff and clang-format expected in .pre-commit-config.yaml," \
       "got: $pins" >&2
  exit 1
fi
[ -x .venv-lint/bin/python ] || python3 -m venv .venv-lint
# shellcheck disable=SC2086
.venv-lint/bin/pip install -q $pins
tools=$PWD/.venv-lint/bin

if [ "${1:-}" = "--count" ]; then
  # The same run on a copy of the tree as it is (committed or not; untracked files too, not the
  # ignored ones), counted by git.
  copy=$(mktemp -d)
  trap 'rm -rf "$copy"' EXIT
  git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - | tar -xf - -C "$copy"
  cd "$copy"
  git init -q && git add -A
  git -c user.name=count -c user.email=count@localhost commit -qm before
  ln -s "$OLDPWD/.venv-lint" .venv-lint
  bash .ci/format.sh --no-check > /dev/null || true
  echo "Python (ruff check --select I --fix, ruff format):"
  git diff --shortstat -- '*.py' '*.pyi'
  echo "C++ (clang-format -i on csrc/):"
  git diff --shortstat -- csrc
  echo "the switches (pyproject.toml, .ci/run):"
  git diff --shortstat -- pyproject.toml .ci/run
  echo "findings after formatting (fix these by hand before the formatting commit):"
  "$tools/ruff" check --statistics . || true
  exit 0
fi

if [ "${1:-}" != "--no-check" ] && [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "format.sh: the tree has changes: commit or stash them" \
       "(the formatting commit holds nothing else)" >&2
  exit 1
fi

# 1. The switches. pyproject.toml: the block from `# FORMAT-COMMIT:` to the line ending in
# `# FORMAT-COMMIT`.
if grep -q '# FORMAT-COMMIT$' pyproject.toml; then
  sed -i '/^# FORMAT-COMMIT:/,/# FORMAT-COMMIT$/d' pyproject.toml
fi
sed -i 's/^FORMATTED=0 /FORMATTED=1 /' .ci/run
grep -q '^FORMATTED=1 ' .ci/run || { echo "format.sh: no FORMATTED switch in .ci/run" >&2; exit 1; }

# 2. Format.
mapfile -t cxx < <(git ls-files 'csrc/*.h' 'csrc/*.cpp')
"$tools/ruff" check --select I --fix --quiet . || true   # other findings: reported in 3.
"$tools/ruff" format .
"$tools/clang-format" -i "${cxx[@]}"

# 3. Check, as CI's lint stage will from now on.
[ "${1:-}" = "--no-check" ] && exit 0
status=0
"$tools/ruff" check . || status=1
"$tools/ruff" format --check . || status=1
"$tools/clang-format" --dry-run -Werror "${cxx[@]}" || status=1
git diff --shortstat
if [ $status != 0 ]; then
  echo "format.sh: the findings above are not the formatters' to fix: fix them by hand in a" \
       "commit of their own (git checkout -- . undoes this run), then run .ci/format.sh again" >&2
  exit 1
fi
echo "format.sh: done; commit it alone: git commit -qam \"Format the tree: bash .ci/format.sh\""
