//go:build linux

package idle

import (
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// poller is the process's epoll instance for parked connections, and the
// Watchers registered with it by id (the id, not the file descriptor,
// travels with an event: a descriptor number is reused once closed).
type poller struct {
	epfd int

	mu       sync.Mutex
	lastID   uint64
	watchers map[uint64]*Watcher
}

// thePoller is started by the first Watch; nil if epoll is not available.
var thePoller = sync.OnceValue(startPoller)

// startPoller creates the epoll instance and the goroutine that waits on
// it through the runtime's network poller (an epoll descriptor is
// readable while events are ready), so that it holds no thread.
func startPoller() *poller {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil
	}
	rc, err := os.NewFile(uintptr(fd), "idle-epoll").SyscallConn()
	if err != nil {
		return nil
	}
	p := &poller{epfd: fd, watchers: map[uint64]*Watcher{}}
	go p.run(rc)
	return p
}

// run resumes the Watchers whose sockets are ready, for good.
func (p *poller) run(rc syscall.RawConn) {
	events := make([]syscall.EpollEvent, 256)
	rc.Read(func(fd uintptr) bool {
		for {
			n, err := syscall.EpollWait(int(fd), events, 0)
			switch {
			case err == syscall.EINTR:
				continue
			case err != nil:
				return true // cannot happen on a descriptor never closed
			case n == 0:
				return false // wait until it is readable again
			}
			p.resume(events[:n])
		}
	})
}

func (p *poller) resume(events []syscall.EpollEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range events {
		if w := p.watchers[uint64(uint32(e.Fd))|uint64(uint32(e.Pad))<<32]; w != nil {
			w.fire()
		}
	}
}

// fdWatch is a socket's registration: armed for one event at a time
// (EPOLLONESHOT), level-triggered, so that bytes already there when it is
// armed count.
type fdWatch struct {
	p  *poller
	rc syscall.RawConn
	id uint64
	// added is set once the socket is in the epoll set: before the
	// event that may resume another goroutine, which then arms with it.
	added atomic.Bool
}

func (f *fdWatch) init(c net.Conn, w *Watcher) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	if f.p = thePoller(); f.p == nil {
		return false
	}
	f.rc = rc
	f.p.mu.Lock()
	f.p.lastID++
	f.id = f.p.lastID
	f.p.watchers[f.id] = w
	f.p.mu.Unlock()
	return true
}

// arm registers the socket for its next event; false if it could not (the
// connection is closed).
func (f *fdWatch) arm() bool {
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd:     int32(uint32(f.id)),
		Pad:    int32(uint32(f.id >> 32)),
	}
	var err error
	// Control keeps the descriptor open while it runs: a concurrent Close
	// cannot have it reused under us.
	cerr := f.rc.Control(func(fd uintptr) {
		if f.added.Swap(true) {
			err = syscall.EpollCtl(f.p.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
			return
		}
		if err = syscall.EpollCtl(f.p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
			f.added.Store(false)
		}
	})
	return cerr == nil && err == nil
}

// forget drops the Watcher from the poller; closing the socket took it out
// of the epoll set.
func (f *fdWatch) forget() {
	f.p.mu.Lock()
	delete(f.p.watchers, f.id)
	f.p.mu.Unlock()
}
