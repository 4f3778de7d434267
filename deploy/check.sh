#!/usr/bin/env bash
# Checks the deployment files in deploy/ against the real binary:
#
#   1. the static controller (make static): statically linked, stamped with
#      the version, starts, answers /health, exits 0 on SIGTERM and 2 on a
#      configuration mistake (the unit's RestartPreventExitStatus=2);
#   2. deploy/controller.service: systemd-analyze verify, in a scratch root
#      holding the unit, the binary at its ExecStart= path and systemd's units;
#   3. deploy/Containerfile: built with buildah (or podman), its contents and
#      configuration checked, then run with podman and probed on /health.
#
# What this machine cannot do (no systemd-analyze, no buildah or podman, no
# container runtime that works here) is skipped with a line
# "deploy: skipped: <reason>"; whatever it can do must pass. Called by
# .ci/run; runs on its own too: deploy/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ok() { echo "deploy: ok: $*"; }
skip() { echo "deploy: skipped: $*"; }
fail() {
	echo "deploy: FAIL: $*" >&2
	exit 1
}

KEY=deploy-check-key-0123456789
BIN=bin/static/controller
IMAGE=localhost/expo-controller-check:$$
CONTAINER=expo-controller-check-$$
work=$(mktemp -d)
pid=
builder=
cleanup() {
	if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
	if command -v podman >/dev/null 2>&1; then podman rm -f -v "$CONTAINER" >/dev/null 2>&1 || true; fi
	if [ -n "$builder" ]; then "$builder" rmi "$IMAGE" >/dev/null 2>&1 || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

# get PORT PATH: an HTTP GET on 127.0.0.1 with bash alone (no curl needed);
# prints the whole answer, status line first.
get() {
	local answer
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$2" >&3
	answer=$(timeout 10 cat <&3) || true
	exec 3>&-
	printf '%s' "$answer"
}

# wait_listening FILE: the port from the controller's "listening" log line
# in FILE, waiting up to 30 s for it.
wait_listening() {
	local i line
	for ((i = 0; i < 300; i++)); do
		line=$(grep -o 'msg=listening addr=[^ ]*' "$1" 2>/dev/null | head -1) || true
		if [ -n "$line" ]; then
			echo "${line##*:}"
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# check_health PORT VERSION: /health answers 200, ok, naming VERSION.
check_health() {
	local answer
	answer=$(get "$1" /health) || return 1
	case "$answer" in
	"HTTP/1."?" 200 "*'"status":"ok"'*) ;;
	*) echo "$answer" >&2; return 1 ;;
	esac
	case "$answer" in
	*"\"version\":\"$2\""*) ;;
	*) echo "/health does not name version $2: $answer" >&2; return 1 ;;
	esac
}

# --- 1. The static binary ----------------------------------------------------
make -s static 2>"$work/build.log" || {
	cat "$work/build.log" >&2
	fail "make static"
}
out=$(readelf -l "$BIN")
if [[ $out == *INTERP* ]]; then fail "$BIN asks for a dynamic loader"; fi
if command -v file >/dev/null 2>&1; then
	out=$(file "$BIN")
	[[ $out == *"statically linked"* ]] || fail "file: $out"
fi
if command -v ldd >/dev/null 2>&1; then
	out=$(ldd "$BIN" 2>&1) || true # exits 1 for a static binary
	[[ $out == *"not a dynamic executable"* ]] || fail "ldd: $out"
fi
ok "$BIN is statically linked"

