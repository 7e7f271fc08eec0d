#!/usr/bin/env bash
# Installs what `cargo nextest run --workspace` needs on a Debian/Ubuntu machine: the Linux-host
# end-to-end harness (ferrite-e2e: QEMU, the Debian kernel, nvme-cli, fio, ...), the file
# backend's reflink test (an XFS image on a loop device), and cargo-nextest itself.
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
  "gzip|gzip"
  "mount|mount"
  "dmesg|util-linux"
  "bash|bash"
  # ferrite-tape's catalog links the system SQLite (rusqlite without the bundled copy)
  "/usr/lib/*/libsqlite3.so|libsqlite3-dev"
  # `promtool check metrics` validates ferrited's Prometheus endpoint (tests: metrics)
  "promtool|prometheus"
  # NVMe/RDMA (issue 12): rdma-sys links libibverbs and librdmacm and runs bindgen (libclang)
  # at build time; the QEMU guest uses the rxe provider, `rdma` (iproute2) and rping from here
  "/usr/include/infiniband/verbs.h|libibverbs-dev"
  "/usr/include/rdma/rdma_cma.h|librdmacm-dev"
  "/usr/lib/*/libibverbs/librxe-*.so|ibverbs-providers"
  "/etc/rdma/modules/rdma.conf|rdma-core"
  "ibv_devices|ibverbs-utils"
  "rping|rdmacm-utils"
  "rdma|iproute2"
  # docs/bench/rdma.sh counts the target's CPU time per I/O with `perf stat` in the guest
  "perf|linux-perf"
  "/usr/lib/*/libclang*.so*|libclang-dev"
  "clang|clang"
  # the Ansible collection's checks run from Python venvs (tests/ansible/venv.sh)
  "/usr/lib/python3*/ensurepip/__init__.py|python3-venv"
)

have() {
  local check=$1
  if [[ $check == /* ]]; then
    compgen -G "$check" >/dev/null
  else
    command -v "$check" >/dev/null 2>&1 || [[ -x /usr/sbin/$check || -x /sbin/$check ]]
  fi
}

# The SPDK v25.09 baseline beside the checkout (issue 9's interoperability tests) brings its own
# script for the runtime libraries it links against.
spdk=${FERRITE_SPDK_BASELINE:-$(dirname "$0")/../../shared/baseline/spdk-v25.09}
if [[ -x $spdk/install.sh ]]; then
  sh "$spdk/install.sh"
fi

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

install_tools() {
  if ! cargo nextest --version >/dev/null 2>&1; then
    echo "install-deps: installing cargo-nextest"
    cargo install cargo-nextest --locked
  fi
  # The Ansible collection's lint and playbook test: ansible-core and ansible-lint from PyPI in
  # venvs under ~/.cache/ferrite (reused while tests/ansible/requirements.txt is unchanged).
  bash "$(dirname "$0")/ansible/venv.sh"
}

# The DH-HMAC-CHAP end-to-end test (tests/tests/vm_dhchap.rs) needs a host kernel with
# CONFIG_NVME_AUTH, which Debian's 6.1 lacks. The 6.12 kernel built for bookworm (backports
# suite) is staged beside /boot, not in it, so every other vm_* test keeps booting 6.1: its image
# goes to $AUTH_KERNEL_DIR, its modules to /lib/modules/<version> (the guest loads them over 9p).
AUTH_KERNEL_DIR=${FERRITE_E2E_AUTH_KERNEL_DIR:-/usr/local/lib/ferrite-e2e}
stage_auth_kernel() {
  if compgen -G "$AUTH_KERNEL_DIR/vmlinuz-6.12*" >/dev/null; then
    return 0
  fi
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" |
      $sudo tee /etc/apt/sources.list.d/ferrite-bookworm-backports.list >/dev/null
  fi
  $sudo apt-get update
  local pkg
  pkg=$(apt-cache depends linux-image-6.12-amd64 | awk '/Depends: linux-image-6\.12/ {print $2; exit}')
  if [[ -z $pkg ]]; then
    echo "install-deps: no linux-image-6.12 package found (bookworm-backports)" >&2
    return 1
  fi
  local ver=${pkg#linux-image-} tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download "$pkg")
  dpkg-deb -x "$tmp"/*.deb "$tmp/root"
  $sudo mkdir -p "$AUTH_KERNEL_DIR" /lib/modules
  $sudo rm -rf "/lib/modules/$ver"
  $sudo cp -a "$tmp/root/lib/modules/$ver" /lib/modules/
  $sudo depmod "$ver"
  $sudo cp "$tmp/root/boot/vmlinuz-$ver" "$AUTH_KERNEL_DIR/"
  rm -rf "$tmp"
  echo "install-deps: staged $pkg in $AUTH_KERNEL_DIR (for vm_dhchap)"
}

if ((${#missing[@]} == 0)); then
  stage_auth_kernel
  install_tools
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
stage_auth_kernel
install_tools
