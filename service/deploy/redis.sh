#!/bin/sh
# Redis for docker-compose.yml, with its password from a compose secret (never in the image,
# the compose file or the process arguments):
#   redis.sh start [ARGS]  write `requirepass` into a private file in /tmp and exec redis-server
#                          with service/deploy/redis.conf, that file, then ARGS (overrides)
#   redis.sh health [ARGS]  PING with the password (the compose healthcheck; ARGS go to redis-cli)
# The password file (REDIS_PASSWORD_FILE, default /run/secrets/redis_password) holds one line;
# use letters, digits, '-' or '_' (e.g. `make secrets` writes 64 hex digits).
set -eu
PASSWORD_FILE="${REDIS_PASSWORD_FILE:-/run/secrets/redis_password}"
CONF="${REDIS_CONF:-/usr/local/etc/redis/redis.conf}"
password=$(tr -d '\r\n' <"$PASSWORD_FILE")
[ -n "$password" ] || { echo "redis.sh: $PASSWORD_FILE is empty" >&2; exit 2; }
mode="${1:-start}"
[ $# -gt 0 ] && shift
case "$mode" in
start)
    umask 077
    auth=$(mktemp "${TMPDIR:-/tmp}/redis-auth.XXXXXX")
    printf 'requirepass %s\n' "$password" >"$auth"
    exec redis-server "$CONF" --include "$auth" "$@"
    ;;
health)
    REDISCLI_AUTH="$password" redis-cli "$@" ping | grep -q PONG
    ;;
*)
    echo "usage: redis.sh start|health" >&2
    exit 2
    ;;
esac
