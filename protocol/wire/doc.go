// Package wire is the transport of Buildbot's msgpack_experimental_v7 slave protocol, shared by master and slave: one msgpack map per binary WebSocket message, multiplexed as numbered requests and responses.
package wire
