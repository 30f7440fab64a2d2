# shellcheck shell=sh
# Phase Boot: private mode over a SOCKS5 proxy (phase.proxy, phase.tor=1), sourced by
# /init (which defines mark, say, rescue and the variables used here). Both stages use
# it: the boot chain, and the node stage after kexec, to which phase-boot passes the
# proxy on the next kernel's command line (phase-boot --proxy/--tor).
#
#   proxy_check         validate phase.proxy / phase.tor; 1 when no proxy is asked for
#   proxy_no_dns        the guest's resolver asks no DNS server (the proxy resolves)
#   proxy_quiet_links   no IPv6 autoconfiguration chatter (unless the proxy is IPv6)
#   proxy_boot_arg      phase-boot's option that carries the proxy to the next stage
#   tor_launch          start the image's tor (data in tmpfs)
#   tor_wait_socks      wait (bounded) until tor listens on its SOCKS port
#   tor_wait_bootstrap  wait (phase.tor_timeout) for "Bootstrapped 100%", else say why
#   node_proxy          node stage: keep private mode over the same proxy
#   listening_report    the sockets listening on addresses other than loopback

PROCNET=${PHASE_PROCNET:-/proc/net}
PROCSYS=${PHASE_PROCSYS:-/proc/sys}
SYSETC=${PHASE_SYSETC:-/etc}  # the resolver's configuration (nsswitch.conf, resolv.conf)
TOR_PORT_WAIT=30  # seconds for tor to open its SOCKS port (it does so before bootstrapping)

proxy_check() {
    [ -z "$PROXY" ] && [ "$TOR" = 0 ] && return 1
    [ "$MODE" = private ] || rescue bad_proxy \
        "phase.proxy and phase.tor need phase.mode=private (internet and local modes discover over the DHT and mDNS, which cannot go through a proxy)"
    case "$TOR" in
        0) ;;
        1) [ -z "$PROXY" ] || rescue bad_proxy "give phase.tor=1 or phase.proxy=..., not both"
           PROXY="socks5h://$TOR_SOCKS" ;;
        *) rescue bad_proxy "phase.tor must be 0 or 1, not '$TOR'" ;;
    esac
    case "$PROXY" in
        socks5h://?*) ;;
        *) rescue bad_proxy "phase.proxy must be socks5h://IP:PORT (a SOCKS5 proxy that resolves host names), not '$PROXY'" ;;
    esac
    return 0
}

# The kernel sends IPv6 router and neighbour solicitations and MLD reports as soon as a
# link is up; over an IPv4 proxy nothing needs them, so IPv6 is off before any link is.
proxy_quiet_links() {
    case "$PROXY" in socks5h://\[*) return 0 ;; esac
    for c in all default; do
        echo 1 > "$PROCSYS/net/ipv6/conf/$c/disable_ipv6" 2>/dev/null
    done
    return 0
}

# Over a proxy the proxy resolves every host name (socks5h); nothing in the guest may
# ask a DNS server (a lookup would name the provider, or this machine, on the wire):
# the resolver reads /etc/hosts only, and DHCP's name servers are not written
# (udhcpc.script reads PHASE_NO_DNS). Before any link is up.
proxy_no_dns() {
    echo "hosts: files" > "$SYSETC/nsswitch.conf"
    : > "$SYSETC/resolv.conf"
    PHASE_NO_DNS=1
    export PHASE_NO_DNS
}

proxy_boot_arg() {
    if [ "$TOR" = 1 ]; then echo --tor; elif [ -n "$PROXY" ]; then echo "--proxy=$PROXY"; fi
}

tor_launch() {
    command -v tor >/dev/null 2>&1 || rescue tor_missing "phase.tor=1, but this image has no tor"
    mkdir -p "$RUN/tor"
    chmod 700 "$RUN/tor" 2>/dev/null
    tor --RunAsDaemon 0 --SocksPort "$TOR_SOCKS" --DataDirectory "$RUN/tor" --ClientOnly 1 \
        --AvoidDiskWrites 1 --Log "notice file $RUN/tor.log" >"$RUN/tor.out" 2>&1 &
    TOR_PID=$!
    mark "tor started pid=$TOR_PID socks=$TOR_SOCKS"
}

tor_last() { # tor's last log line, without its time stamp
    tail -n 1 "$RUN/tor.log" 2>/dev/null | sed 's/^[A-Z][a-z][a-z] [0-9]* [0-9:.]* //' | cut -c1-200
}

