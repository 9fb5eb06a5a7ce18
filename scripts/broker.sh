#!/usr/bin/env bash
# `make broker`: RabbitMQ for Phase 2. Installs it from Debian's packages if missing, starts it
# (systemd's unit, or `rabbitmq-server -detached` without systemd), listening on 127.0.0.1 only,
# with a consumer timeout above the longest task; makes a vhost and a user with a random
# password (never guest), and writes IAAS_BROKER_URL to configs/iaas.env (mode 0600).
# `scripts/broker.sh start` only installs and starts it (what the test tier needs).
set -euo pipefail
cd "$(dirname "$0")/.."

VHOST=${IAAS_BROKER_VHOST:-iaas}
USERNAME=${IAAS_BROKER_USER:-iaas}
ENV_FILE=configs/iaas.env
CONF=/etc/rabbitmq/conf.d/60-iaas.conf
ENV_CONF=/etc/rabbitmq/rabbitmq-env.conf
# Above the longest task (a shutdown may wait an hour, plus its margin).
CONSUMER_TIMEOUT_MS=$((2 * 3600 * 1000))

say() { printf 'broker: %s\n' "$*"; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

install() {
    dpkg-query -W -f='${Status}' rabbitmq-server 2>/dev/null | grep -q 'install ok installed' \
        && return
    say "installing rabbitmq-server"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
}

configure() {
    as_root mkdir -p /etc/rabbitmq/conf.d
    printf 'listeners.tcp.default = 127.0.0.1:5672\nconsumer_timeout = %s\n' \
        "$CONSUMER_TIMEOUT_MS" | as_root tee "$CONF" >/dev/null
    # epmd and the Erlang distribution listen on loopback too; other lines of the file stay.
    as_root touch "$ENV_CONF"
    local key value
    while IFS='=' read -r key value; do
        as_root sed -i "/^${key}=/d" "$ENV_CONF"
        printf '%s=%s\n' "$key" "$value" | as_root tee -a "$ENV_CONF" >/dev/null
    done <<'EOF'
NODE_IP_ADDRESS=127.0.0.1
ERL_EPMD_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
}

running() { as_root rabbitmqctl -q status >/dev/null 2>&1; }

start() {
    running && return
    if [[ -d /run/systemd/system ]]; then
        say "starting rabbitmq-server with systemd"
        as_root systemctl start rabbitmq-server
    else
        say "starting rabbitmq-server -detached"
        as_root env ERL_EPMD_ADDRESS=127.0.0.1 rabbitmq-server -detached
    fi
    # `-detached` returns before the node registers with epmd, and await_startup fails at once
    # on a node epmd does not know yet: retry it until the deadline.
    local deadline=$((SECONDS + 120))
    until as_root rabbitmqctl -q await_startup --timeout 120 >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            say "rabbitmq-server did not start within 120 s (see /var/log/rabbitmq)"
            exit 1
        fi
        sleep 1
    done
}

credentials() {
    local url password
    url=$(grep -s '^IAAS_BROKER_URL=' "$ENV_FILE" | cut -d= -f2- || true)
    as_root rabbitmqctl -q add_vhost "$VHOST" 2>/dev/null || true
    if [[ -n $url ]] && as_root rabbitmqctl -q list_users | grep -q "^$USERNAME\b"; then
        say "keeping the broker user in $ENV_FILE"
        return
    fi
    password=$(openssl rand -hex 24)
    # The password goes on stdin, never on a command line (ps, sudo's log).
    printf '%s' "$password" | as_root rabbitmqctl -q add_user "$USERNAME" >/dev/null 2>&1 \
        || printf '%s' "$password" | as_root rabbitmqctl -q change_password "$USERNAME" >/dev/null
    as_root rabbitmqctl -q set_permissions -p "$VHOST" "$USERNAME" '.*' '.*' '.*'
    umask 077
    touch "$ENV_FILE"
    chmod 600 "$ENV_FILE"
    grep -v '^IAAS_BROKER_URL=' "$ENV_FILE" > "$ENV_FILE.new" || true
    echo "IAAS_BROKER_URL=amqp://$USERNAME:$password@127.0.0.1:5672/$VHOST" >> "$ENV_FILE.new"
    mv "$ENV_FILE.new" "$ENV_FILE"
    say "IAAS_BROKER_URL written to $ENV_FILE (mode 0600)"
}

install
configure
start
[[ ${1:-} == start ]] || credentials
say "ready"
