// Package pb is the master side of Twisted's Perspective Broker as Buildbot uses it: the protocol every stock buildbot-worker speaks by default, and the only one of the Buildbot 0.8-era buildslaves.
//
// A Server listens on TCP (Buildbot's usual port is 9989). Each slave
// negotiates banana's "pb" dialect, logs in with PB's MD5 challenge and
// response against the slave.Manager (the password never travels), is
// set up as the stock master does and is attached to the manager as a
// *Conn: a slave.Conn for the manager and a remote.Commander for builds,
// which run the same commands as over msgpack (package protocol).
//
// The codec is written for a peer that may be hostile: banana tokens,
// lists and strings are bounded before anything is read for them, the
// memory one message may take is bounded by its size (Limits) and, with
// the messages of every other connection of a Server, by one shared
// budget (BrokerConfig.Budget, package protocol/budget), jelly is
// decoded into plain Go values only (a jelly naming a class, module or
// instance is refused), and a call on an object the peer was never given
// ends the connection.
package pb
