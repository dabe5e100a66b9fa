# Shared by the container tests (sourced, not run): build_and_run.sh (the image) and
# readme_serve.sh (the README's first command in a bare Debian container).
#   step / fail             progress lines with elapsed seconds; fail prints the container's log
#   remove_containers       force-remove containers by name (for the caller's EXIT trap)
#   ensure_tools            podman and friends (apt-get, needs root)
#   write_containers_conf   runc, ulimits within the sandbox's hard limit
#   ensure_base_image       debian:bookworm-slim made with debootstrap (minbase), cached as a tarball
#   http / wait_ready       HTTP without curl (python3), and waiting for /readyz
#   stop_and_check          SIGTERM; the exit code must be 0 within STOP_GRACE seconds
# The caller also sets WORK (a scratch folder: podman.log).
# The caller sets NAME (the container fail() shows) and PORT (where http() connects); with
# NETNS_PID set, http() runs inside that process's network namespace (nsenter), so it reaches
# a server the container binds to its own 127.0.0.1.
# Environment: RBRIDGE_BASE_CACHE  where the base rootfs tarball is cached (default /var/cache/rbridge-base)

BASE_IMAGE=debian:bookworm-slim
BASE_CACHE=${RBRIDGE_BASE_CACHE:-/var/cache/rbridge-base}
NETNS_PID=${NETNS_PID:-}
STOP_GRACE=30          # podman stop -t: seconds before SIGKILL
START=$(date +%s)
step() { printf '==> [%3ds] %s\n' "$(( $(date +%s) - START ))" "$*"; }
fail() {
    printf 'container test failed: %s\n' "$*" >&2
    if podman container exists "$NAME" 2>/dev/null; then
        echo "---- container logs (last 60 lines) ----" >&2
        podman logs --tail 60 "$NAME" >&2 || true
    fi
    echo FAIL
    exit 1
}
remove_containers() {  # NAME...: force-remove those that exist (for an EXIT trap)
    local name
    for name in "$@"; do
        if podman container exists "$name" 2>/dev/null; then
            podman rm -f -t 0 "$name" >/dev/null 2>&1 || true
        fi
    done
}

# ---------------------------------------------------------------- tools
ensure_tools() {
    local missing=()
    for cmd in podman buildah runc debootstrap newuidmap slirp4netns fuse-overlayfs; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    if ((${#missing[@]})); then
        step "installing podman and friends (missing: ${missing[*]})"
        [[ $(id -u) == 0 ]] || fail "need root to install podman (missing: ${missing[*]})"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q podman buildah runc debootstrap uidmap iptables \
            containernetworking-plugins golang-github-containers-common \
            fuse-overlayfs slirp4netns >/dev/null
    fi
}

write_containers_conf() {
    local conf=/etc/containers/containers.conf marker="# written by rbridge tests/container/lib.sh"
    if [[ -f $conf ]] && ! grep -qF "# written by rbridge tests/container/" "$conf"; then
        step "leaving existing $conf alone (not ours)"
        return
    fi
    local nofile
    nofile=$(ulimit -Hn)
    [[ $nofile == unlimited ]] && nofile=1048576
    mkdir -p /etc/containers
    cat >"$conf" <<EOF
$marker
# The sandbox refuses to raise rlimits, so ask for no more than the hard limit;
# crun rejects the hybrid cgroup setup, runc copes.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF
}

debian_mirror() {
    # The first http(s) Debian mirror configured for apt on this machine.
    local m
    m=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -E '/debian/?$' | head -1 || true)
    [[ -z $m ]] && m=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '{print $2}' | grep -E '/debian/?$' | head -1 || true)
    echo "${m:-http://deb.debian.org/debian}"
}

ensure_base_image() {
    if podman image exists "$BASE_IMAGE"; then
        step "base image $BASE_IMAGE present"
        return
    fi
    local tarball=$BASE_CACHE/bookworm-minbase.tar
    if [[ ! -s $tarball ]]; then
        local mirror rootfs
        mirror=$(debian_mirror)
        rootfs=$(mktemp -d /var/tmp/rbridge-rootfs.XXXXXX)
        step "debootstrap bookworm (minbase) from $mirror"
        debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
            || { tail -20 "$rootfs.log" >&2; fail "debootstrap failed"; }
        # Trust the same extra CAs as the host (an HTTPS proxy's CA): the image's
        # ca-certificates package picks them up when the Dockerfile installs it.
        if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
            mkdir -p "$rootfs/usr/local/share/ca-certificates"
            cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        fi
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        mkdir -p "$BASE_CACHE"
        tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs" "$rootfs.log"
    else
        step "reusing cached base rootfs $tarball"
    fi
    step "importing $tarball as $BASE_IMAGE"
    podman import --quiet - "$BASE_IMAGE" <"$tarball" >/dev/null
}

# ---------------------------------------------------------------- helpers
# http METHOD PATH [JSON-BODY] [extra curl-less python args via env AUTH]
# Prints "<status> <body>"; uses python so the host needs no curl.
http() {
    ${NETNS_PID:+nsenter -t "$NETNS_PID" -n --} python3 - "$1" "http://127.0.0.1:$PORT$2" "${3:-}" <<'PY'
import json, os, sys, urllib.request, urllib.error
method, url, body = sys.argv[1], sys.argv[2], sys.argv[3]
req = urllib.request.Request(url, method=method, data=body.encode() if body else None)
if body:
    req.add_header("Content-Type", "application/json")
if os.environ.get("AUTH"):
    req.add_header("Authorization", os.environ["AUTH"])
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        print(r.status, r.read().decode().replace("\n", " "))
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode().replace("\n", " "))
except Exception as e:  # connection refused while starting, etc.
    print(0, json.dumps({"error": str(e)}))
PY
}

wait_ready() {  # NAME [SECONDS]: until /readyz answers 200 (120 s unless told)
    local name=$1 limit=${2:-120} status=0 body=
    step "waiting for /readyz (at most $limit s)"
    for _ in $(seq 1 "$limit"); do
        [[ $(podman inspect -f '{{.State.Running}}' "$name" 2>/dev/null) == true ]] \
            || fail "container $name exited while starting"
        read -r status body < <(AUTH= http GET /readyz)
        if [[ $status == 200 ]]; then
            step "ready: $body"
            return
        fi
        sleep 1
    done
    fail "not ready after $limit s: last /readyz: $status $body"
}

stop_and_check() {  # NAME: SIGTERM, then the exit code must be 0 within the grace period
    local name=$1 t0 elapsed code
    step "stopping $name with SIGTERM (podman stop -t $STOP_GRACE)"
    t0=$(date +%s.%N)
    podman stop -t "$STOP_GRACE" "$name" >/dev/null 2>>"$WORK/podman.log" || fail "podman stop failed"
    elapsed=$(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$t0" "$(date +%s.%N)")
    code=$(podman inspect -f '{{.State.ExitCode}}' "$name")
    podman logs --tail 6 "$name" 2>&1 | cut -c1-220 | sed 's/^/    | /'
    step "exited with code $code after ${elapsed}s"
    # tini passes on the server's own exit status: 0 when it handled SIGTERM and drained.
    # 143 would mean the server died of the signal without handling it; 137 that podman had
    # to SIGKILL it after the grace period.
    [[ $code == 0 ]] || fail "exit code $code after SIGTERM (expected 0: clean shutdown)"
    python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$elapsed" "$STOP_GRACE" \
        || fail "took ${elapsed}s to stop, grace period is ${STOP_GRACE}s"
}