tor_alive() {
    [ -n "$TOR_PID" ] && kill -0 "$TOR_PID" 2>/dev/null && return 0
    TOR_PID=""
    return 1
}

# tcp_listening IPV4:PORT: is a TCP socket listening there? (/proc/net/tcp, state 0A)
tcp_listening() {
    hex=$(echo "${1%:*}" | awk -F. -v p="${1##*:}" '{ printf "%02X%02X%02X%02X:%04X", $4, $3, $2, $1, p }')
    awk -v a="$hex" '$2 == a && $4 == "0A" { f = 1 } END { exit !f }' "$PROCNET/tcp" 2>/dev/null
}

# 0: listening; 1: tor exited; 2: not listening after TOR_PORT_WAIT s
tor_wait_socks() {
    i=0
    while ! tcp_listening "$TOR_SOCKS"; do
        tor_alive || return 1
        [ "$i" -ge "$TOR_PORT_WAIT" ] && return 2
        sleep 1
        i=$((i + 1))
    done
    mark "tor socks open addr=$TOR_SOCKS"
    return 0
}

tor_wait_bootstrap() { # SECONDS
    i=0
    while [ "$i" -lt "$1" ]; do
        tor_alive || rescue tor_failed "tor exited before it bootstrapped: $(tor_last)"
        case "$(cat "$RUN/tor.log" 2>/dev/null)" in  # a few KB at notice level
            *"Bootstrapped 100%"*) mark "tor bootstrapped"; return 0 ;;
        esac
        sleep 1
        i=$((i + 1))
    done
    pct=$(sed -n 's/.*Bootstrapped \([0-9]*%\).*/\1/p' "$RUN/tor.log" 2>/dev/null | tail -n 1)
    mark "tor not-bootstrapped after=${1}s progress=${pct:-0%}"
    say "tor could not reach the Tor network in $1 s (bootstrapped ${pct:-0%}; tor says: $(tor_last))."
    say "check the network and the clock (tor needs it about right; $RUN/tor.log). Trying the chain through tor anyway: it retries, then stops here."
}

# The node stage (after kexec): the same proxy, HTTP from the phase tools through it
# (PHASE_PROXY), plasmd on loopback without mDNS, the DHT off (private mode), and with
# phase.tor=1 a tor of its own. Not bootstrapped yet is no reason to stop a node.
node_proxy() {
    proxy_check || return 0
    proxy_quiet_links
    proxy_no_dns
    PHASE_PROXY=$PROXY
    export PHASE_PROXY
    mark "proxy url=$PROXY tor=$TOR stage=node"
    say "node in private mode over $PROXY: the phase tools' HTTP goes through it (PHASE_PROXY); plasmd listens on loopback only and without mDNS; the DHT is off"
}

node_tor() {
    [ "$TOR" = 1 ] || return 0
    tor_launch
    tor_wait_socks
    case $? in
        1) say "tor exited: $(tor_last); HTTP through $PROXY will fail" ;;
        2) say "tor did not open $TOR_SOCKS in $TOR_PORT_WAIT s: $(tor_last)" ;;
    esac
}

# plasmd's config.toml in the (tmpfs) home: no mDNS advertisement, whatever it says
proxy_plasmd_config() {
    f="$PHASE_HOME/config.toml"
    [ -f "$f" ] || return 0
    sed -i 's/^mdns *=.*/mdns = false/' "$f"
    grep -q '^mdns = false' "$f" || echo 'mdns = false' >> "$f"
}

# listening_report: PHASE-BOOT listening external=none, or each proto/address:port
# bound to something other than loopback (TCP listening, UDP bound), from /proc/net.
listening_report() {
    ext=$(for f in tcp udp tcp6 udp6; do
        [ -r "$PROCNET/$f" ] || continue
        awk -v p="$f" '
            function dec(h,  i, n) { n = 0; for (i = 1; i <= length(h); i++)
                n = n * 16 + index("0123456789ABCDEF", substr(h, i, 1)) - 1; return n }
            NR > 1 {
                split($2, a, ":"); ad = toupper(a[1])
                if (p ~ /^tcp/ && $4 != "0A") next
                if (length(ad) == 8 && substr(ad, 7, 2) == "7F") next
                if (ad == "00000000000000000000000001000000") next
                if (substr(ad, 1, 24) == "0000000000000000FFFF0000" && substr(ad, 31, 2) == "7F") next
                printf "%s/%s:%d\n", p, ad, dec(a[2])
            }' "$PROCNET/$f"
    done | sort -u | tr '\n' ',' | sed 's/,$//')
    mark "listening external=${ext:-none}"
}
