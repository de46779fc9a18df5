// Package client is a Go build slave that attaches to a Buildbot-compatible master over the msgpack_experimental_v7 protocol and runs its commands.
//
// A [Slave] dials ws://host:port/ (or wss://) with its name and password,
// answers the master's requests (print, keepalive, get_worker_info,
// set_worker_settings, start_command, interrupt_command, shutdown), runs
// commands through package commands, and reconnects with capped, jittered
// exponential back-off when the connection drops.
package client
