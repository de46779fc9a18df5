package termsafe

import "testing"

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"plain text, ünïcödé ✓":              "plain text, ünïcödé ✓",
		"tab\tand\nnewline":                  "tab\tand\nnewline",
		"\x1b[2J\x1b]0;pwned\x07title\r":     `\x1b[2J\x1b]0;pwned\atitle\r`,
		"del\x7f c1\u009b[31m bidi\u202egnp": `del\x7f c1\u009b[31m bidi\u202egnp`,
		"bad \xff\xfe utf-8 \uFFFD":          `bad \xff\xfe utf-8 ` + "\uFFFD",
		"\x00nul":                            `\x00nul`,
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
	if got, want := Line("3.7\n==> forged\x1b[0m"), `3.7\n==> forged\x1b[0m`; got != want {
		t.Errorf("Line = %q, want %q", got, want)
	}
}

func BenchmarkEscapeClean(b *testing.B) {
	s := "an ordinary line of build output, with nothing to escape in it at all\n"
	for b.Loop() {
		Escape(s)
	}
}
