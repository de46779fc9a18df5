package commands

import (
	"context"
	"os"
)

// copyTree copies from to to within the slave, as the stock slave does on
// Windows (shutil.copytree): to must not exist yet, and a symbolic link in
// the tree fails the copy. p's timeouts do not apply.
func copyTree(p *process, from, to string) (runner, error) {
	return &treeCopy{from: from, to: to, dir: p.dir}, nil
}

// treeCopy is "cpdir" on Windows.
type treeCopy struct{ from, to, dir string }

func (c *treeCopy) run(_ context.Context, j *job) error {
	j.out.header("copying %s to %s\n", c.from, c.to)
	rc := 0
	err := os.MkdirAll(c.dir, 0o777)
	if err == nil {
		if _, err = os.Stat(c.to); err == nil {
			err = &os.PathError{Op: "cpdir", Path: c.to, Err: os.ErrExist}
		} else if os.IsNotExist(err) {
			err = os.CopyFS(c.to, os.DirFS(c.from))
		}
	}
	if err != nil {
		j.out.header("cpdir: %v\n", err)
		rc = 1
	}
	j.out.send("rc", rc)
	return nil
}
