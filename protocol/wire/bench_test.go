package wire

import (
	"fmt"
	"strings"
	"testing"

	"github.com/buildslave/buildslave/protocol/internal/capture"
)

// BenchmarkDecodeMessage decodes typical frames: every message of the
// captured session, a batch of 3,000 output lines as a slave sends it, and
// a 16 KiB file-transfer block.
func BenchmarkDecodeMessage(b *testing.B) {
	var session [][]byte
	for _, m := range capture.Messages() {
		session = append(session, encode(b, m))
	}
	const lines = 3000
	offsets, times := make([]any, lines), make([]any, lines)
	var text strings.Builder
	for i := range lines {
		fmt.Fprintf(&text, "line %d of the build's output\n", i)
		offsets[i], times[i] = int64(text.Len()-1), 1.7e9+float64(i)/1000
	}
	output := encode(b, map[string]any{"op": "update", "seq_number": 7, "command_id": "3",
		"args": []any{[]any{"stdout", []any{text.String(), offsets, times}}}})
	upload := encode(b, map[string]any{"op": "update_upload_file_write", "seq_number": 8, "command_id": "4",
		"args": make([]byte, 16<<10)})
	for _, bm := range []struct {
		name   string
		frames [][]byte
	}{{"session", session}, {"output", [][]byte{output}}, {"upload", [][]byte{upload}}} {
		b.Run(bm.name, func(b *testing.B) {
			size := 0
			for _, p := range bm.frames {
				size += len(p)
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				for _, p := range bm.frames {
					if _, err := DecodeMessage(p); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
