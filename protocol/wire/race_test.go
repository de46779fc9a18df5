//go:build race

package wire

// raceEnabled says whether the race detector is on: it turns off the
// runtime's tiny allocator, so small values take more memory.
const raceEnabled = true
