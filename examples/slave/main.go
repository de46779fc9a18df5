// Command slave is a Go build slave for a Buildbot-compatible master, over Perspective Broker or msgpack_experimental_v7, on Linux, macOS, FreeBSD and Windows.
//
// Usage:
//
//	BUILDSLAVE_PASSWORD=secret slave -master 127.0.0.1:9989 -name bot-linux -basedir /var/lib/slave
//
// Every flag can also come from the environment (BUILDSLAVE_MASTER,
// BUILDSLAVE_PROTOCOL, BUILDSLAVE_NAME, BUILDSLAVE_PASSWORD, BUILDSLAVE_BASEDIR, BUILDSLAVE_TLS,
// BUILDSLAVE_CA, BUILDSLAVE_MAX_REFUSALS); flags win. -master takes several
// masters separated by commas (a:9989,b:9989): the slave moves on to the
// next one when its connection is lost or a dial fails. See README.md.
package main

import (
	"os"

	"github.com/buildslave/buildslave/client/slavecmd"
)

func main() { os.Exit(slavecmd.Run(os.Args[1:], os.Stderr)) }
