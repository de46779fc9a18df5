package remote_test

import (
	"github.com/buildslave/buildslave/protocol"
	"github.com/buildslave/buildslave/protocol/pb"
	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/slave"
)

// Every transport's connection, as the manager hands it to a build, runs
// remote commands: remote.Start never needs to know which one it got.
var (
	_ interface {
		slave.Conn
		remote.Commander
	} = (*protocol.Conn)(nil)
	_ interface {
		slave.Conn
		remote.Commander
	} = (*pb.Conn)(nil)
)
