package main

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

func TestEmbeddedDefaultRuns(t *testing.T) {
	if err := run(slog.New(slog.NewTextHandler(io.Discard, nil)), 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
}
