// Package protocol is the master side of Buildbot's msgpack_experimental_v7 slave protocol, so that stock buildbot-worker processes and Go slaves attach to a slave.Manager over WebSocket.
//
// A [Server] serves a [Handler] on a listener; the Handler authenticates
// each slave through its Manager (a *slave.Manager) and attaches it as a
// [Conn]. A build runs commands on its slave with remote.Start, as over
// Perspective Broker (package protocol/pb), which a master usually serves
// beside this one:
//
//	server := &protocol.Server{Handler: &protocol.Handler{Manager: m, Builders: []string{"hello"}}}
//	go server.ListenAndServe("127.0.0.1:9990")
//	defer server.Shutdown(ctx)
//
//	build, err := m.Acquire(ctx, "bot-linux")
//	...
//	cmd, err := remote.Start(ctx, build.Conn(), remote.Request{Name: "shell", Args: args})
package protocol
