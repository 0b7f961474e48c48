#!/usr/bin/env bash
# Checks that the servers the test suite talks to are up, and starts a stopped one.
set -euo pipefail

start_postgresql() {
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
}

wait_for() {
  local name=$1 check=$2
  for _ in $(seq 1 30); do
    if eval "$check" >/dev/null 2>&1; then
      echo "services: $name is up"
      return 0
    fi
    sleep 1
  done
  echo "services: $name did not come up" >&2
  return 1
}

if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  echo "services: PostgreSQL is down; starting it"
  start_postgresql
fi
wait_for PostgreSQL "pg_isready -h 127.0.0.1 -p 5432"

if ! mysqladmin -h 127.0.0.1 -P 3306 -uroot ping >/dev/null 2>&1; then
  echo "services: MariaDB is down; starting it"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
fi
wait_for MariaDB "mysqladmin -h 127.0.0.1 -P 3306 -uroot ping"

if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  echo "services: RabbitMQ is down; starting it"
  rabbitmq-server -detached
fi
wait_for RabbitMQ "rabbitmq-diagnostics -q check_port_connectivity"
