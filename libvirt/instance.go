package libvirt

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/buildslave/buildslave/latent"
)

// cleanupTimeout bounds the removal of what a failed Start made; it runs
// even when the Start's context is done.
const cleanupTimeout = time.Minute

// pollInterval is how often Stop looks whether a guest has shut down.
const pollInterval = 250 * time.Millisecond

// Start starts the slave's domain: it clones base_image into hd_image when
// a base image is configured, points the domain's first disk at hd_image,
// tags the domain with req's master and slave (libvirt <metadata> in
// Namespace), hands the guest its name and req's password (see
// EnvDelivery) and creates the domain from that definition. A predefined
// domain keeps its persistent definition: only the started instance is
// changed. Start refuses a domain that is already running and, when it
// fails, leaves nothing behind.
func (s *Slave) Start(ctx context.Context, req latent.StartRequest) (latent.Instance, error) {
	name := s.slave.Name()
	fail := func(err error) (latent.Instance, error) {
		return latent.Instance{}, fmt.Errorf("libvirt: starting %s: %w", name, err)
	}
	switch {
	case req.Name != name:
		return fail(fmt.Errorf("the request is for slave %q", req.Name))
	case req.Password == "":
		return fail(errors.New("the request has no password"))
	case req.MasterID == "":
		return fail(errors.New("the request has no master id"))
	}
	dom, err := s.definition(ctx)
	if err != nil {
		return fail(err)
	}
	started := time.Now()
	format, clone := "", ""
	if s.baseImage != "" {
		format, clone = "qcow2", s.hdImage
	}
	t := newTag(req, started, clone)
	if clone != "" {
		if err := s.makeClone(ctx); err != nil {
			return fail(errors.Join(fmt.Errorf("cloning base_image: %w", err), s.abandon(ctx, t)))
		}
	}
	env := append([]string{"BUILDSLAVE_NAME=" + name, "BUILDSLAVE_PASSWORD=" + req.Password}, s.guestEnv...)
	if err := s.prepare(dom, s.hdImage, format, t, env); err != nil {
		return fail(errors.Join(err, s.abandon(ctx, t)))
	}
	doc, err := dom.Marshal()
	if err != nil {
		return fail(errors.Join(err, s.abandon(ctx, t)))
	}
	var created golibvirt.Domain
	err = s.conn.do(ctx, func(cl api) (err error) {
		created, err = cl.DomainCreateXML(doc, golibvirt.DomainNone)
		return err
	})
	if err != nil {
		return fail(errors.Join(err, s.abandon(ctx, t)))
	}
	return latent.Instance{ID: uuidString(created.UUID), Slave: name, MasterID: req.MasterID, Started: started}, nil
}

// definition returns the definition to start: the XML option's, or the
// predefined domain's persistent one. A domain of that name that is
// running already is refused: nobody started it for this build, and its
// disk must not be cloned over.
func (s *Slave) definition(ctx context.Context) (*libvirtxml.Domain, error) {
	name := s.slave.Name()
	doc := s.xml
	err := s.conn.do(ctx, func(cl api) error {
		d, err := cl.DomainLookupByName(name)
		switch {
		case golibvirt.IsNotFound(err) && s.xml != "":
			return nil
		case golibvirt.IsNotFound(err):
			return fmt.Errorf("no domain %q is defined and no xml was given: %w", name, err)
		case err != nil:
			return err
		}
		state, reason, err := cl.DomainGetState(d, 0)
		if err != nil {
			return err
		}
		if golibvirt.DomainState(state) != golibvirt.DomainShutoff {
			return fmt.Errorf("domain %q is already %s; it was not started for this build, so it is left alone", name, describeState(state, reason))
		}
		if s.xml != "" {
			return nil // libvirt decides whether the xml may start under this name
		}
		doc, err = cl.DomainGetXMLDesc(d, golibvirt.DomainXMLInactive|golibvirt.DomainXMLSecure)
		return err
	})
	if err != nil {
		return nil, err
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(doc); err != nil {
		return nil, fmt.Errorf("reading the domain definition: %w", err)
	}
	return &dom, nil
}

// abandon removes what a failed Start made: a domain of ours created
// although the call failed (its reply lost with the connection), and the
// clone. It reconnects when it has to, within cleanupTimeout.
func (s *Slave) abandon(ctx context.Context, t tag) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	var made *golibvirt.Domain
	err := s.conn.do(ctx, func(cl api) error {
		d, err := cl.DomainLookupByName(s.slave.Name())
		if golibvirt.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		got, ours, err := tagOf(cl, d)
		if ours && got.Master == t.Master && got.Started == t.Started {
			made = &d
		}
		return err
	})
	if made != nil {
		err = errors.Join(err, s.destroy(ctx, *made))
	}
	if t.Clone != "" {
		err = errors.Join(err, s.removeClone(ctx, t.Clone))
	}
	if err != nil {
		return fmt.Errorf("cleaning up: %w", err)
	}
	return nil
}

