// Package protocol is the master side of Buildbot's msgpack_experimental_v7 slave protocol, so that stock buildbot-worker processes and Go slaves attach to a slave.Manager over WebSocket.
package protocol
