#!/usr/bin/env bash
# Starts a throwaway OpenLDAP directory for the tests on 127.0.0.1:3890,
# installing Debian's slapd and ldap-utils first when they are missing.
#
#   scripts/slapd.sh [work-dir]     (default: .work/slapd in the repository)
#
# The directory has its own config and database under the work dir and never
# touches the system's default instance: suffix dc=example,dc=com, admin
# cn=admin,dc=example,dc=com with the password in LOBFLOWS_LDAP_ADMIN_PASSWORD
# (a fixed test value by default), schemas core, cosine, inetorgperson and
# nis, and the entries ou=people and ou=groups. Running it again while the
# server is up changes nothing.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mkdir -p "${1:-$repo/.work/slapd}" && cd "${1:-$repo/.work/slapd}" && pwd)
url=ldap://127.0.0.1:3890/
suffix=dc=example,dc=com
admin=cn=admin,$suffix
password=${LOBFLOWS_LDAP_ADMIN_PASSWORD:-lobflows-test-admin}
schemas=/etc/ldap/schema
export PATH=$PATH:/usr/sbin:/sbin

install_packages() {
  export DEBIAN_FRONTEND=noninteractive
  # No default database: our server brings its own config.
  echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
  local packages=(slapd ldap-utils)
  if ! apt-get install -y -q --no-install-recommends "${packages[@]}"; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${packages[@]}"
  fi
}

is_up() {
  ldapwhoami -x -H "$url" -D "$admin" -w "$password" -o nettimeout=2 >/dev/null 2>&1
}

write_config() {
  local hash
  hash=$(slappasswd -s "$password")
  mkdir -p "$work/data"
  cat >"$work/slapd.conf" <<CONF
include $schemas/core.schema
include $schemas/cosine.schema
include $schemas/inetorgperson.schema
include $schemas/nis.schema

pidfile $work/slapd.pid
argsfile $work/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb

database mdb
maxsize 104857600
suffix "$suffix"
rootdn "$admin"
rootpw $hash
directory $work/data
index objectClass eq
index uid,cn,mail eq,sub
index member eq

access to attrs=userPassword
  by self write
  by anonymous auth
  by * none
access to *
  by users read
  by * none
CONF
  slaptest -Q -u -f "$work/slapd.conf"
}

add_entry() {
  local status=0
  ldapadd -x -H "$url" -D "$admin" -w "$password" >/dev/null \
    2>"$work/ldapadd.err" || status=$?
  # 68: the entry exists already (an earlier start seeded it).
  if [ "$status" -ne 0 ] && [ "$status" -ne 68 ]; then
    echo "services: seeding the directory failed (ldapadd exit $status)" >&2
    cat "$work/ldapadd.err" >&2
    return 1
  fi
}

seed() {
  add_entry <<LDIF
dn: $suffix
objectClass: dcObject
objectClass: organization
dc: example
o: Example
LDIF
  for unit in people groups; do
    add_entry <<LDIF
dn: ou=$unit,$suffix
objectClass: organizationalUnit
ou: $unit
LDIF
  done
}

if ! command -v slapd >/dev/null || ! command -v ldapadd >/dev/null; then
  echo "services: slapd is not installed; installing it"
  install_packages
fi

# One start at a time: the test fixture and services.sh may race.
exec 9>"$work/.lock"
flock 9

if ! is_up; then
  echo "services: slapd is down; starting it"
  write_config
  # The daemon must not inherit (and so keep holding) the start lock.
  slapd -h "$url" -f "$work/slapd.conf" 9>&-
  for _ in $(seq 1 30); do
    is_up && break
    sleep 1
  done
fi
if ! is_up; then
  echo "services: slapd did not come up" >&2
  exit 1
fi
seed
echo "services: slapd is up"
