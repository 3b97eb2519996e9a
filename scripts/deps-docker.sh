#!/usr/bin/env bash
# Installs Docker Engine for the Docker tests (integration/docker_test.go) and
# `make docker-demo`: dockerd built from the Go module proxy into
# /opt/moby/<version>/bin, and a docker CLI (the machine's, else Debian's).
# Idempotent: a dockerd that already reports the version is kept.
#
# dockerd needs runc >= 1.2 (its specs ask for a time namespace) and a containerd to
# talk to: scripts/deps.sh builds both (/opt/runc/v1.5.1, /opt/containerd/v2.4.2).
set -euo pipefail

MOBY_VERSION="${MOBY_VERSION:-v2.0.0-beta.24}"
# The oldest API the CLI may speak: dockerd v2 refuses clients below 1.40.
MIN_CLI_API=1.40

dir=/opt/moby/$MOBY_VERSION/bin
if [ -x "$dir/dockerd" ] && "$dir/dockerd" --version | grep -qF "version ${MOBY_VERSION#v},"; then
	:
else
	echo "deps-docker: building dockerd $MOBY_VERSION into $dir"
	mkdir -p "$dir"
	start=$SECONDS
	# Plain `go install` of the module works (cgo on, the default graph drivers);
	# -ldflags stamps the version that `dockerd --version` and the check above read
	# (without it the binary says "library-import").
	pkg=github.com/moby/moby/v2
	GOBIN="$dir" go install \
		-ldflags "-X $pkg/dockerversion.Version=${MOBY_VERSION#v} -X $pkg/dockerversion.GitCommit=$MOBY_VERSION" \
		"$pkg/cmd/dockerd@$MOBY_VERSION"
	echo "deps-docker: dockerd $MOBY_VERSION built in $((SECONDS - start)) s"
fi

# The CLI: /usr/local/bin/docker on the machine image; Debian's docker-cli (trixie and
# later) or docker.io (bookworm, which ships the CLI with its own daemon) elsewhere.
if ! command -v docker >/dev/null; then
	apt-get update -qq
	pkg=docker-cli
	if ! apt-cache policy docker-cli | grep -q 'Candidate: [0-9]'; then
		pkg=docker.io
	fi
	echo "deps-docker: installing Debian's $pkg for the docker CLI"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
	# docker.io's own daemon is never used (the tests start a private dockerd); where
	# systemd runs, the package starts it: leave it alone.
fi
api=$(docker version --format '{{.Client.APIVersion}}' 2>/dev/null || true)
if [ -z "$api" ] || [ "$(printf '%s\n%s\n' "$MIN_CLI_API" "$api" | sort -V | head -n1)" != "$MIN_CLI_API" ]; then
	echo "deps-docker: the docker CLI ($(command -v docker)) speaks API '${api:-?}'; dockerd $MOBY_VERSION needs $MIN_CLI_API or newer" >&2
	exit 1
fi
echo "deps-docker: ok (dockerd $MOBY_VERSION, docker CLI API $api)"
