//go:build !unix

package connlimit

import "net"

// unread reports false where the kernel cannot be asked without reading:
// a connection counts as silent until this master reads its first bytes.
func unread(net.Conn) bool { return false }
