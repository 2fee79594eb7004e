#!/usr/bin/env bash
# install.sh — install lanchat as a systemd service on Linux.
#
#   sudo ./install.sh [BINARY]            install or upgrade
#   sudo ./install.sh --uninstall         remove service and binary, keep data and config
#   sudo ./install.sh --uninstall --purge also remove data, config and the lanchat user
#   ./install.sh --dry-run [...]          print what would be done, change nothing
#
# Run ./install.sh --help for details.
set -euo pipefail

readonly BIN_PATH=/usr/local/bin/lanchat
readonly DATA_DIR=/var/lib/lanchat
readonly CONF_DIR=/etc/lanchat
readonly CONF_FILE=/etc/lanchat/config.toml
readonly UNIT_NAME=lanchat.service
readonly UNIT_FILE=/etc/systemd/system/lanchat.service
readonly SERVICE_USER=lanchat
readonly DEFAULT_PORT=8080

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR

DRY_RUN=0
MODE=install
PURGE=0
BINARY=""
CHANGED=0   # set to 1 when the binary, unit or config was (or would be) written

usage() {
    cat <<'EOF'
Usage: install.sh [OPTIONS] [BINARY]

Install lanchat as a systemd service.

  BINARY            the lanchat binary to install (e.g. ./lanchat). Default: the first
                    that exists of ./target/release/lanchat and
                    ./target/x86_64-unknown-linux-gnu/release/lanchat (relative to the
                    current directory, then to this script).

Options:
  -n, --dry-run     print every action (commands prefixed with "+ ") without doing
                    anything; does not need root
      --uninstall   stop, disable and remove the service and /usr/local/bin/lanchat;
                    keeps /var/lib/lanchat (all data) and /etc/lanchat (configuration)
      --purge       with --uninstall: also delete /var/lib/lanchat, /etc/lanchat and
                    the lanchat system user. This deletes every message and attachment.
  -h, --help        show this help

What an install does (running it again is safe; it only changes what differs and
restarts the service when the binary or unit changed):
  - copies BINARY to /usr/local/bin/lanchat
  - creates the system user "lanchat" (no login shell) and /var/lib/lanchat (mode 0700)
  - writes /etc/lanchat/config.toml if it does not exist (from config.example.toml
    next to this script when present)
  - writes /etc/systemd/system/lanchat.service, enables and (re)starts it
  - prints the addresses people on the LAN can open
EOF
}

die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 1
}

warn() {
    printf 'install.sh: warning: %s\n' "$*" >&2
}

info() {
    printf '%s\n' "$*"
}

