// Package client is a Go build slave that attaches to a Buildbot-compatible master, over Perspective Broker or msgpack_experimental_v7, and runs its commands.
//
// A [Slave] dials its master with its name and password: over Perspective
// Broker (PB) for a "host:port" Master, as every stock Buildbot master
// listens (c['protocols'] = {'pb': {'port': 9989}}), or over msgpack on a
// WebSocket for a ws:// or wss:// Master (Buildbot ≥ 3.6 with
// msgpack_experimental_v7; [Config].Protocol chooses explicitly). It
// answers the master's requests (print, keepalive, worker info, settings,
// start, interrupt and shutdown), runs commands through package commands,
// and reconnects with capped, jittered exponential back-off when the
// connection drops. Given several masters ("a:9989,ws://b:9990/"), it
// moves on to the next one at each lost connection or failed attempt.
package client
