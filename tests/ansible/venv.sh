#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environments of the ferrite.storage checks:
#   $FERRITE_ANSIBLE_CACHE/ansible-venv  ansible-core + ansible-lint (playbook test, ansible-lint)
#   $FERRITE_ANSIBLE_CACHE/sanity-venv   ansible-core alone (ansible-test sanity installs its own
#                                        pinned tools under ~/.ansible/test)
# FERRITE_ANSIBLE_CACHE defaults to ~/.cache/ferrite. A venv whose requirements did not change
# since it was made is reused without asking PyPI (a stamp file holds the requirements' hash).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${FERRITE_ANSIBLE_CACHE:-$HOME/.cache/ferrite}"
python="${PYTHON:-python3}"
mkdir -p "$cache"

make_venv() {
  local dir=$1; shift
  local want
  want="$(printf '%s\n' "$@" | sha256sum | cut -d' ' -f1)"
  if [[ -x $dir/bin/python && -f $dir/.ferrite-stamp && $(cat "$dir/.ferrite-stamp") == "$want" ]]; then
    return 0
  fi
  echo "ansible venv: installing $* into $dir"
  rm -rf "$dir"
  "$python" -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
  echo "$want" > "$dir/.ferrite-stamp"
}

mapfile -t reqs < <(grep -v '^\s*#' "$here/requirements.txt" | grep -v '^\s*$')
core=$(printf '%s\n' "${reqs[@]}" | grep '^ansible-core==')
make_venv "$cache/ansible-venv" "${reqs[@]}"
make_venv "$cache/sanity-venv" "$core"
echo "ansible venv: $cache/ansible-venv, $cache/sanity-venv ready"