# run CMD ARGS... — run a command, or print it (shell-quoted) in dry-run mode.
run() {
    if ((DRY_RUN)); then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# write_file PATH MODE OWNER GROUP — write stdin to PATH atomically (temp file + rename).
write_file() {
    local path=$1 mode=$2 owner=$3 group=$4 tmp
    if ((DRY_RUN)); then
        printf '+ write %s (mode %s, owner %s:%s) with content:\n' "$path" "$mode" "$owner" "$group"
        sed 's/^/    | /'
        return 0
    fi
    tmp=$(mktemp "${path}.tmp.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    chown "$owner:$group" "$tmp"
    mv -f -- "$tmp" "$path"
}

have() {
    command -v "$1" >/dev/null 2>&1
}

# systemd_running — true when systemd is the running init (not a chroot or plain container).
systemd_running() {
    [[ -d /run/systemd/system ]]
}

parse_args() {
    while (($#)); do
        case $1 in
        -n | --dry-run) DRY_RUN=1 ;;
        --uninstall) MODE=uninstall ;;
        --purge) PURGE=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        --)
            shift
            break
            ;;
        -*) die "unknown option: $1 (see --help)" ;;
        *)
            [[ -z $BINARY ]] || die "more than one BINARY given: '$BINARY' and '$1'"
            BINARY=$1
            ;;
        esac
        shift
    done
    if (($#)); then
        [[ -z $BINARY && $# -eq 1 ]] || die "more than one BINARY given"
        BINARY=$1
    fi
    if ((PURGE)) && [[ $MODE != uninstall ]]; then
        die "--purge only makes sense with --uninstall"
    fi
    if [[ $MODE == uninstall && -n $BINARY ]]; then
        die "--uninstall takes no BINARY argument"
    fi
}

require_root() {
    ((DRY_RUN)) && return 0
    if [[ $(id -u) -ne 0 ]]; then
        die "this must run as root (try: sudo $0${*:+ $*}), or add --dry-run to only see what it would do"
    fi
}

# find_binary — set BINARY to the binary to install.
find_binary() {
    local candidates=() c dir
    if [[ -n $BINARY ]]; then
        candidates=("$BINARY")
    else
        for dir in "$PWD" "$SCRIPT_DIR"; do
            candidates+=(
                "$dir/target/release/lanchat"
                "$dir/target/x86_64-unknown-linux-gnu/release/lanchat"
            )
        done
    fi
    for c in "${candidates[@]}"; do
        if [[ -f $c && -x $c ]]; then
            BINARY=$(cd -- "$(dirname -- "$c")" && pwd)/$(basename -- "$c")
            return 0
        fi
    done
    if [[ -n $BINARY ]]; then
        [[ -e $BINARY ]] || die "binary not found: $BINARY"
        die "not an executable file: $BINARY"
    fi
    if ((DRY_RUN)); then
        BINARY=./target/release/lanchat
        warn "no lanchat binary found (build one with: cargo build --release); continuing because of --dry-run"
        return 0
    fi
    # A file that merely happens to be called ./lanchat is not installed as root
    # unless it is named on the command line.
    die "no lanchat binary found; build it with 'cargo build --release' or pass its path as an argument (e.g. ./lanchat)"
}

nologin_shell() {
    local s
    for s in /usr/sbin/nologin /sbin/nologin /usr/bin/nologin; do
        [[ -x $s ]] && {
            printf '%s\n' "$s"
            return 0
        }
    done
    printf '/bin/false\n'
}

# read_listen FILE — set LISTEN_HOST and LISTEN_PORT from the [server] section of FILE
# (`listen = "ADDR:PORT"`, or `port = N`). Defaults: any address, port 8080.
LISTEN_HOST=""
LISTEN_PORT=$DEFAULT_PORT
read_listen() {
    local file=$1 kv key val
    [[ -n $file && -r $file ]] || return 0
    kv=$(awk '
        { line = $0; sub(/^[[:space:]]+/, "", line) }
        line ~ /^#/ { next }
        line ~ /^\[/ { sec = line; sub(/#.*/, "", sec); gsub(/[][[:space:]]/, "", sec); next }
        (sec == "" || sec == "server") && line ~ /^(listen|listen_addr|bind|port)[[:space:]]*=/ {
            key = line; sub(/[[:space:]]*=.*/, "", key)
            val = substr(line, index(line, "=") + 1)
            sub(/#.*/, "", val); gsub(/^[[:space:]"]+|[[:space:]"]+$/, "", val)
            print key "=" val; exit
        }' "$file")
    [[ -n $kv ]] || return 0
    key=${kv%%=*}
    val=${kv#*=}
    if [[ $key == port ]]; then
        LISTEN_PORT=$val
    elif [[ $val == *:* ]]; then
        LISTEN_PORT=${val##*:}
        LISTEN_HOST=${val%:*}
        LISTEN_HOST=${LISTEN_HOST#[}
        LISTEN_HOST=${LISTEN_HOST%]}
    fi
    if ! [[ $LISTEN_PORT =~ ^[0-9]+$ ]]; then
        warn "could not read the port from $file; assuming $DEFAULT_PORT"
        LISTEN_PORT=$DEFAULT_PORT
    fi
}

# lan_ipv4s — print each non-loopback IPv4 address of this machine, one a line.
lan_ipv4s() {
    local out=""
    if have hostname; then
        out=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+(\.[0-9]+){3}$' || true)
    fi
    if [[ -z $out ]] && have ip; then
        out=$(ip -o -4 addr show 2>/dev/null | awk '{ split($4, a, "/"); print a[1] }' || true)
    fi
    printf '%s\n' "$out" | grep -v -E '^(127\.|$)' || true
}

unit_content() {
    local port=$1 caps
    if ((port < 1024)); then
        caps="# Port ${port} is below 1024: allow binding it without running as root.
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE"
    else
        caps="CapabilityBoundingSet=
# To listen on a port below 1024 (e.g. 80), replace the line above with these two:
#AmbientCapabilities=CAP_NET_BIND_SERVICE
#CapabilityBoundingSet=CAP_NET_BIND_SERVICE"
    fi
    cat <<EOF
# Written by lanchat's install.sh. Re-running install.sh overwrites this file;
# put local changes in a drop-in instead: systemctl edit lanchat
[Unit]
Description=lanchat LAN messenger
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=${SERVICE_USER}
Group=${SERVICE_USER}
ExecStart=${BIN_PATH} --config ${CONF_FILE} --data-dir ${DATA_DIR}
Restart=on-failure
RestartSec=2s
# On SIGTERM lanchat finishes in-flight requests and flushes the database.
TimeoutStopSec=30s
UMask=0077
# One file descriptor per connection: room for thousands of WebSockets.
LimitNOFILE=65536
# Threads: a few per core, plus up to 512 for blocking work under load.
TasksMax=1024
# A ceiling for a runaway (about 12 KiB per open WebSocket and a few hundred MiB
# of caches are normal). Raise it for a very large office: systemctl edit lanchat
MemoryMax=2G

# Hardening
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=${DATA_DIR}
StateDirectory=lanchat
StateDirectoryMode=0700
PrivateTmp=yes
ProtectHome=yes
ProtectProc=invisible
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
${caps}

[Install]
WantedBy=multi-user.target
EOF
}

minimal_config() {
    cat <<EOF
# lanchat configuration, written by install.sh.
# Every key is documented in config.example.toml in the lanchat sources.
# Precedence, highest first: command-line flags, LANCHAT_* environment, this file, defaults.
# The systemd unit passes --data-dir ${DATA_DIR}, which overrides data_dir below.

[server]
data_dir = "${DATA_DIR}"
EOF
}

# same_content FILE — true if FILE exists and equals stdin.
same_content() {
    [[ -f $1 ]] || return 1
    cmp -s -- "$1" -
}

install_binary() {
    if [[ -f $BINARY && -f $BIN_PATH ]] && cmp -s -- "$BINARY" "$BIN_PATH"; then
        info "= $BIN_PATH is already this binary"
        return 0
    fi
    CHANGED=1
    # Copy next to the target, then rename: replacing a running binary in place fails.
    run install -m 0755 -o root -g root -- "$BINARY" "$BIN_PATH.new"
    run mv -f -- "$BIN_PATH.new" "$BIN_PATH"
}

create_user() {
    if getent passwd "$SERVICE_USER" >/dev/null 2>&1; then
        info "= system user $SERVICE_USER exists"
        return 0
    fi
    have useradd || ((DRY_RUN)) || die "useradd not found; create a system user '$SERVICE_USER' by hand and re-run"
    run useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home \
        --shell "$(nologin_shell)" --comment "lanchat LAN messenger" "$SERVICE_USER"
}

create_data_dir() {
    run install -d -m 0700 -o "$SERVICE_USER" -g "$SERVICE_USER" -- "$DATA_DIR"
    # Nothing below it is chowned here: the service user can write there, and a
    # recursive chown as root would follow a link it planted (to /etc/shadow, say).
    # Files left by an earlier install with another uid are given back by systemd
    # itself when the service starts (StateDirectory= in the unit does it safely).
}

write_config() {
    run install -d -m 0750 -o root -g "$SERVICE_USER" -- "$CONF_DIR"
    if [[ -e $CONF_FILE ]]; then
        info "= keeping existing $CONF_FILE"
        return 0
    fi
    CHANGED=1
    if [[ -f $SCRIPT_DIR/config.example.toml ]]; then
        write_file "$CONF_FILE" 0640 root "$SERVICE_USER" <"$SCRIPT_DIR/config.example.toml"
    else
        minimal_config | write_file "$CONF_FILE" 0640 root "$SERVICE_USER"
    fi
}

# effective_config — the config file the service will read (or its would-be source in a dry run).
effective_config() {
    if [[ -e $CONF_FILE ]]; then
        printf '%s\n' "$CONF_FILE"
    elif [[ -f $SCRIPT_DIR/config.example.toml ]]; then
        printf '%s\n' "$SCRIPT_DIR/config.example.toml"
    fi
}

write_unit() {
    local port=$1 unit
    unit=$(unit_content "$port")
    if printf '%s\n' "$unit" | same_content "$UNIT_FILE"; then
        info "= $UNIT_FILE is up to date"
        return 0
    fi
    CHANGED=1
    printf '%s\n' "$unit" | write_file "$UNIT_FILE" 0644 root root
    if systemd_running || ((DRY_RUN)); then
        run systemctl daemon-reload
    fi
}

STARTED=0
start_service() {
    run systemctl enable "$UNIT_NAME"
    if ! systemd_running && ((!DRY_RUN)); then
        warn "systemd is not running here (container or chroot?): the service is enabled but not started"
        return 0
    fi
    if ((CHANGED)); then
        run systemctl restart "$UNIT_NAME"
    else
        # Nothing changed: start it if it is stopped, leave it alone if it runs.
        run systemctl start "$UNIT_NAME"
    fi
    if ((!DRY_RUN)); then
        sleep 1
        if ! systemctl is-active --quiet "$UNIT_NAME"; then
            warn "$UNIT_NAME did not stay up; see: systemctl status lanchat; journalctl -u lanchat"
            return 0
        fi
    fi
    STARTED=1
}

print_urls() {
    local port=$1 host=$2 ips ip
    info ""
    if ((DRY_RUN)); then
        info "When installed, lanchat will be reachable at:"
    else
        info "lanchat is running. People on the LAN can open:"
    fi
    case $host in
    "" | 0.0.0.0 | "::" | "*")
        ips=$(lan_ipv4s)
        if [[ -z $ips ]]; then
            info "  http://<this machine's address>:${port}/   (no non-loopback IPv4 address found)"
        fi
        for ip in $ips; do
            info "  http://${ip}:${port}/"
        done
        ;;
    *:*) info "  http://[${host}]:${port}/" ;;
    *) info "  http://${host}:${port}/" ;;
    esac
    info ""
    info "First run: the one-time setup link for the first admin account is in the log:"
    info "  journalctl -u lanchat        (look for \"first-run setup\")"
    info "or create the admin on the command line:"
    info "  sudo -u ${SERVICE_USER} ${BIN_PATH} --config ${CONF_FILE} --data-dir ${DATA_DIR} --create-user NAME --admin"
    info "Configuration: ${CONF_FILE} (then: systemctl restart lanchat). Data: ${DATA_DIR}"
}

do_install() {
    find_binary
    have systemctl || ((DRY_RUN)) || die "systemctl not found: this installer needs systemd"
    ((DRY_RUN)) && info "Dry run: nothing is changed. Binary: $BINARY"

    install_binary
    create_user
    create_data_dir
    write_config

    read_listen "$(effective_config)"
    write_unit "$LISTEN_PORT"

    start_service
    if ((STARTED)); then
        print_urls "$LISTEN_PORT" "$LISTEN_HOST"
    fi
}

do_uninstall() {
    ((DRY_RUN)) && info "Dry run: nothing is changed."
    if [[ -f $UNIT_FILE ]] || { have systemctl && systemctl cat "$UNIT_NAME" >/dev/null 2>&1; }; then
        if systemd_running || ((DRY_RUN)); then
            run systemctl disable --now "$UNIT_NAME"
        else
            run systemctl disable "$UNIT_NAME"
        fi
    else
        info "= no $UNIT_NAME installed"
    fi
    if [[ -e $UNIT_FILE ]]; then
        run rm -f -- "$UNIT_FILE"
        if systemd_running || ((DRY_RUN)); then
            run systemctl daemon-reload
            run systemctl reset-failed "$UNIT_NAME"
        fi
    fi
    if [[ -e $BIN_PATH ]]; then
        run rm -f -- "$BIN_PATH"
    else
        info "= no $BIN_PATH"
    fi

    if ((!PURGE)); then
        info ""
        info "Keeping data in $DATA_DIR, configuration in $CONF_DIR and the system user $SERVICE_USER."
        info "To delete them too: $0 --uninstall --purge"
        return 0
    fi
    if [[ -e $DATA_DIR ]]; then
        ((DRY_RUN)) || warn "--purge: deleting $DATA_DIR (all messages and attachments)"
        run rm -rf -- "$DATA_DIR"
    fi
    if [[ -e $CONF_DIR ]]; then
        run rm -rf -- "$CONF_DIR"
    fi
    if getent passwd "$SERVICE_USER" >/dev/null 2>&1; then
        run userdel "$SERVICE_USER"
    fi
    # userdel removes the user's own group on most systems; remove it if it is left.
    if ((!DRY_RUN)) && getent group "$SERVICE_USER" >/dev/null 2>&1; then
        groupdel "$SERVICE_USER" || warn "could not remove group $SERVICE_USER"
    fi
    ((DRY_RUN)) || info "lanchat removed, including its data and configuration."
}

main() {
    parse_args "$@"
    require_root "$@"
    case $MODE in
    install) do_install ;;
    uninstall) do_uninstall ;;
    esac
}

main "$@"