// Stop stops the domain of inst, after a graceful shutdown when
// ShutdownTimeout is set, and deletes its disk clone. A transient domain
// vanishes; a predefined one is left shut off with its own definition.
// Stop refuses a running domain that carries no tag of inst's master, and
// leaves alone a later instance of the same domain (another start time in
// its tag) and the clone that instance boots.
func (s *Slave) Stop(ctx context.Context, inst latent.Instance) error {
	fail := func(err error) error { return fmt.Errorf("libvirt: stopping %s (%s): %w", inst.Slave, inst.ID, err) }
	id, err := parseUUID(inst.ID)
	if err != nil {
		return fail(err)
	}
	var (
		dom     golibvirt.Domain
		t       tag
		running bool
	)
	err = s.conn.do(ctx, func(cl api) error {
		d, active, err := lookupActive(cl, func() (golibvirt.Domain, error) { return cl.DomainLookupByUUID(id) })
		if err != nil {
			return err
		}
		if active {
			var ours bool
			t, ours, err = tagOf(cl, d)
			switch {
			case err != nil:
				return err
			case !ours:
				return fmt.Errorf("domain %q carries no buildslave tag: it is not ours, so it is left alone", d.Name)
			case t.Master != inst.MasterID:
				return fmt.Errorf("domain %q is tagged for master %q, not %q: it is left alone", d.Name, t.Master, inst.MasterID)
			case inst.Started.IsZero() || t.startedAt().Equal(inst.Started):
				dom, running = d, true
				return nil
			}
		}
		// inst is gone. Its clone, if it had one, is this slave's
		// hd_image, unless a later instance boots it.
		t = tag{}
		if inst.Slave != s.slave.Name() || s.baseImage == "" {
			return nil
		}
		_, busy, err := lookupActive(cl, func() (golibvirt.Domain, error) { return cl.DomainLookupByName(inst.Slave) })
		if !busy {
			t.Clone = s.hdImage
		}
		return err
	})
	if err != nil {
		return fail(err)
	}
	if running {
		if err := s.halt(ctx, dom); err != nil {
			return fail(err)
		}
	}
	if t.Clone != "" {
		if err := s.removeClone(ctx, t.Clone); err != nil {
			return fail(fmt.Errorf("removing the clone %s: %w", t.Clone, err))
		}
	}
	return nil
}

// lookupActive looks a domain up and tells whether it exists and is not
// shut off.
func lookupActive(cl api, lookup func() (golibvirt.Domain, error)) (golibvirt.Domain, bool, error) {
	d, err := lookup()
	if golibvirt.IsNotFound(err) {
		return d, false, nil
	}
	if err != nil {
		return d, false, err
	}
	state, _, err := cl.DomainGetState(d, 0)
	if golibvirt.IsNotFound(err) {
		return d, false, nil
	}
	return d, err == nil && golibvirt.DomainState(state) != golibvirt.DomainShutoff, err
}

// halt asks the guest to shut down when ShutdownTimeout is set, waits
// that long for it, and destroys the domain.
func (s *Slave) halt(ctx context.Context, dom golibvirt.Domain) error {
	if s.shutdownTimeout > 0 {
		wait, cancel := context.WithTimeout(ctx, s.shutdownTimeout)
		defer cancel()
		err := s.conn.do(wait, func(cl api) error { return cl.DomainShutdown(dom) })
		for err == nil {
			var off bool
			err = s.conn.do(wait, func(cl api) error {
				state, _, err := cl.DomainGetState(dom, 0)
				off = golibvirt.IsNotFound(err) || err == nil && golibvirt.DomainState(state) == golibvirt.DomainShutoff
				if off {
					return nil
				}
				return err
			})
			if off {
				return nil
			}
			t := time.NewTimer(pollInterval)
			select {
			case <-t.C:
			case <-wait.Done():
				t.Stop()
				err = wait.Err()
			}
		}
		// Whatever kept the guest from shutting down, destroy it.
	}
	return s.destroy(ctx, dom)
}

// destroy destroys dom; one that is gone or shut off already is no error.
func (s *Slave) destroy(ctx context.Context, dom golibvirt.Domain) error {
	return s.conn.do(ctx, func(cl api) error {
		err := cl.DomainDestroy(dom)
		if golibvirt.IsNotFound(err) || isErr(err, golibvirt.ErrOperationInvalid) {
			return nil
		}
		return err
	})
}

