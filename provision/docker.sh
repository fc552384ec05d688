#!/bin/sh
# Runs as root in sbx's golden VM (over SSH, once per `sbx setup --vm`): installs Docker Engine
# and bindfs (sbx shows the host's folders to the agent under the agent's ids with it), and lets the
# login user reach Docker's socket (from its next login). sbx builds its images against that
# engine next. A fresh cloud image may be running apt itself (apt-daily, unattended-upgrades):
# every apt step waits for the lock and retries, within a bound.
set -eu
user=${1:?the login user}
export DEBIAN_FRONTEND=noninteractive
apt_() {
  tries=0
  until apt-get -o DPkg::Lock::Timeout=120 -qq "$@" >/tmp/sbx-apt.log 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge 30 ]; then
      cat /tmp/sbx-apt.log >&2
      echo "apt-get $* failed $tries times (is apt locked by another process?)" >&2
      exit 1
    fi
    sleep 5
  done
}
if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1 \
  || ! command -v bindfs >/dev/null 2>&1; then
  apt_ update
  # Debian 13 ships the docker CLI apart from the engine (`docker-cli`); Debian 12 inside it.
  cli=
  if apt-cache show docker-cli >/dev/null 2>&1; then cli=docker-cli; fi
  apt_ install -y --no-install-recommends docker.io $cli iptables ipset ca-certificates bindfs
fi
# sbx's bindfs layer runs as the login user, not root, and Docker (root) must see through it.
grep -qs '^user_allow_other' /etc/fuse.conf || echo user_allow_other >> /etc/fuse.conf
getent group docker >/dev/null || groupadd docker
usermod -aG docker "$user"
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl enable --now docker >/dev/null 2>&1 || systemctl restart docker
fi
for _ in $(seq 180); do docker info >/dev/null 2>&1 && break; sleep 1; done
docker info >/dev/null 2>&1 || { echo "Docker did not start" >&2; exit 1; }
echo "docker ready"
