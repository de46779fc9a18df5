package commands

import (
	"fmt"
	"maps"
	"strings"
	"syscall"
)

// signals are the names interruptSignal may use (without "SIG"): those of
// every platform, and the platform's own (platformSignals).
var signals = func() map[string]syscall.Signal {
	m := map[string]syscall.Signal{
		"KILL": syscall.SIGKILL, "TERM": syscall.SIGTERM, "INT": syscall.SIGINT,
		"HUP": syscall.SIGHUP, "QUIT": syscall.SIGQUIT, "ABRT": syscall.SIGABRT,
	}
	maps.Copy(m, platformSignals)
	return m
}()

func parseSignal(name string) (syscall.Signal, error) {
	sig, ok := signals[strings.TrimPrefix(strings.ToUpper(name), "SIG")]
	if !ok {
		return 0, fmt.Errorf("unknown interruptSignal %q", name)
	}
	return sig, nil
}

func signalName(sig syscall.Signal) string {
	for name, s := range signals {
		if s == sig {
			return name
		}
	}
	return fmt.Sprint(int(sig))
}
