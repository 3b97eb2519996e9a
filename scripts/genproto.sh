#!/usr/bin/env bash
# Regenerates the Go code for this project's own wire definitions under proto/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$(go env GOPATH)/bin:$PATH"
command -v protoc >/dev/null || { echo "protoc missing: run 'make deps'" >&2; exit 1; }
command -v protoc-gen-go >/dev/null || { echo "protoc-gen-go missing: run 'make deps'" >&2; exit 1; }
# protoc-gen-go's code goes to each package's pb/ (its go_package): the
# generator below reads its descriptors, and tests compare with it; the shim
# links the plain structs ./gen writes beside each .proto instead.
find proto -name '*.proto' | sort | while read -r f; do
	protoc --proto_path=proto --go_out=. --go_opt=module=github.com/example/containerd-shim-example-v2 "${f#proto/}"
done
# The codec for the messages the shim exchanges (proto/codec) and the mirrors
# of containerd's API messages it uses (proto/api), from the
# descriptors of the code just generated and of containerd's API.
(cd proto/codec && go run ./gen ..)
echo "proto: regenerated"
