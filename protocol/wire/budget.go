package wire

import (
	"github.com/buildslave/buildslave/protocol/budget"
)

// unreservedFrame is how much of a frame is read before it reserves from
// the memory budget: every connection may hold that much outside it, so
// that ordinary messages (output batches of 64 KiB, file blocks of up to
// 256 KiB) are read without waiting for one. A frame that outgrows it
// reserves, at once, what a frame of the largest size and its decoding
// may take; a smaller one reserves what it and its decoding may take once
// read. Either reservation is made holding nothing, so it may wait.
const unreservedFrame = DefaultMaxMessageSize / 4

// budgeted is a Transport whose messages reserve from a memory budget
// shared with other connections; the WebSocket transport gives its
// WebSocketConfig.Budget.
type budgeted interface {
	budget() *budget.Budget
}

// budgetOf is the memory budget of t's messages; nil (no bound shared
// with other connections) for a Transport without one.
func budgetOf(t Transport) *budget.Budget {
	if b, ok := t.(budgeted); ok {
		return b.budget()
	}
	return nil
}

// readReserved reads the next message from t into dst. On the WebSocket
// transport, a frame that outgrows unreservedFrame first makes res hold
// what the largest frame and its decoding may take, within the budget.
func readReserved(t Transport, dst []byte, l DecodeLimits, res *budget.Reservation) ([]byte, bool, error) {
	ws, ok := t.(*wsTransport)
	if !ok || ws.budgetOf == nil {
		return t.ReadMessage(dst)
	}
	return ws.readMessage(dst, func() error {
		return res.Acquire(min(ws.maxSize+int64(l.withDefaults().memBound(int(ws.maxSize))), ws.budgetOf.Size()))
	})
}

// decodeReserved decodes the message p within l and within what res may
// hold of its budget: what p's buffer and the decoding may take, reserved
// before decoding, then what the decoded message took, which it holds
// while handled (p's buffer goes back to its pool before then, so that a
// handler that waits, as one delivering to a command nobody reads does,
// holds little).
func (l DecodeLimits) decodeReserved(p []byte, res *budget.Reservation) (Message, error) {
	l = l.withDefaults()
	mem := l.memBound(len(p))
	if b := res.Budget(); b != nil {
		need := min(int64(cap(p)+mem), b.Size())
		if res.Held() < need { // not reserved yet, or the buffer grew more than foreseen
			if err := res.Acquire(need); err != nil {
				return nil, err
			}
		}
		res.Shrink(need)
		// A buffer larger than the whole budget leaves nothing to decode with.
		mem = max(0, min(mem, int(res.Held())-cap(p)))
	}
	msg, used, err := l.decodeMessage(p, mem)
	res.Shrink(int64(used))
	return msg, err
}
