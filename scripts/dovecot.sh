#!/usr/bin/env bash
# Starts a throwaway Dovecot IMAP server for the tests on 127.0.0.1:1143,
# installing Debian's dovecot-imapd first when it is missing.
#
#   scripts/dovecot.sh [work-dir]     (default: .work/dovecot in the repository)
#
# The server has its own config, runtime folder (base_dir) and Maildir
# storage under the work dir and never reads or touches the system's
# /etc/dovecot: plain IMAP only (ssl = no), loopback only, one user
# flows@example.com whose password is LOBFLOWS_IMAP_PASSWORD (a fixed test
# value by default). Mail is stored as the unprivileged user nobody, because
# Dovecot refuses to access mail as root. Running it again while the server
# is up changes nothing.
#
# Note: on a machine with systemd, installing the package also enables
# Debian's own dovecot service (ports 143/993); this script neither uses nor
# stops it.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mkdir -p "${1:-$repo/.work/dovecot}" && cd "${1:-$repo/.work/dovecot}" && pwd)
host=127.0.0.1
port=1143
user=flows@example.com
password=${LOBFLOWS_IMAP_PASSWORD:-lobflows-test-mail}
export PATH=$PATH:/usr/sbin:/sbin

install_packages() {
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends dovecot-imapd; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends dovecot-imapd
  fi
}

is_up() {
  # An IMAP server greets first: "* OK ...".
  timeout 3 bash -c "exec 3<>/dev/tcp/$host/$port && head -c 4 <&3" 2>/dev/null |
    grep -q '^\* OK'
}

write_config() {
  mkdir -p "$work/run" "$work/state" "$work/mail"
  chown nobody:nogroup "$work/mail"
  # A test password in a throwaway server: stored as {PLAIN} on purpose.
  printf '%s:{PLAIN}%s::::::\n' "$user" "$password" >"$work/users"
  # Read by the auth process, which runs as Debian's dovecot user.
  chgrp dovecot "$work/users"
  chmod 640 "$work/users"
  cat >"$work/dovecot.conf" <<CONF
instance_name = lobflows-test
base_dir = $work/run
state_dir = $work/state
log_path = $work/dovecot.log
protocols = imap
listen = $host
ssl = no
# Loopback only, so plaintext logins carry no risk here.
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:$work/mail/%d/%n
mail_uid = nobody
mail_gid = nogroup

namespace inbox {
  inbox = yes
}

passdb {
  driver = passwd-file
  args = username_format=%u $work/users
}
userdb {
  driver = static
  args = home=$work/mail/%d/%n
}

service imap-login {
  inet_listener imap {
    address = $host
    port = $port
  }
  inet_listener imaps {
    port = 0
  }
}
CONF
}

if ! command -v dovecot >/dev/null || [ ! -x /usr/lib/dovecot/imap ]; then
  echo "services: dovecot is not installed; installing it"
  install_packages
fi

# One start at a time: the test fixture and services.sh may race.
exec 9>"$work/.lock"
flock 9

if ! is_up; then
  echo "services: dovecot is down; starting it"
  write_config
  # The daemon must not inherit (and so keep holding) the start lock.
  dovecot -c "$work/dovecot.conf" 9>&-
  for _ in $(seq 1 30); do
    is_up && break
    sleep 1
  done
fi
if ! is_up; then
  echo "services: dovecot did not come up; see $work/dovecot.log" >&2
  exit 1
fi
echo "services: dovecot is up"
