//go:build !unix

package peek

// wouldBlock is what look returns for a socket with nothing to read.
const wouldBlock = -1

// look cannot ask the kernel here without reading: it reports nothing
// unread, and nothing to wait for.
func look(uintptr) int { return 0 }
