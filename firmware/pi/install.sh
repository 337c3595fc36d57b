#!/usr/bin/env bash
# Install the calmcue edge agent on a Raspberry Pi (Raspberry Pi OS Bookworm, 64-bit) as a
# systemd service. Run as root from a checkout (or an unpacked release) of calmcue:
#
#   sudo firmware/pi/install.sh            # install / upgrade, then start when the config is valid
#   sudo firmware/pi/install.sh --dry-run  # print what would be done
#
# Layout: code in /opt/calmcue/venv; settings in /etc/calmcue: agent.json written by
# `calmcue device provision`, or agent.toml edited by hand (root:calmcue 0640, it holds the MQTT
# password); the event queue in /var/lib/calmcue (the only place the service may write); logs in
# the journal (journalctl -u calmcue-agent).
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PREFIX="${CALMCUE_PREFIX:-/opt/calmcue}"
ETC="${CALMCUE_ETC:-/etc/calmcue}"
UNIT_DIR="${CALMCUE_UNIT_DIR:-/etc/systemd/system}"
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1

run() {
    echo "+ $*"
    if [[ $DRY == 0 ]]; then "$@"; fi
}

if [[ $DRY == 0 && $EUID -ne 0 ]]; then
    echo "install.sh: run as root (sudo $0), or with --dry-run to see the steps" >&2
    exit 1
fi

# arecord (alsa-utils) for capture; lgpio is the pin library gpiozero uses on Pi 4/5 and Zero 2 W.
run apt-get update -q
run apt-get install -y --no-install-recommends python3 python3-venv alsa-utils python3-lgpio
if ! id calmcue >/dev/null 2>&1; then
    run useradd --system --home-dir /var/lib/calmcue --shell /usr/sbin/nologin calmcue
fi
run usermod -a -G audio,gpio calmcue
# --system-site-packages: use Raspberry Pi OS's lgpio build instead of compiling one.
run python3 -m venv --system-site-packages "$PREFIX/venv"
run "$PREFIX/venv/bin/pip" install --disable-pip-version-check -q "$SRC[pi]"
run install -m 0644 "$SRC/README.md" "$PREFIX/README.md"
run install -d -m 0750 -o root -g calmcue "$ETC"
# The example goes beside the config, never over it: `calmcue device provision` writes
# agent.json, or copy the example to agent.toml and edit it (exactly one of the two).
run install -m 0640 -o root -g calmcue "$SRC/firmware/pi/agent.example.toml" "$ETC/agent.toml.example"
run install -m 0644 "$SRC/firmware/pi/calmcue-agent.service" "$UNIT_DIR/calmcue-agent.service"
run systemctl daemon-reload
run systemctl enable calmcue-agent.service

if [[ $DRY == 1 ]]; then
    echo "+ $PREFIX/venv/bin/calmcue agent --config $ETC --check && systemctl restart calmcue-agent"
    exit 0
fi
if "$PREFIX/venv/bin/calmcue" agent --config "$ETC" --check; then
    systemctl restart calmcue-agent.service
    echo "calmcue-agent is running: journalctl -u calmcue-agent -f"
else
    echo "Fix the settings above in $ETC, then: systemctl restart calmcue-agent" >&2
    exit 2
fi
