#!/usr/bin/env bash
# The README's first command, as a newcomer runs it: on a bare Debian bookworm (debootstrap
# minbase: no Python, no R, no curl), as root, from a clone of this repository,
#     bash scripts/dev.sh serve
# then the README's curl calls "in another shell", which must give the README's prediction.
#
# How it stays the README's own words:
#   * the serve command and the curl block are read from README.md (the clone's), not copied
#     here; the serve command must be exactly `bash scripts/dev.sh serve` and is run as is;
#   * the clone is `git clone` of this work tree's HEAD (commit it first), mounted in the
#     container at /root/rbridge;
#   * the curl block runs on the host (the README never tells the user to install curl, and
#     a bare container has none) inside the container's network namespace (nsenter -n), so
#     its http://127.0.0.1:8000 is the container's own loopback, where the server listens by
#     default: no --host flag, no published port, no other port. It runs in the clone's
#     folder, where the server wrote ./initial-admin-password, as the README says.
#   * the expected answer is the README's `# {...}` line after the curl calls.
#
# apt's downloaded .debs are kept between runs in a host folder (R and the compilers are
# ~250 MB); pip's cache is not, so rpy2 is built from source every time, as a user's is.
# Cold (nothing cached): ~6-9 minutes; warm: a few minutes less.
#
# Usage: tests/container/readme_serve.sh
# Environment:
#   RBRIDGE_APT_CACHE   host folder for the container's /var/cache/apt/archives
#                       (default /var/cache/rbridge-apt)
#   RBRIDGE_README_WAIT seconds the serve command may take to be ready (default 900)
# Prints PASS or FAIL as its last line; exits non-zero on failure.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
APT_CACHE=${RBRIDGE_APT_CACHE:-/var/cache/rbridge-apt}
READY_WAIT=${RBRIDGE_README_WAIT:-900}
NAME=rbridge-readme-$$
PORT=8000   # the README's

# shellcheck source=tests/container/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cleanup() {
    remove_containers "$NAME"
    [[ -n ${WORK:-} ]] && rm -rf "$WORK"
    return 0
}
trap cleanup EXIT

ensure_tools
for cmd in git curl nsenter; do
    command -v "$cmd" >/dev/null 2>&1 || fail "the host needs $cmd (apt-get install git curl util-linux)"
done
write_containers_conf
ensure_base_image

WORK=$(mktemp -d)
CLONE=$WORK/rbridge
git clone -q "$REPO" "$CLONE"
step "cloned $(git -C "$CLONE" log -1 --format='%h %s' | cut -c1-100)"
[[ -z $(git -C "$REPO" status --porcelain --untracked-files=no) ]] \
    || step "note: $REPO has uncommitted changes; the clone has only what is committed"

# The README's words: the serve command (first line of the first sh block, before its comment)
# and the block that reads initial-admin-password (its commands and the expected answer).
python3 - "$CLONE/README.md" "$WORK" <<'PY' || fail "README.md does not have the expected quick start"
import pathlib, re, sys
text = pathlib.Path(sys.argv[1]).read_text()
work = pathlib.Path(sys.argv[2])
blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
serve = blocks[0].splitlines()[0].split("#")[0].strip()
assert serve == "bash scripts/dev.sh serve", f"first command is {serve!r}"
block = next(b for b in blocks if "initial-admin-password" in b)
expected = [line[1:].strip() for line in block.splitlines() if line.startswith("# {")]
assert len(expected) == 1, f"no single '# {{...}}' answer line in {block!r}"
commands = [c.strip() for c in re.sub(r"\\\n\s*", " ", block).splitlines()
            if c.strip() and not c.startswith("#")]
# One shell, the README's lines in order; a newline after each so answers do not run together.
(work / "serve.cmd").write_text(serve)
(work / "calls.sh").write_text("".join(f"{c}\necho\n" for c in commands))
(work / "expected.json").write_text(expected[0])
PY
SERVE=$(cat "$WORK/serve.cmd")

mkdir -p "$APT_CACHE/partial"
step "podman run $BASE_IMAGE: $SERVE (apt .debs cached in $APT_CACHE)"
podman run -d --name "$NAME" -v "$CLONE:/root/rbridge" -w /root/rbridge \
    -v "$APT_CACHE:/var/cache/apt/archives" "$BASE_IMAGE" bash -c "$SERVE" \
    >/dev/null 2>"$WORK/podman.log" || { cat "$WORK/podman.log" >&2; fail "podman run failed"; }
NETNS_PID=$(podman inspect -f '{{.State.Pid}}' "$NAME")
[[ $NETNS_PID -gt 0 ]] || fail "the container has no process"
wait_ready "$NAME" "$READY_WAIT"
podman logs "$NAME" 2>&1 | grep -E '^==> ' | sed 's/^/    | /'

[[ -s $CLONE/initial-admin-password ]] || fail "no ./initial-admin-password in the clone"
step "the README's calls, in the container's network namespace, from $CLONE"
(cd "$CLONE" && nsenter -t "$NETNS_PID" -n -- bash -eu "$WORK/calls.sh") >"$WORK/answers" 2>&1 \
    || { cat "$WORK/answers" >&2; fail "the README's curl calls failed"; }
sed 's/^/    | /' "$WORK/answers" | cut -c1-200
python3 - "$WORK/answers" "$WORK/expected.json" <<'PY' || fail "the answers are not the README's"
import json, pathlib, sys
answers = [json.loads(line) for line in pathlib.Path(sys.argv[1]).read_text().splitlines() if line.strip()]
expected = json.loads(pathlib.Path(sys.argv[2]).read_text())
models = answers[0].get("models", answers[0]) if isinstance(answers[0], dict) else answers[0]
names = {m["name"] if isinstance(m, dict) else m for m in models}
assert "iris_rf" in names, f"GET /models does not list iris_rf: {answers[0]}"
assert answers[-1] == expected, f"the prediction call answered {answers[-1]}, the README says {expected}"
assert answers[-1]["predictions"] == ["setosa"], answers[-1]
print("    the README's answer:", json.dumps(expected))
PY

stop_and_check "$NAME"
step "the README's quick start works on a bare bookworm in $(( $(date +%s) - START ))s"
echo PASS
