//go:build !linux

package idle

import "net"

// fdWatch cannot register a socket here: Watch returns nil.
type fdWatch struct{}

func (*fdWatch) init(net.Conn, *Watcher) bool { return false }
func (*fdWatch) arm() bool                    { return false }
func (*fdWatch) forget()                      {}