// List returns the running domains tagged with masterID, of any slave.
// Domains without the tag are never listed. When some domains cannot be
// read, List returns the others and the errors joined.
func (s *Slave) List(ctx context.Context, masterID string) ([]latent.Instance, error) {
	var (
		out  []latent.Instance
		errs []error
	)
	err := s.conn.do(ctx, func(cl api) error {
		doms, _, err := cl.ConnectListAllDomains(1, golibvirt.ConnectListDomainsActive)
		if err != nil {
			return err
		}
		for _, d := range doms {
			t, ours, err := tagOf(cl, d)
			switch {
			case golibvirt.IsNotFound(err): // stopped meanwhile
			case err != nil:
				errs = append(errs, fmt.Errorf("domain %s: %w", d.Name, err))
			case ours && t.Master == masterID:
				out = append(out, latent.Instance{ID: uuidString(d.UUID), Slave: t.Slave, MasterID: t.Master, Started: t.startedAt()})
			}
		}
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("libvirt: listing domains: %w", err)
	}
	if err := errors.Join(errs...); err != nil {
		return out, fmt.Errorf("libvirt: listing domains: %w", err)
	}
	return out, nil
}

// Check returns nil while inst's domain runs, and an error with libvirt's
// state and reason once it has stopped. A transient domain vanishes when
// its QEMU exits: then the error is libvirt's "not found", and the reason
// is in the domain's log on the libvirt host
// (/var/log/libvirt/qemu/NAME.log).
func (s *Slave) Check(ctx context.Context, inst latent.Instance) error {
	id, err := parseUUID(inst.ID)
	if err == nil {
		err = s.conn.do(ctx, func(cl api) error {
			d, err := cl.DomainLookupByUUID(id)
			if golibvirt.IsNotFound(err) {
				return fmt.Errorf("the domain is gone: it stopped on its own (guest power-off or QEMU exit): %w", err)
			}
			if err != nil {
				return err
			}
			state, reason, err := cl.DomainGetState(d, 0)
			if err != nil {
				return err
			}
			switch golibvirt.DomainState(state) {
			case golibvirt.DomainShutdown, golibvirt.DomainShutoff, golibvirt.DomainCrashed:
				return fmt.Errorf("the domain is %s", describeState(state, reason))
			}
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("libvirt: checking %s (%s): %w", inst.Slave, inst.ID, err)
	}
	return nil
}

// tagOf reads dom's buildslave tag; ours is false when it has none.
func tagOf(cl api, dom golibvirt.Domain) (t tag, ours bool, err error) {
	md, err := cl.DomainGetMetadata(dom, int32(golibvirt.DomainMetadataElement), golibvirt.OptString{Namespace}, 0)
	if isErr(err, golibvirt.ErrNoDomainMetadata) {
		return tag{}, false, nil
	}
	if err != nil {
		return tag{}, false, err
	}
	t, err = parseTag(md)
	return t, err == nil, err
}

// describeState renders a libvirt state and reason as "shutoff (crashed)".
func describeState(state, reason int32) string {
	st := golibvirt.DomainState(state)
	var r fmt.Stringer
	switch st {
	case golibvirt.DomainRunning:
		r = golibvirt.DomainRunningReason(reason)
	case golibvirt.DomainBlocked:
		r = golibvirt.DomainBlockedReason(reason)
	case golibvirt.DomainPaused:
		r = golibvirt.DomainPausedReason(reason)
	case golibvirt.DomainShutdown:
		r = golibvirt.DomainShutdownReason(reason)
	case golibvirt.DomainShutoff:
		r = golibvirt.DomainShutoffReason(reason)
	case golibvirt.DomainCrashed:
		r = golibvirt.DomainCrashedReason(reason)
	case golibvirt.DomainPmsuspended:
		r = golibvirt.DomainPMSuspendedReason(reason)
	default:
		r = golibvirt.DomainNostateReason(reason)
	}
	return strings.ToLower(strings.TrimPrefix(st.String(), "Domain") + " (" + strings.TrimPrefix(r.String(), st.String()) + ")")
}

func uuidString(u golibvirt.UUID) string {
	h := hex.EncodeToString(u[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func parseUUID(s string) (golibvirt.UUID, error) {
	var u golibvirt.UUID
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != len(u) {
		return u, fmt.Errorf("instance id %q is not a domain UUID", s)
	}
	copy(u[:], b)
	return u, nil
}
