#!/usr/bin/env bash
# Starts a throwaway OpenSSH server for the SFTP tests: 127.0.0.1:2222, its
# own config and host key in a state folder of the machine (not of a
# checkout, so every clone finds the keys of the server already running),
# SFTP only, one user (lobflows-sftp) who logs in with a key generated
# there. Installs openssh-server when it is missing; running it again
# changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=2222
USER_NAME=lobflows-sftp
USER_HOME=/var/lib/lobflows-sftp
STATE="${LOBFLOWS_SSHD_STATE:-/var/lib/lobflows-test/sshd}"
STATE_ABS="$STATE"

is_up() {
  bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" >/dev/null 2>&1
}

if [ ! -x /usr/sbin/sshd ]; then
  echo "services: installing openssh-server"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    openssh-server >/dev/null
fi

mkdir -p "$STATE" /run/sshd
chmod 700 "$STATE"
[ -f "$STATE/host_ed25519_key" ] ||
  ssh-keygen -q -t ed25519 -N '' -C lobflows-test-host -f "$STATE/host_ed25519_key"
[ -f "$STATE/client_ed25519_key" ] ||
  ssh-keygen -q -t ed25519 -N '' -C lobflows-test-client -f "$STATE/client_ed25519_key"

if ! id "$USER_NAME" >/dev/null 2>&1; then
  useradd --system --home-dir "$USER_HOME" --create-home \
    --shell /usr/sbin/nologin "$USER_NAME"
fi
# A '*' password: no password login, yet not a locked account, which sshd
# would refuse even for key logins.
usermod -p '*' "$USER_NAME"
install -d -m 700 -o "$USER_NAME" -g "$USER_NAME" "$USER_HOME/.ssh"
install -m 600 -o "$USER_NAME" -g "$USER_NAME" \
  "$STATE/client_ed25519_key.pub" "$USER_HOME/.ssh/authorized_keys"

cat >"$STATE/sshd_config" <<CONFIG
Port $PORT
ListenAddress 127.0.0.1
HostKey $STATE_ABS/host_ed25519_key
PidFile $STATE_ABS/sshd.pid
AllowUsers $USER_NAME
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
AllowTcpForwarding no
X11Forwarding no
PermitTunnel no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
CONFIG

if ! is_up; then
  echo "services: sshd is down; starting it"
  /usr/sbin/sshd -f "$STATE_ABS/sshd_config" -E "$STATE_ABS/sshd.log"
fi
for _ in $(seq 1 30); do
  if is_up; then
    echo "services: sshd is up"
    exit 0
  fi
  sleep 1
done
echo "services: sshd did not come up" >&2
exit 1
