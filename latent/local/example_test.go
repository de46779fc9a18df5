//go:build unix

package local_test

import (
	"fmt"
	"time"

	"github.com/buildslave/buildslave/latent/local"
	"github.com/buildslave/buildslave/slave"
)

// A local latent slave runs examples/slave on the master's machine; hand
// the Driver to latent.New with the manager that has its Slave.
func ExampleNew() {
	s, _ := slave.New("local1", "sekrit", slave.MissingTimeout(time.Minute))
	d, err := local.New(local.Config{
		Slave:            s,
		BuildWaitTimeout: 10 * time.Minute,
		Program:          "/usr/local/bin/slave",
		Master:           "127.0.0.1:9989",
		Basedir:          "/var/lib/buildslave/local1",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(d.Slave().Name(), d.BuildWaitTimeout())
	// Output: local1 10m0s
}
