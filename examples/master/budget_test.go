package main

import "testing"

// TestTransportsShareOneMessageBudget: message_memory sizes the one
// memory budget that the messages of both slave transports share.
func TestTransportsShareOneMessageBudget(t *testing.T) {
	m, _ := startMaster(t, testConfig(t, "[master]\nmessage_memory = \"8MiB\"\n"))
	mp, pb := m.proto.Handler.WebSocket.Budget, m.pb.Broker.Budget
	if mp == nil || mp != pb {
		t.Fatalf("msgpack's budget %p, PB's %p: want one, shared", mp, pb)
	}
	if got := mp.Size(); got != 8<<20 {
		t.Errorf("the budget has %d bytes, want message_memory's 8 MiB", got)
	}
}
