#!/usr/bin/env bash
# gen.sh: generates the go-grpc peer's service code (inferencepb/, git-ignored) from
# proto/inference.proto. protoc is Debian's protobuf-compiler (installed with apt-get when missing
# and root, as bench/run.py does for nginx: only this peer needs it); the two Go plugins are
# installed with `go install` at pinned versions from the module proxy into GOPATH/bin (outside
# build/, so `make clean` does not throw them away). Regenerates only when the .proto or the
# plugin versions change (a stamp in inferencepb/).
set -euo pipefail
cd "$(dirname "$0")"
PROTOC_GEN_GO=v1.36.12      # google.golang.org/protobuf, the runtime go.mod requires
PROTOC_GEN_GO_GRPC=v1.6.2   # google.golang.org/grpc/cmd/protoc-gen-go-grpc
GO=$(command -v go || echo /usr/local/go/bin/go)

if ! command -v protoc >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "gen.sh: protoc is missing; as root: apt-get install -y protobuf-compiler" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler
fi

stamp="inferencepb/.stamp"
want="$(sha256sum proto/inference.proto | cut -d' ' -f1) $PROTOC_GEN_GO $PROTOC_GEN_GO_GRPC $(protoc --version)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

bin="$("$GO" env GOPATH)/bin"
ver() { [ -x "$bin/$1" ] && "$GO" version -m "$bin/$1" 2>/dev/null | awk '$1 == "mod" {print $3}'; }
[ "$(ver protoc-gen-go)" = "$PROTOC_GEN_GO" ] ||
  GOBIN="$bin" "$GO" install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO"
[ "$(ver protoc-gen-go-grpc)" = "$PROTOC_GEN_GO_GRPC" ] ||
  GOBIN="$bin" "$GO" install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC"

rm -rf inferencepb
mkdir -p inferencepb
PATH="$bin:$PATH" protoc -Iproto \
  --go_out=inferencepb --go_opt=paths=source_relative \
  --go-grpc_out=inferencepb --go-grpc_opt=paths=source_relative \
  inference.proto
echo "$want" > "$stamp"
