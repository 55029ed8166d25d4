// Package pb holds Parley's protobuf wire messages and their generated Go
// code. Regenerate with `go generate ./internal/pb` (protoc from Debian's
// protobuf-compiler, protoc-gen-go from `go install
// google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12`).
package pb

//go:generate protoc --go_out=. --go_opt=paths=source_relative parley.proto presence.proto inbox.proto
