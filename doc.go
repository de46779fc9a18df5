// Package buildslave is a library that a CI master imports to run its
// build slaves, as the Buildbot 0.8.6 "Buildslaves" chapter describes:
// slaves with a name and a password, properties, max_builds, keepalives
// and missing-slave mail, and latent slaves started on demand in EC2 or
// libvirt and stopped after use.
//
// The packages, each usable on its own:
//
//   - slave: the Slave configuration and the Manager that authenticates
//     logins, resolves duplicate names, runs keepalives, hands out build
//     slots, notices missing slaves and publishes state and events. It is
//     transport-neutral: it sees a small Conn interface.
//   - slave/slavetest: an in-memory Conn for tests, like net/http/httptest.
//   - keepalive: the loop that keeps an attached connection alive.
//   - notify: who is told when a slave goes missing; a mail notifier, and
//     notifytest, an SMTP server on loopback for tests.
//   - protocol: the master side of Buildbot's msgpack WebSocket protocol,
//     which stock buildbot-worker processes speak; client: our Go slave.
//   - latent: the LatentSlave interface that the ec2 and libvirt drivers
//     implement, and the Lifecycle that starts and stops their instances;
//     latenttest and ec2test are fakes for tests, latent/local runs
//     instances as local processes.
//   - examples/master: a small CI master built on all of the above.
//
// The embedding application wires them together:
//
//	bot, err := slave.New("bot-linux", "linuxpassword",
//		slave.MaxBuilds(2),
//		slave.NotifyOnMissing("admin@example.com"))
//	if err != nil {
//		log.Fatal(err) // names the offending field
//	}
//	m, err := slave.NewManager(slave.Config{
//		Notifier: &notify.Mail{FromAddr: "buildbot@example.com", RelayHost: "smtp.example.com:25"},
//	}, bot)
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer m.Close()
//
//	// A transport authenticates each login and attaches the connection:
//	//   m.Login(ctx, name, proof, remoteAddr); m.Attach(ctx, name, conn)
//
//	build, err := m.Acquire(ctx, "bot-linux") // waits for a free slot
//	if err != nil {
//		return err
//	}
//	defer build.Release()
//	// run remote commands on build.Conn(); build.Context() is cancelled
//	// at once if the slave is lost.
package buildslave
