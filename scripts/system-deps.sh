#!/usr/bin/env bash
# Installs the Debian packages calmcue needs, only those missing. Usage: system-deps.sh run|test
set -euo pipefail
want=(mosquitto)
# valgrind: the headset timing model counts the unix port's instructions (tests/test_fw_timing.py)
# rabbitmq-server: the clustered broker the cluster tests start (tests/test_cluster_faults.py)
if [ "${1:-run}" = test ]; then want+=(postgresql chromium valgrind rabbitmq-server); fi

have() {
  case "$1" in
    mosquitto) command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] ;;
    postgresql) compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null ;;
    chromium) command -v chromium >/dev/null ;;
    valgrind) command -v valgrind >/dev/null ;;
    rabbitmq-server) [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] ;;
    *) dpkg -s "$1" >/dev/null 2>&1 ;;
  esac
}

missing=()
for p in "${want[@]}"; do have "$p" || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "calmcue needs these system packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a system-wide mosquitto on 1883 when it is installed; calmcue runs its own
# broker on its own port, so that one is left as the distribution set it up.
