//go:build unix

package commands

import "os"

// copyTree makes p copy from to to with cp -R -P -p -v, as the stock slave
// does on POSIX systems, so its output shows in the log.
func copyTree(p *process, from, to string) (runner, error) {
	if err := p.setCommand([]any{"cp", "-R", "-P", "-p", "-v", from, to}); err != nil {
		return nil, err
	}
	var err error
	p.env, err = childEnv(os.Environ(), nil, p.dir)
	return p, err
}
