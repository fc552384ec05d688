#!/bin/sh
# Runs as root in sbx's golden VM (over SSH, once per `sbx setup --vm`): installs Docker Engine
# and lets the login user reach its socket. sbx builds its images against that engine next.
set -eu
user=${1:?the login user}
if ! command -v dockerd >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io iptables ipset ca-certificates >/dev/null
fi
getent group docker >/dev/null || groupadd docker
usermod -aG docker "$user"
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl enable --now docker >/dev/null 2>&1 || systemctl restart docker
fi
for _ in $(seq 60); do [ -S /var/run/docker.sock ] && break; sleep 1; done
[ -S /var/run/docker.sock ] || { echo "Docker did not start" >&2; exit 1; }
echo "docker ready"
