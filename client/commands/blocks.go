package commands

import (
	"errors"
	"fmt"
	"io"
)

var (
	errTruncated   = errors.New("maximum filesize reached")
	errInterrupted = errors.New("interrupted")
)

// isInterrupted says whether the command was asked to stop.
func (j *job) isInterrupted() bool {
	select {
	case <-j.interrupted:
		return true
	default:
	}
	return false
}

// copyBlocks moves data from read to write in blocks of at most blocksize
// bytes, at most maxsize bytes in all (maxsize < 0: no limit), until read
// returns no data. It returns errTruncated if there was more than maxsize
// and errInterrupted if the command was interrupted between blocks.
func copyBlocks(j *job, maxsize int64, blocksize int, read func(n int) ([]byte, error), write func([]byte) error) error {
	for remaining := maxsize; ; {
		if j.isInterrupted() {
			return errInterrupted
		}
		n := int64(blocksize)
		if remaining >= 0 && remaining < n {
			n = remaining
		}
		if n == 0 { // the limit is reached: is there more?
			data, err := read(1)
			if err == nil && len(data) > 0 {
				err = errTruncated
			}
			return err
		}
		data, err := read(int(n))
		if err != nil || len(data) == 0 {
			return err
		}
		if len(data) > int(n) {
			return fmt.Errorf("the master sent %d bytes for a read of %d", len(data), n)
		}
		if err := write(data); err != nil {
			return err
		}
		remaining -= int64(len(data))
	}
}

// readBlocks adapts r for copyBlocks, reading into one reused buffer.
func readBlocks(r io.Reader, blocksize int) func(n int) ([]byte, error) {
	buf := make([]byte, blocksize)
	return func(n int) ([]byte, error) {
		k, err := io.ReadFull(r, buf[:n])
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = nil
		}
		return buf[:k], err
	}
}
