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
//   - protocol/pb and protocol: the master side of the two protocols
//     Buildbot slaves speak, Perspective Broker (every slave's default,
//     0.8 buildslaves included) and msgpack over WebSocket; both attach
//     slaves to the same Manager. protocol/remote runs a build's remote
//     commands over either; client is our Go slave.
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
//	// The transports authenticate each login and attach the connection:
//	// PB on Buildbot's port 9989, where every stock slave dials.
//	pbServer := &pb.Server{Manager: m, Builders: []string{"hello"}}
//	go pbServer.ListenAndServe(":9989")
//	defer pbServer.Close()
//
//	build, err := m.Acquire(ctx, "bot-linux") // waits for a free slot
//	if err != nil {
//		return err
//	}
//	defer build.Release()
//	// build.Context() is cancelled at once if the slave is lost.
//	cmd, err := remote.Start(build.Context(), build.Conn(), remote.Request{
//		Name: "shell", Builder: "hello",
//		Args: map[string]any{"workdir": "/var/lib/buildslave/hello/build", "command": "make"}})
//	if err != nil {
//		return err
//	}
//	for u := range cmd.Updates() { // stdout, stderr, rc, ...
//		log.Print(u.Key, u.Text)
//	}
//	return cmd.Wait(build.Context())
package buildslave
