// Package termsafe escapes untrusted text, such as what a slave reports
// and prints, before the master writes it to a terminal or a log: no
// control character, escape sequence or invalid UTF-8 reaches them raw.
package termsafe

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Escape returns s with every character a terminal could act on written
// as Go escapes it: control characters but tab and newline (ESC as
// \x1b, so that no escape sequence survives), DEL, C1 controls, other
// unprintable runes such as bidirectional overrides, and invalid UTF-8
// bytes. Text without them is returned as it is.
func Escape(s string) string { return escape(s, true) }

// Line is Escape for text that must stay on one line: newlines are
// escaped too, so that a slave cannot forge a line of the master's.
func Line(s string) string { return escape(s, false) }

func escape(s string, newlines bool) string {
	var b strings.Builder
	done := 0 // s[:done] is in b
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		var esc string
		switch {
		case r == utf8.RuneError && n == 1:
			esc = fmt.Sprintf(`\x%02x`, s[i])
		case r == '\t' || r == '\n' && newlines || strconv.IsPrint(r):
			i += n
			continue
		default:
			q := strconv.QuoteRune(r)
			esc = q[1 : len(q)-1]
		}
		b.WriteString(s[done:i])
		b.WriteString(esc)
		i += n
		done = i
	}
	if done == 0 {
		return s
	}
	b.WriteString(s[done:])
	return b.String()
}
