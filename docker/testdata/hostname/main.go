// Command hostname prints the host name and the working directory's
// entries: the probe the docker tests run as a build step in a FROM
// scratch image, which has no shell.
package main

import (
	"fmt"
	"os"
)

func main() {
	name, err := os.Hostname()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(name)
	entries, _ := os.ReadDir(".")
	for _, e := range entries {
		fmt.Println(e.Name())
	}
}
