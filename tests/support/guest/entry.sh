#!/bin/sh
# Lima's guest, as far as sbx can tell: the login user with Lima's key, sshd, a Docker Engine.
set -e
mkdir -p /home/lima/.ssh /run/sshd
cp /sbx-authorized-keys /home/lima/.ssh/authorized_keys
chown -R lima:lima /home/lima/.ssh
chmod 700 /home/lima/.ssh
chmod 600 /home/lima/.ssh/authorized_keys
ssh-keygen -A >/dev/null
DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1 dockerd --storage-driver=vfs >/var/log/dockerd.log 2>&1 &
exec /usr/sbin/sshd -D -e
