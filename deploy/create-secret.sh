#!/usr/bin/env bash
# Create or update the Secret rbridge-auth that the Deployment mounts at /etc/rbridge:
#   users.json   the users file, made locally with
#                  rbridge user add admin --role admin --users ./users.json
#                  rbridge user add scorer1 --role scorer --users ./users.json
#   signing.key  the token signing key: the same on every replica, so a token from one pod
#                works on all. Kept from the existing Secret when there is one (tokens stay
#                valid), else a new random key, unless --signing-key FILE or --new-key.
# Nothing here is written to the repository; the Secret never is either.
#
# Usage: deploy/create-secret.sh [--users FILE] [--signing-key FILE] [--new-key]
#                                [--namespace NS] [--print]
#   --print   write the Secret's YAML to stdout instead of applying it (no cluster needed)
# Re-run it after changing users.json: the pods see the new file within a minute or so (the
# Secret is mounted as a folder, without subPath, so kubelet updates it) and reload it.
set -euo pipefail

USERS=./users.json
KEY_FILE=
NEW_KEY=0
NAMESPACE=rbridge
PRINT=0
SECRET=rbridge-auth

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
    case $1 in
        --users) USERS=$2; shift 2 ;;
        --signing-key) KEY_FILE=$2; shift 2 ;;
        --new-key) NEW_KEY=1; shift ;;
        --namespace|-n) NAMESPACE=$2; shift 2 ;;
        --print) PRINT=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done

die() { echo "create-secret: $*" >&2; exit 1; }

[[ -f $USERS ]] || die "no users file $USERS. Make one first:
    rbridge user add admin --role admin --users $USERS"
python3 - "$USERS" <<'PY' || die "$USERS is not a users file with at least one user (see rbridge user add)"
import json, sys
doc = json.load(open(sys.argv[1]))
users = doc.get("users") if isinstance(doc, dict) else None
sys.exit(0 if users else 1)
PY

umask 077
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
key=$TMP/signing.key

if [[ -n $KEY_FILE ]]; then
    [[ -s $KEY_FILE ]] || die "signing key file $KEY_FILE is missing or empty"
    cp "$KEY_FILE" "$key"
elif ((!NEW_KEY && !PRINT)) \
    && kubectl -n "$NAMESPACE" get secret "$SECRET" -o jsonpath='{.data.signing\.key}' 2>/dev/null \
        | base64 -d >"$key" 2>/dev/null && [[ -s $key ]]; then
    echo "keeping the signing key of the existing Secret $NAMESPACE/$SECRET" >&2
else
    # 48 random bytes, URL-safe base64: 64 characters (the server wants at least 32).
    python3 -c 'import secrets; print(secrets.token_urlsafe(48))' >"$key"
    echo "made a new random signing key" >&2
fi
# One key per line; the first signs, the others are still accepted (rotation).
awk 'NF && length($1) < 32 { bad = 1 } END { exit bad }' "$key" \
    || die "signing keys must be at least 32 characters each"

manifest() {
    kubectl create secret generic "$SECRET" --namespace "$NAMESPACE" \
        --from-file=users.json="$USERS" --from-file=signing.key="$key" \
        --dry-run=client -o yaml \
    | sed '/^metadata:/a\  labels:\n    app.kubernetes.io/name: rbridge\n    app.kubernetes.io/part-of: rbridge'
}

if ((PRINT)); then
    manifest
    exit 0
fi
kubectl get namespace "$NAMESPACE" >/dev/null 2>&1 || kubectl create namespace "$NAMESPACE"
manifest | kubectl apply -f -
echo "Secret $NAMESPACE/$SECRET holds users.json ($(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["users"]))' "$USERS") users) and signing.key" >&2
