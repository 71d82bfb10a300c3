package main

// version is set at link time by `make deb`/`make install`
// (-ldflags '-X main.version=...'); a plain `go build` says "dev".
var version = "dev"
