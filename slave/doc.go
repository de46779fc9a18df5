// Package slave configures build slaves and runs the manager that a CI
// master's transports attach them to: Buildbot 0.8.6's BuildSlave options
// (name, password, properties, max_builds, keepalive_interval,
// notify_on_missing, missing_timeout), logins, duplicate names,
// keepalives, build slots, pause and graceful shutdown, reconfiguration,
// missing-slave notices, and state and events for a status page.
//
// An application builds its Slaves with New, hands them to NewManager,
// serves the Manager through a transport (protocol/pb, protocol), and runs
// builds with Acquire and Release. Latent slaves, whose machines are
// started on demand, belong to the latent package's Lifecycle, which
// takes part through a Controller; nothing else in this package is
// needed for them. Several masters sharing one fleet give each manager a
// Gate (Config.Gate; package cluster's Member is one, on etcd), which
// decides which master holds each slave name.
package slave
