#!/usr/bin/env bash
# Installs what the Linux-host end-to-end harness (ferrite-e2e) and the file backend's reflink
# test (an XFS image on a loop device) need on a Debian/Ubuntu machine.
# Idempotent: runs `apt-get update` and `apt-get install` only when something is missing.
set -euo pipefail

# "check|package": a check is a command name, or an absolute path (a glob is allowed).
needs=(
  "qemu-system-x86_64|qemu-system-x86"
  "/usr/share/qemu/qboot.rom|qemu-system-data"
  "/boot/vmlinuz-*-amd64|linux-image-amd64"
  "modprobe|kmod"
  "/bin/busybox|busybox-static"
  "xz|xz-utils"
  "socat|socat"
  "nvme|nvme-cli"
  "fio|fio"
  "mkfs.ext4|e2fsprogs"
  "mkfs.xfs|xfsprogs"
  "sha256sum|coreutils"
  "mount|mount"
  "dmesg|util-linux"
  "bash|bash"
)

have() {
  local check=$1
  if [[ $check == /* ]]; then
    compgen -G "$check" >/dev/null
  else
    command -v "$check" >/dev/null 2>&1 || [[ -x /usr/sbin/$check || -x /sbin/$check ]]
  fi
}

missing=()
for pair in "${needs[@]}"; do
  check=${pair%%|*}
  pkg=${pair#*|}
  if ! have "$check"; then
    missing+=("$pkg")
  fi
done

# The static busybox goes into the guest's initramfs; a dynamic one would not run there.
if [[ -x /bin/busybox ]] && ! (LC_ALL=C file -L /bin/busybox 2>/dev/null || true) | grep -q 'statically linked'; then
  if ! ldd /bin/busybox 2>&1 | grep -q 'not a dynamic executable'; then
    missing+=("busybox-static")
  fi
fi

# The Ansible collection's lint and playbook test: ansible-core and ansible-lint from PyPI in
# venvs under ~/.cache/ferrite (reused while tests/ansible/requirements.txt is unchanged).
bash "$(dirname "$0")/ansible/venv.sh"

if ((${#missing[@]} == 0)); then
  echo "install-deps: everything is already installed"
  exit 0
fi

# Deduplicate while keeping order.
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
