package docker_test

import (
	"log"
	"time"

	"github.com/buildslave/buildslave/docker"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/slave"
)

// Example configures Buildbot's
//
//	DockerLatentWorker('docker1', 'pw', docker_host='unix:///var/run/docker.sock',
//	    image='buildslave:latest', masterFQDN='172.17.0.1:9989',
//	    hostconfig={'mem_limit': '2g', 'nano_cpus': 2e9})
//
// and hands it to a Lifecycle: a build that acquires "docker1" gets a
// fresh container, removed after the build.
func Example() {
	d, err := docker.New("docker1", "pw", "unix:///var/run/docker.sock",
		docker.Image("buildslave:latest"),
		docker.MasterFQDN("172.17.0.1:9989"), // the default bridge's gateway
		docker.WithHostConfig(docker.HostConfig{Memory: 2 << 30, CPUs: 2}),
		docker.SlaveOptions(slave.MissingTimeout(2*time.Minute)),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()
	m, err := slave.NewManager(slave.Config{}, d.Slave())
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	lc, err := latent.New(m, latent.Config{MasterID: "master-1"}, d)
	if err != nil {
		log.Fatal(err)
	}
	defer lc.Close()
	// Serve PB on 172.17.0.1:9989 (protocol/pb), then m.Acquire(ctx, "docker1").
}
