#!/usr/bin/env bash
# Build the R Bridge image with podman, run it, and check it end to end.
#   Run 1, as `docker run rbridge`: no compilers and no source tree in the image (the bridge
#     and its R code are in /opt/venv, installed from the wheel); /readyz; the HEALTHCHECK;
#     every process runs as UID 10001; log in with the initial admin password the server
#     wrote to /etc/rbridge; score every example model over HTTP (predictions of the right
#     length, numbers or labels); SIGTERM -> exit code 0 well within the grace period.
#   Run 2, as Kubernetes runs it: read-only root filesystem, tmpfs /tmp, capabilities
#     dropped, no-new-privileges, a users file made with `rbridge user add` and a signing
#     key mounted read-only at /etc/rbridge; log in as a scorer, score, 403 on /status,
#     SIGTERM -> exit 0.
#
# No Docker engine runs on the project's machines, but podman from Debian does.
# Everything machine-specific lives here, never in the Dockerfile (which stays the
# ordinary one a user builds with `docker build -t rbridge .`):
#   * installs podman and friends with apt-get when missing (needs root);
#   * writes /etc/containers/containers.conf (runc: crun rejects the hybrid cgroup
#     setup; ulimits no higher than the sandbox's hard limit);
#   * builds a debian:bookworm-slim base with debootstrap from the machine's own
#     Debian mirror, with the machine's extra CA certificates (outbound HTTPS passes
#     a proxy with its own CA, which pip inside the build must trust), and imports it
#     under that name; the root filesystem is cached as a tarball and reused;
#   * `podman build --format docker --pull=never` (docker format keeps HEALTHCHECK).
#
# Usage: tests/container/build_and_run.sh [--prepare-only]
#   --prepare-only  install tools and import the base image, then stop
# The image is kept (the next build reuses its layers); containers never are.
# Environment:
#   RBRIDGE_TEST_PORT   host port on 127.0.0.1 (default: a free one)
#   RBRIDGE_IMAGE       image tag to build (default localhost/rbridge:test)
#   RBRIDGE_BASE_CACHE  where the base rootfs tarball is cached (default /var/cache/rbridge-base)
#   RBRIDGE_MODEL       model(s) to score, space-separated (default: every one GET /models lists)
# Prints PASS or FAIL as its last line; exits non-zero on failure.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMAGE=${RBRIDGE_IMAGE:-localhost/rbridge:test}
PORT=${RBRIDGE_TEST_PORT:-}
NAME=rbridge-test-$$
BASE_NAME=$NAME
EXPECTED_UID=10001
PREPARE_ONLY=0
for arg in "$@"; do
    case $arg in
        --prepare-only) PREPARE_ONLY=1 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

# shellcheck source=tests/container/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cleanup() {
    remove_containers "$BASE_NAME" "$BASE_NAME-k8s"
    [[ -n ${WORK:-} ]] && rm -rf "$WORK"
    return 0
}
trap cleanup EXIT

# ---------------------------------------------------------------- main
ensure_tools
write_containers_conf
ensure_base_image
if ((PREPARE_ONLY)); then
    step "prepared"
    echo PASS
    exit 0
fi

WORK=$(mktemp -d)
step "podman build $IMAGE"
podman build --format docker --pull=never -t "$IMAGE" "$REPO" >"$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log" >&2; fail "podman build failed (log above)"; }
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
step "built $IMAGE: $((size / 1024 / 1024)) MiB"
podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE" | grep -q healthz \
    || fail "image has no HEALTHCHECK against /healthz"

step "checking the image has no compilers"
podman run --rm --entrypoint sh "$IMAGE" -c 'for c in gcc cc g++ c++ gfortran make; do command -v $c; done; true' \
    >"$WORK/compilers" 2>>"$WORK/podman.log" || fail "could not run a shell in the image"
[[ ! -s $WORK/compilers ]] || fail "compilers left in the final image: $(tr '\n' ' ' <"$WORK/compilers")"

step "checking the bridge runs from the venv's wheel install, with no source tree beside it"
where=$(podman run --rm --entrypoint sh "$IMAGE" -c \
    'ls -d /app /src 2>/dev/null; python3 -c "import rbridge.worker.rsession as r; print(r.R_DIR, len(list(r.R_DIR.glob(\"*.R\"))))"' \
    2>>"$WORK/podman.log") || fail "could not run python3 in the image"
[[ $where =~ ^/opt/venv/lib/python3[0-9.]*/site-packages/rbridge/worker/r\ [1-9] ]] \
    || fail "expected the R code in /opt/venv's rbridge and no /app or /src; got: $(tr '\n' ' ' <<<"$where")"

