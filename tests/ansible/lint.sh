#!/usr/bin/env bash
# Lints the ferrite.storage collection (ansible/): ansible-lint with the production profile and
# ansible-test sanity, both from the venvs tests/ansible/venv.sh makes. Exit status 0 when clean.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${FERRITE_ANSIBLE_CACHE:-$HOME/.cache/ferrite}"
bash "$root/tests/ansible/venv.sh"

# Both tools want the collection at ansible_collections/<namespace>/<name>: they run on a copy,
# so their caches and tests/output never land in the work tree.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ansible_collections/ferrite"
cp -r "$root/ansible" "$work/ansible_collections/ferrite/storage"
rm -rf "$work/ansible_collections/ferrite/storage/.ansible" "$work/ansible_collections/ferrite/storage/tests/output"

echo "== ansible-lint (production profile)"
(cd "$work/ansible_collections/ferrite/storage" \
  && PATH="$cache/ansible-venv/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$work" ansible-lint --nocolor --offline)
rm -rf "$work/ansible_collections/ferrite/storage/.ansible"

echo "== ansible-test sanity"
# ansible-test bootstraps pip in its tool venvs with a script from its own file host, which is
# not reachable from here: put our stand-in (ensurepip, then pip from PyPI) where it looks first.
pipver="$("$cache/sanity-venv/bin/python" - <<'PY'
import re, ansible_test, os
src = open(os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py")).read()
print(re.search(r"pip='([0-9.]+)'", src).group(1))
PY
)"
mkdir -p "$HOME/.ansible/test/cache"
cp "$root/tests/ansible/get_pip_standin.py" "$HOME/.ansible/test/cache/get_pip_${pipver//./_}.py"
cd "$work/ansible_collections/ferrite/storage"
set +e
PATH="$cache/sanity-venv/bin:$PATH" ansible-test sanity --local --python 3.11 --requirements --color no 2>&1 \
  | grep -v -E '^(  |Collecting|Downloading|Processing|Looking in|Using cached|Requirement already|Successfully|Installing collected|Attempting uninstall|Found existing)'
rc=${PIPESTATUS[0]}
set -e
if ((rc != 0)); then
  echo "ansible-test sanity failed (exit status $rc)"
  exit 1
fi
echo "ansible-lint and ansible-test sanity: clean"
