package libvirt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket"
)

// api is the part of go-libvirt's *libvirt.Libvirt that a Slave uses:
// the libvirt calls it makes, and the connection's state.
type api interface {
	ConnectListAllDomains(needResults int32, flags golibvirt.ConnectListAllDomainsFlags) ([]golibvirt.Domain, uint32, error)
	DomainLookupByName(name string) (golibvirt.Domain, error)
	DomainLookupByUUID(uuid golibvirt.UUID) (golibvirt.Domain, error)
	DomainGetXMLDesc(dom golibvirt.Domain, flags golibvirt.DomainXMLFlags) (string, error)
	DomainGetState(dom golibvirt.Domain, flags uint32) (state int32, reason int32, err error)
	DomainGetMetadata(dom golibvirt.Domain, typ int32, uri golibvirt.OptString, flags golibvirt.DomainModificationImpact) (string, error)
	DomainCreateXML(xml string, flags golibvirt.DomainCreateFlags) (golibvirt.Domain, error)
	DomainShutdown(dom golibvirt.Domain) error
	DomainDestroy(dom golibvirt.Domain) error

	ConnectListAllStoragePools(needResults int32, flags golibvirt.ConnectListAllStoragePoolsFlags) ([]golibvirt.StoragePool, uint32, error)
	StoragePoolGetXMLDesc(pool golibvirt.StoragePool, flags golibvirt.StorageXMLFlags) (string, error)
	StoragePoolRefresh(pool golibvirt.StoragePool, flags uint32) error
	StorageVolLookupByPath(path string) (golibvirt.StorageVol, error)
	StorageVolGetXMLDesc(vol golibvirt.StorageVol, flags uint32) (string, error)
	StorageVolCreateXML(pool golibvirt.StoragePool, xml string, flags golibvirt.StorageVolCreateFlags) (golibvirt.StorageVol, error)
	StorageVolDelete(vol golibvirt.StorageVol, flags golibvirt.StorageVolDeleteFlags) error

	Disconnected() <-chan struct{}
	Disconnect() error
}

var _ api = (*golibvirt.Libvirt)(nil)

// ErrConnectionLost is wrapped by the error of an operation that failed
// because the connection to libvirtd broke while it was under way. The
// next operation reconnects.
var ErrConnectionLost = errors.New("connection to libvirtd lost")

// ErrClosed is returned by operations on a closed Slave.
var ErrClosed = errors.New("libvirt slave closed")

// Back-off between attempts to (re)connect to libvirtd.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// conn is a connection to libvirtd that is dialled on first use and
// re-dialled, with back-off, after it breaks. One caller dials at a time.
type conn struct {
	uri  string
	dial func() (api, error)

	turn chan struct{} // holds a token while a caller gets or dials the client

	mu     sync.Mutex
	client api
	closed bool
}

func newConn(uri string, d socket.Dialer) *conn {
	return &conn{
		uri: uri,
		dial: func() (api, error) {
			l := golibvirt.NewWithDialer(d)
			if err := l.ConnectToURI(golibvirt.ConnectURI(uri)); err != nil {
				return nil, err
			}
			return l, nil
		},
		turn: make(chan struct{}, 1),
	}
}

func connected(c api) bool {
	select {
	case <-c.Disconnected():
		return false
	default:
		return true
	}
}

// get returns a connected client, dialling with back-off until ctx is done.
func (c *conn) get(ctx context.Context) (api, error) {
	select {
	case c.turn <- struct{}{}:
		defer func() { <-c.turn }()
	case <-ctx.Done():
		return nil, fmt.Errorf("connecting to %s: %w", c.uri, ctx.Err())
	}
	delay := minBackoff
	for {
		c.mu.Lock()
		cur, closed := c.client, c.closed
		c.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		if cur != nil && connected(cur) {
			return cur, nil
		}
		cl, err := c.dial()
		if err == nil {
			c.mu.Lock()
			closed = c.closed
			if !closed {
				c.client = cl
			}
			c.mu.Unlock()
			if closed {
				cl.Disconnect()
				return nil, ErrClosed
			}
			return cl, nil
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("connecting to %s: %w", c.uri, errors.Join(ctx.Err(), err))
		}
		delay = min(2*delay, maxBackoff)
	}
}

// do runs f with a connected client. When f fails because the connection
// broke, its error wraps ErrConnectionLost.
func (c *conn) do(ctx context.Context, f func(api) error) error {
	cl, err := c.get(ctx)
	if err != nil {
		return err
	}
	err = f(cl)
	if err != nil && (errors.Is(err, golibvirt.ErrInterrupted) || !connected(cl)) {
		return fmt.Errorf("%w: %w", ErrConnectionLost, err)
	}
	return err
}

// close disconnects; later operations fail with ErrClosed.
func (c *conn) close() error {
	c.mu.Lock()
	cl := c.client
	c.client, c.closed = nil, true
	c.mu.Unlock()
	if cl == nil || !connected(cl) {
		return nil
	}
	return cl.Disconnect()
}
