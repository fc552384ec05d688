#!/bin/sh
# PID 1 of a stand-in guest: cloud-init's part (the login user with Lima's key, made at boot),
# sshd, and systemd's part (dockerd runs once the docker.io package is installed, and comes up
# slowly: it first loads the images a golden VM's disk would hold, `/limatest-images.tar`).
set -e
user=${LIMA_TEST_USER:-lima}
uid=${LIMA_TEST_UID:-1000}
if ! id "$user" >/dev/null 2>&1; then
  useradd -m -d "/home/$user.guest" -u "$uid" -s /bin/bash "$user"
  echo "$user ALL=(ALL) NOPASSWD:ALL" > /etc/sudoers.d/lima
fi
if [ "${LIMA_TEST_DOCKER_GROUP:-0}" = 1 ]; then
  getent group docker >/dev/null || groupadd docker
  usermod -aG docker "$user"
fi
home=$(getent passwd "$user" | cut -d: -f6)
mkdir -p "$home/.ssh" /run/sshd
cp /sbx-authorized-keys "$home/.ssh/authorized_keys"
chown -R "$user:$user" "$home/.ssh"
chmod 700 "$home/.ssh"
chmod 600 "$home/.ssh/authorized_keys"
ssh-keygen -A >/dev/null
# unattended-upgrades at first boot: apt's locks held for a while.
if [ -n "${LIMA_TEST_APT_BUSY:-}" ]; then
  python3 -c '
import fcntl, sys, time
held = []
for p in ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock"):
    f = open(p, "a"); fcntl.lockf(f, fcntl.LOCK_EX); held.append(f)
time.sleep(float(sys.argv[1]))' "$LIMA_TEST_APT_BUSY" &
fi
(
  while :; do
    # As systemd would: once the packages are installed and configured (the `docker` group made).
    if [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] && getent group docker >/dev/null \
      && ! pgrep -x 'dpkg|apt-get|apt' >/dev/null; then
      export DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1
      if [ -r /limatest-images.tar ]; then
        dockerd --storage-driver=vfs -H unix:///run/limatest-load.sock -p /run/limatest-load.pid \
          >/var/log/dockerd-load.log 2>&1 &
        for _ in $(seq 120); do docker -H unix:///run/limatest-load.sock info >/dev/null 2>&1 && break; sleep 0.5; done
        docker -H unix:///run/limatest-load.sock load -q -i /limatest-images.tar >/dev/null 2>&1 || true
        kill "$(cat /run/limatest-load.pid)"; wait
      fi
      # A Docker that answers well after boot (Lima's `start` does not wait for it by itself).
      sleep "${LIMA_TEST_DOCKER_DELAY:-0}"
      exec dockerd --storage-driver=vfs >/var/log/dockerd.log 2>&1
    fi
    sleep 1
  done
) &
exec /usr/sbin/sshd -D -e
