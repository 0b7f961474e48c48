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

if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  echo "services: Redis is down; starting it"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for Redis "redis-cli -h 127.0.0.1 ping | grep -q PONG"

if ! bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222' >/dev/null 2>&1; then
  echo "services: NATS is down; starting it"
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
fi
wait_for NATS "bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222'"

if ! bash -c 'exec 3<>/dev/tcp/127.0.0.1/1883' >/dev/null 2>&1; then
  echo "services: Mosquitto is down; starting it"
  mosquitto -d -c /etc/mosquitto/mosquitto.conf
fi
wait_for Mosquitto "bash -c 'exec 3<>/dev/tcp/127.0.0.1/1883'"

bash "$(dirname "$0")/sshd.sh"

bash "$(dirname "$0")/slapd.sh"
bash "$(dirname "$0")/dovecot.sh"
bash "$(dirname "$0")/chromium.sh"