line=$("$BIN" version) || fail "$BIN version"
[[ $line =~ ^controller\ ([^ ]+)\ \(revision\ ([^ ,]+) ]] || fail "$BIN version printed: $line"
version=${BASH_REMATCH[1]}
if described=$(git describe --tags --always --dirty 2>/dev/null); then
	[ "$version" = "$described" ] || fail "$BIN version is $version, git describe says $described"
	[ "${BASH_REMATCH[2]}" = "$(git rev-parse HEAD)" ] || fail "$BIN revision ${BASH_REMATCH[2]} is not HEAD"
fi
ok "$line"

code=0
"$BIN" --port not-a-port >/dev/null 2>&1 || code=$?
[ "$code" = 2 ] || fail "a configuration mistake exits $code, not 2 (the unit's RestartPreventExitStatus=2)"

"$BIN" start --host 127.0.0.1 --port 0 --api-key "$KEY" --db "$work/data/controller.db" \
	--storage "$work/storage" >/dev/null 2>"$work/controller.log" &
pid=$!
port=$(wait_listening "$work/controller.log") || fail "$BIN did not listen: $(cat "$work/controller.log")"
check_health "$port" "$version" || fail "$BIN: /health"
kill -TERM "$pid"
code=0
wait "$pid" || code=$?
pid=
[ "$code" = 0 ] || fail "$BIN exited $code after SIGTERM"
ok "$BIN serves /health (version $version) and exits 0 on SIGTERM"

# --- 2. The systemd unit -----------------------------------------------------
if ! command -v systemd-analyze >/dev/null 2>&1; then
	skip "systemd-analyze verify deploy/controller.service: systemd-analyze not found (Debian: apt-get install systemd)"
elif [ ! -d /usr/lib/systemd/system ] && [ ! -d /lib/systemd/system ]; then
	skip "systemd-analyze verify deploy/controller.service: no systemd unit directory to verify against"
else
	exec_start=$(sed -n 's/^ExecStart=//p' deploy/controller.service)
	[ "$exec_start" = "/usr/local/bin/expo-controller start" ] || fail "ExecStart=$exec_start: docs/DEPLOYMENT.md installs /usr/local/bin/expo-controller"
	grep -qx 'RestartPreventExitStatus=2' deploy/controller.service || fail "the unit lacks RestartPreventExitStatus=2"
	root=$work/root
	mkdir -p "$root/usr/local/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
	cp "$BIN" "$root/usr/local/bin/expo-controller"
	cp -a "$(readlink -f /usr/lib/systemd/system 2>/dev/null || readlink -f /lib/systemd/system)" "$root/usr/lib/systemd/system"
	cp deploy/controller.service "$root/etc/systemd/system/expo-controller.service"
	# verify warns about unknown keys and bad values yet exits 0: any output fails.
	out=$(systemd-analyze verify --root="$root" expo-controller.service 2>&1) || fail "systemd-analyze verify: $out"
	[ -z "$out" ] || fail "systemd-analyze verify: $out"
	ok "systemd-analyze verify deploy/controller.service ($(systemd-analyze --version | head -1))"
fi

# --- 3. The container image --------------------------------------------------
if command -v buildah >/dev/null 2>&1; then
	builder=buildah
elif command -v podman >/dev/null 2>&1; then
	builder=podman
fi
if [ -z "$builder" ]; then
	skip "container image: neither buildah nor podman found (Debian: apt-get install buildah podman)"
	exit 0
fi
if ! err=$("$builder" info 2>&1 >/dev/null); then
	skip "container image: $builder cannot work here: $(echo "$err" | tail -1)"
	builder=
	exit 0
fi
"$builder" build -q -f deploy/Containerfile -t "$IMAGE" bin/static >/dev/null 2>"$work/image.log" || {
	cat "$work/image.log" >&2
	fail "$builder build -f deploy/Containerfile bin/static"
}
ok "$builder build -f deploy/Containerfile: $IMAGE"

if [ "$builder" = buildah ] && [ "$(id -u)" = 0 ]; then
	config=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}|{{.OCIv1.Config.Volumes}}|{{.OCIv1.Config.Entrypoint}}' "$IMAGE")
	[ "$config" = '65532:65532|map[/var/lib/expo-controller:{}]|[/usr/local/bin/controller]' ] ||
		fail "image configuration (user|volumes|entrypoint): $config"
	ctr=$(buildah from "$IMAGE")
	mnt=$(buildah mount "$ctr")
	contents=$(cd "$mnt" && find . -mindepth 1 | sort | tr '\n' ' ')
	owner=$(stat -c '%u:%g' "$mnt/var/lib/expo-controller" "$mnt/var/lib" | tr '\n' ' ')
	same=yes
	cmp -s "$mnt/usr/local/bin/controller" "$BIN" || same=no
	cmp -s "$mnt/etc/ssl/certs/ca-certificates.crt" bin/static/ca-certificates.crt || same=no
	buildah umount "$ctr" >/dev/null
	buildah rm "$ctr" >/dev/null
	want='./etc ./etc/ssl ./etc/ssl/certs ./etc/ssl/certs/ca-certificates.crt ./usr ./usr/local ./usr/local/bin ./usr/local/bin/controller ./var ./var/lib ./var/lib/expo-controller '
	[ "$contents" = "$want" ] || fail "image contents: $contents"
	[ "$owner" = '65532:65532 0:0 ' ] || fail "owners of /var/lib/expo-controller and /var/lib: $owner"
	[ "$same" = yes ] || fail "the image's binary or CA bundle differs from bin/static"
	ok "image: the static binary and the CA bundle only, user 65532, state directory its own, a volume"
else
	skip "image contents: checked with buildah as root only"
fi

if ! command -v podman >/dev/null 2>&1; then
	skip "running the image: podman not found (Debian: apt-get install podman)"
	exit 0
fi
# Lower limits than podman's defaults: raising them needs CAP_SYS_RESOURCE,
# which some sandboxes lack. crun refuses hybrid cgroup v1/v2 hosts; runc
# does not, so it is the second choice.
run=()
for runtime in "" runc; do
	if [ -n "$runtime" ] && ! command -v "$runtime" >/dev/null 2>&1; then continue; fi
	try=(podman run --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 ${runtime:+--runtime "$runtime"})
	if out=$(timeout 60 "${try[@]}" --rm "$IMAGE" version 2>&1); then
		[ "$out" = "$line" ] || fail "the image's controller version printed: $out"
		run=("${try[@]}")
		break
	fi
	err=$(echo "$out" | tail -1)
done
if [ ${#run[@]} = 0 ]; then
	skip "running the image: podman cannot run containers here: $err"
	exit 0
fi
if ! err=$("${run[@]}" -d --name "$CONTAINER" --network host -e CONTROLLER_API_KEY="$KEY" \
	-e CONTROLLER_HOST=127.0.0.1 -e PORT=0 "$IMAGE" 2>&1); then
	skip "running the image as a server: $(echo "$err" | tail -1)"
	exit 0
fi
podman logs -f "$CONTAINER" >"$work/container.log" 2>&1 &
logs=$!
port=$(wait_listening "$work/container.log") || fail "the container did not listen: $(cat "$work/container.log")"
check_health "$port" "$version" || fail "the container: /health"
podman stop -t 45 "$CONTAINER" >/dev/null
wait "$logs" || true
code=$(podman inspect --format '{{.State.ExitCode}}' "$CONTAINER")
[ "$code" = 0 ] || fail "the container exited $code after SIGTERM: $(cat "$work/container.log")"
ok "the image runs (${run[*]}): /health answers, version $version, exit 0 on SIGTERM"