run_args=()
if ! compgen -G "$REPO/models/*.rds" >/dev/null; then
    # No example models committed yet: make two small ones with the image's own R and
    # mount them over /models, so the rest of the test still scores through the container.
    step "no models/*.rds in the repository: training stand-in models with the image's R"
    mkdir -m 0755 "$WORK/models"
    podman run --rm --user 0 -v "$WORK/models:/out" --entrypoint Rscript "$IMAGE" -e '
        set.seed(1)
        saveRDS(randomForest::randomForest(Species ~ ., data = iris, ntree = 50), "/out/iris_rf.rds")
        saveRDS(rpart::rpart(mpg ~ wt + hp + cyl, data = mtcars), "/out/mtcars_tree.rds")' \
        >"$WORK/train.log" 2>&1 || { cat "$WORK/train.log" >&2; fail "could not train stand-in models"; }
    chmod 0644 "$WORK"/models/*.rds
    run_args+=(-v "$WORK/models:/models:ro")
fi

# Free port on 127.0.0.1 unless one was given.
if [[ -z $PORT ]]; then
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
step "podman run on 127.0.0.1:$PORT"
# No --init: the image's own entrypoint is tini, which is what docker users get.
# (podman's healthcheck timers need systemd, absent here: its complaints go to a log, and the
# HEALTHCHECK is run by hand below.)
podman run -d --name "$NAME" -p "127.0.0.1:$PORT:8000" "${run_args[@]}" "$IMAGE" \
    >/dev/null 2>>"$WORK/podman.log" || { cat "$WORK/podman.log" >&2; fail "podman run failed"; }

wait_ready "$NAME"

read -r status body < <(http GET /healthz)
[[ $status == 200 ]] || fail "/healthz: $status $body"
podman healthcheck run "$NAME" 2>>"$WORK/podman.log" || fail "the image's HEALTHCHECK failed"
[[ $(podman inspect -f '{{.State.Health.Status}}' "$NAME" 2>/dev/null) == healthy ]] \
    || fail "container not healthy after its HEALTHCHECK: $(podman inspect -f '{{json .State.Health}}' "$NAME")"

step "checking the server runs as UID $EXPECTED_UID"
uid=$(podman exec "$NAME" id -u)
[[ $uid == "$EXPECTED_UID" ]] || fail "podman exec id -u: $uid, expected $EXPECTED_UID"
# Every process in the container except the init (tini, PID 1, also non-root) runs as 10001.
users=$(podman top "$NAME" user | tail -n +2 | sort -u | tr '\n' ' ')
[[ $users == "$EXPECTED_UID " || $users == "rbridge " ]] || fail "podman top users: $users"
podman top "$NAME" user pid args | sed 's/^/    /'

step "logging in with the initial admin password"
password=$(podman exec "$NAME" cat /etc/rbridge/initial-admin-password | tr -d '\r\n')
[[ -n $password ]] || fail "no /etc/rbridge/initial-admin-password in the container"
login=$(python3 -c 'import json,sys; print(json.dumps({"username": "admin", "password": sys.argv[1]}))' "$password")
read -r status body < <(http POST /login "$login")
[[ $status == 200 ]] || fail "/login: $status $body"
token=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["access_token"])' "$body")
export AUTH="Bearer $token"

read -r status body < <(AUTH= http GET /models)
[[ $status == 401 ]] || fail "GET /models without credentials: $status (expected 401)"
read -r status body < <(http GET /models)
[[ $status == 200 ]] || fail "GET /models: $status $body"
models=${RBRIDGE_MODEL:-$(python3 - "$body" <<'PY'
import json, sys
doc = json.loads(sys.argv[1])
items = doc.get("models", doc) if isinstance(doc, dict) else doc
print(" ".join(sorted(m["name"] if isinstance(m, dict) else m for m in items)))
PY
)}
[[ -n $models ]] || fail "no models listed: $body"

declare -A requests=()
for model in $models; do
    read -r status info < <(http GET "/models/$model")
    [[ $status == 200 ]] || fail "GET /models/$model: $status $info"
    # A 3-row request from the model's schema: each column's levels, else a number.
    request=$(python3 - "$info" <<'PY'
import json, sys
info = json.loads(sys.argv[1])
cols = (info.get("schema") or {}).get("columns") or []
rows = []
for i in range(3):
    row = {}
    for c in cols:
        t = (c.get("type") or "numeric").lower()
        if c.get("levels"):
            row[c["name"]] = c["levels"][i % len(c["levels"])]
        elif t in ("integer", "int"):
            row[c["name"]] = i + 4
        elif t in ("logical", "bool", "boolean"):
            row[c["name"]] = bool(i % 2)
        elif t in ("character", "string"):
            row[c["name"]] = "x"
        else:
            row[c["name"]] = 2.5 + i
    rows.append(row)
print(json.dumps({"data": rows}) if cols else "")
PY
)
    if [[ $info == *'"image": {'* || $info == *'"image":{'* ]]; then
        # An image model (its <name>.json has an "image" block): a PNG of a 7 from the tests'
        # fixtures, drawn dark on white, as one upload; the answer is the best classes.
        step "scoring image model '$model' with a PNG over HTTP"
        ${NETNS_PID:+nsenter -t "$NETNS_PID" -n --} python3 - "http://127.0.0.1:$PORT/models/$model/predict" \
            "$REPO/tests/fixtures/digits/digit-7.png" <<'PY' || fail "image model $model did not answer a PNG"
import json, os, sys, urllib.request
req = urllib.request.Request(sys.argv[1], data=open(sys.argv[2], "rb").read(), method="POST",
                             headers={"Content-Type": "image/png", "Authorization": os.environ.get("AUTH", "")})
with urllib.request.urlopen(req, timeout=30) as r:
    preds = json.load(r)["predictions"]
assert len(preds) == 1 and all({"label", "score"} <= set(x) for x in preds[0]), preds
if "digits" in sys.argv[1]:
    assert preds[0][0]["label"] == "7", preds
print("    predictions:", json.dumps(preds)[:160])
PY
        scored=$(( ${scored:-0} + 1 ))
        continue
    fi
    if [[ -z $request ]]; then
        step "model '$model' publishes no input schema: not scored"
        continue
    fi
    requests[$model]=$request
    step "scoring model '$model' over HTTP"
    read -r status body < <(http POST "/models/$model/predict" "$request")
    [[ $status == 200 ]] || fail "POST /models/$model/predict: $status $body (request $request)"
    python3 - "$body" <<'PY' || fail "bad predictions from $model: $body"
import json, numbers, sys
doc = json.loads(sys.argv[1])
preds = doc["predictions"]
assert isinstance(preds, list) and len(preds) == 3, f"expected 3 predictions, got {preds!r}"
def ok(v):
    if isinstance(v, bool):
        return False
    if isinstance(v, (numbers.Number, str)):
        return True
    if isinstance(v, dict):   # a row of a data frame: class probabilities, an interval, ...
        return bool(v) and all(isinstance(x, (numbers.Number, str)) for x in v.values())
    if isinstance(v, list):   # top_k: the best classes, [{"label": ..., "score": ...}, ...]
        return bool(v) and all(isinstance(x, dict) and isinstance(x.get("label"), str)
                               and isinstance(x.get("score"), numbers.Number) for x in v)
    return False
assert all(ok(p) for p in preds), f"predictions are not numbers/labels: {preds!r}"
print("    predictions:", json.dumps(preds)[:160])
PY
    scored=$(( ${scored:-0} + 1 ))
done
(( ${scored:-0} > 0 )) || fail "no model could be scored"

stop_and_check "$NAME"

# ---------------------------------------------------------------- run 2: as Kubernetes runs it
# Read-only root filesystem with a tmpfs for R's TMPDIR, no capabilities, no privilege
# escalation, a users file made with `rbridge user add` and a signing key mounted read-only
# at /etc/rbridge (the Secret rbridge-auth in deploy/).
step "run 2: read-only root, capabilities dropped, users file and signing key mounted read-only"
mkdir -m 0750 "$WORK/etc"
chown "$EXPECTED_UID:$EXPECTED_UID" "$WORK/etc"
scorer_pw=$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')
printf '%s\n' "$scorer_pw" | podman run --rm -i -v "$WORK/etc:/etc/rbridge" "$IMAGE" \
    rbridge user add scorer --role scorer --users /etc/rbridge/users.json --password-stdin \
    >"$WORK/useradd.log" 2>&1 || { cat "$WORK/useradd.log" >&2; fail "rbridge user add in the image failed"; }
python3 -c 'import secrets; print(secrets.token_urlsafe(48))' >"$WORK/etc/signing.key"
chown "$EXPECTED_UID:$EXPECTED_UID" "$WORK/etc/signing.key"
chmod 0400 "$WORK/etc/signing.key"
NAME2=$NAME-k8s
podman run -d --name "$NAME2" -p "127.0.0.1:$PORT:8000" "${run_args[@]}" \
    --read-only --tmpfs /tmp:rw,mode=1777 --cap-drop ALL --security-opt no-new-privileges \
    -v "$WORK/etc:/etc/rbridge:ro" -e RBRIDGE_SIGNING_KEY_FILE=/etc/rbridge/signing.key \
    -e RBRIDGE_WORKERS=1 "$IMAGE" \
    >/dev/null 2>>"$WORK/podman.log" || { cat "$WORK/podman.log" >&2; fail "podman run (2) failed"; }
NAME=$NAME2   # for fail()'s logs
wait_ready "$NAME2"
login=$(python3 -c 'import json,sys; print(json.dumps({"username": "scorer", "password": sys.argv[1]}))' "$scorer_pw")
read -r status body < <(AUTH= http POST /login "$login")
[[ $status == 200 ]] || fail "run 2: /login as scorer: $status $body"
export AUTH="Bearer $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["access_token"])' "$body")"
for model in $models; do [[ -n ${requests[$model]:-} ]] && break; done   # the first model of rows
read -r status body < <(http POST "/models/$model/predict" "${requests[$model]}")
[[ $status == 200 ]] || fail "run 2: POST /models/$model/predict: $status $body"
step "run 2: scored '$model' as scorer"
read -r status body < <(http GET /status)
[[ $status == 403 ]] || fail "run 2: GET /status as a scorer: $status (expected 403)"
stop_and_check "$NAME2"

step "all checks passed in $(( $(date +%s) - START ))s"
echo PASS
