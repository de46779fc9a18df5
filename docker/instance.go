package docker

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/buildslave/buildslave/latent"
)

// Start creates and starts a fresh container for req and returns once it
// runs (not once its slave has attached). On any error it removes what it
// created.
func (s *Slave) Start(ctx context.Context, req latent.StartRequest) (inst latent.Instance, err error) {
	cli, err := s.client()
	if err != nil {
		return latent.Instance{}, err
	}
	if err := s.ensureImage(ctx, cli); err != nil {
		return latent.Instance{}, err
	}
	name := containerName(req.Name, req.MasterID)
	if err := s.removeLeftover(ctx, cli, name, req); err != nil {
		return latent.Instance{}, err
	}
	started := time.Now()
	stamp := started.UTC().Format(time.RFC3339Nano)
	created, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: name,
		Config: &container.Config{
			Image:    s.cfg.image,
			Cmd:      s.cfg.command,
			Hostname: s.cfg.hostname,
			Env:      s.env(req),
			Labels: map[string]string{
				LabelMaster:  req.MasterID,
				LabelSlave:   req.Name,
				LabelStarted: stamp,
			},
		},
		HostConfig: s.cfg.hostConfig.api(s.cfg.volumes),
	})
	if err != nil {
		err = fmt.Errorf("docker: creating container %s from %s: %w", name, s.cfg.image, err)
		if ctx.Err() != nil {
			// We gave up waiting, but the daemon may have made it.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if res, ierr := cli.ContainerInspect(rctx, name, client.ContainerInspectOptions{}); ierr == nil && labels(res.Container)[LabelStarted] == stamp {
				if rerr := s.remove(rctx, cli, res.Container.ID); rerr != nil {
					err = errors.Join(err, fmt.Errorf("docker: removing container %s: %w", shortID(res.Container.ID), rerr))
				}
			}
		}
		return latent.Instance{}, err
	}
	inst = latent.Instance{ID: created.ID, Slave: req.Name, MasterID: req.MasterID, Started: started}
	defer func() {
		if err != nil {
			// Never leave a container behind, even when ctx has ended.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if rerr := s.remove(rctx, cli, inst.ID); rerr != nil {
				err = errors.Join(err, fmt.Errorf("docker: removing container %s: %w", shortID(inst.ID), rerr))
			}
		}
	}()
	for _, w := range created.Warnings {
		s.log.Warn("docker: creating the container", "container", shortID(inst.ID), "warning", w)
	}
	if _, err := cli.ContainerStart(ctx, inst.ID, client.ContainerStartOptions{}); err != nil {
		return inst, fmt.Errorf("docker: starting container %s: %w", shortID(inst.ID), err)
	}
	if s.cfg.followStartupLogs {
		s.follow(cli, inst.ID)
	}
	return inst, nil
}

// env is the container's environment: Buildbot's names, then ours.
func (s *Slave) env(req latent.StartRequest) []string {
	return []string{
		"BUILDMASTER=" + s.masterHost,
		"BUILDMASTER_PORT=" + s.masterPort,
		"WORKERNAME=" + req.Name,
		"WORKERPASS=" + req.Password,
		"BUILDSLAVE_MASTER=" + joinHostPort(s.masterHost, s.masterPort),
		"BUILDSLAVE_NAME=" + req.Name,
		"BUILDSLAVE_PASSWORD=" + req.Password,
	}
}

func joinHostPort(host, port string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + port
	}
	return host + ":" + port
}

// ensureImage makes sure the Docker host has the image: it builds it
// from the dockerfile when missing; with autopull, it pulls it when
// missing (or always, with alwaysPull). Concurrent starts of one image on
// one Docker host share the build or pull.
func (s *Slave) ensureImage(ctx context.Context, cli *client.Client) error {
	_, err := cli.ImageInspect(ctx, s.cfg.image)
	have := err == nil
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("docker: inspecting image %s: %w", s.cfg.image, err)
	}
	var verb string
	var work func(context.Context) error
	switch {
	case !have && s.cfg.dockerfile != "":
		verb, work = "building", func(ctx context.Context) error { return s.build(ctx, cli) }
	case s.cfg.autopull && (!have || s.cfg.alwaysPull):
		verb, work = "pulling", func(ctx context.Context) error { return s.pull(ctx, cli) }
	case have:
		return nil
	default:
		return fmt.Errorf("docker: image %q not found on the Docker host, and autopull is off", s.cfg.image)
	}
	ch := imageWork.DoChan(verb+"\x00"+cli.DaemonHost()+"\x00"+s.cfg.image, func() (any, error) {
		// The work outlives one caller's ctx: others may share it.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Minute)
		defer cancel()
		s.log.Info("docker: "+verb+" image", "image", s.cfg.image)
		return nil, work(wctx)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return fmt.Errorf("docker: %s image %s: %w", verb, s.cfg.image, r.Err)
		}
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (s *Slave) pull(ctx context.Context, cli *client.Client) error {
	resp, err := cli.ImagePull(ctx, s.cfg.image, client.ImagePullOptions{})
	if err != nil {
		return err
	}
	defer resp.Close()
	return resp.Wait(ctx)
}

// build builds the image from the dockerfile (or the custom context) and
// tags it.
func (s *Slave) build(ctx context.Context, cli *client.Client) error {
	var buildContext io.Reader
	if s.cfg.customContext {
		f, err := os.Open(s.cfg.dockerfile)
		if err != nil {
			return err
		}
		defer f.Close()
		buildContext = f
	} else {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		if err := tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(s.cfg.dockerfile))}); err != nil {
			return err
		}
		if _, err := io.WriteString(tw, s.cfg.dockerfile); err != nil {
			return err
		}
		if err := tw.Close(); err != nil {
			return err
		}
		buildContext = &buf
	}
	var args map[string]*string
	for k, v := range s.cfg.buildArgs {
		if args == nil {
			args = make(map[string]*string)
		}
		args[k] = &v
	}
	res, err := cli.ImageBuild(ctx, buildContext, client.ImageBuildOptions{
		Tags:        []string{s.cfg.image},
		BuildArgs:   args,
		Target:      s.cfg.target,
		PullParent:  s.cfg.alwaysPull,
		Remove:      true,
		ForceRemove: true,
	})
	if err != nil {
		return err
	}
	defer res.Body.Close()
	out, err := readBuildStream(res.Body)
	if err != nil {
		return fmt.Errorf("%w; the build's last output:\n%s", err, lastLines(out, LogTailLines))
	}
	return nil
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// removeLeftover removes a container of ours that has the name a new one
// needs: left by a stop that failed, or by a crashed master the reaper
// has not reached yet. A container of that name that is not ours is an
// error.
func (s *Slave) removeLeftover(ctx context.Context, cli *client.Client, name string, req latent.StartRequest) error {
	res, err := cli.ContainerInspect(ctx, name, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("docker: inspecting container %s: %w", name, err)
	}
	c := res.Container
	if c.Config == nil || c.Config.Labels[LabelMaster] != req.MasterID || c.Config.Labels[LabelSlave] != req.Name {
		return fmt.Errorf("docker: a container named %s exists and is not ours (no %s=%s label); remove it", name, LabelMaster, req.MasterID)
	}
	s.log.Info("docker: removing a leftover container", "container", shortID(c.ID))
	return s.remove(ctx, cli, c.ID)
}

// remove kills and removes a container with its anonymous volumes; a
// container already gone is not an error.
func (s *Slave) remove(ctx context.Context, cli *client.Client, id string) error {
	s.unfollow(id)
	_, err := cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err == nil || cerrdefs.IsNotFound(err) {
		return nil
	}
	// A removal already under way (by the daemon or another caller) ends
	// the same way.
	if cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress") {
		return nil
	}
	return err
}

// Stop kills and removes the container and its anonymous volumes (named
// volumes and bind mounts stay). A container already gone is not an
// error; one without this master's label is refused.
func (s *Slave) Stop(ctx context.Context, inst latent.Instance) error {
	cli, err := s.client()
	if err != nil {
		return err
	}
	res, err := cli.ContainerInspect(ctx, inst.ID, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		s.unfollow(inst.ID)
		return nil
	}
	if err != nil {
		return fmt.Errorf("docker: inspecting container %s: %w", shortID(inst.ID), err)
	}
	if l := labels(res.Container); l[LabelMaster] != inst.MasterID || l[LabelSlave] != inst.Slave {
		return fmt.Errorf("docker: container %s is not ours: labels %s=%q %s=%q, want %q %q",
			shortID(inst.ID), LabelMaster, l[LabelMaster], LabelSlave, l[LabelSlave], inst.MasterID, inst.Slave)
	}
	if err := s.remove(ctx, cli, inst.ID); err != nil {
		return fmt.Errorf("docker: removing container %s: %w", shortID(inst.ID), err)
	}
	return nil
}

// List returns the containers labelled with masterID on this Slave's
// Docker host, of any slave, running or not (a container exists until
// Stop removes it).
func (s *Slave) List(ctx context.Context, masterID string) ([]latent.Instance, error) {
	cli, err := s.client()
	if err != nil {
		return nil, err
	}
	res, err := cli.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", LabelMaster+"="+masterID),
	})
	if err != nil {
		return nil, fmt.Errorf("docker: listing containers: %w", err)
	}
	out := make([]latent.Instance, 0, len(res.Items))
	for _, c := range res.Items {
		if c.Labels[LabelMaster] != masterID { // the filter did it; be sure
			continue
		}
		started, err := time.Parse(time.RFC3339Nano, c.Labels[LabelStarted])
		if err != nil {
			started = time.Unix(c.Created, 0)
		}
		out = append(out, latent.Instance{ID: c.ID, Slave: c.Labels[LabelSlave], MasterID: masterID, Started: started})
	}
	return out, nil
}

// Check returns nil while the container is created, running or
// restarting, and an error with its exit code and last log lines once it
// has exited, or when it is gone.
func (s *Slave) Check(ctx context.Context, inst latent.Instance) error {
	cli, err := s.client()
	if err != nil {
		return err
	}
	res, err := cli.ContainerInspect(ctx, inst.ID, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return fmt.Errorf("docker: container %s is gone", shortID(inst.ID))
	}
	if err != nil {
		return nil // the daemon did not answer: no news about the container
	}
	st := res.Container.State
	if st == nil || st.Status == container.StateCreated || st.Running || st.Restarting || st.Paused {
		return nil
	}
	msg := fmt.Sprintf("docker: container %s %s (exit code %d", shortID(inst.ID), st.Status, st.ExitCode)
	if st.OOMKilled {
		msg += ", killed for want of memory"
	}
	if st.Error != "" {
		msg += ", " + st.Error
	}
	msg += ")"
	if tail := s.tail(ctx, cli, inst.ID); tail != "" {
		msg += "; its last log lines:\n" + tail
	}
	return errors.New(msg)
}

// tail returns a container's last LogTailLines lines of output, or "".
func (s *Slave) tail(ctx context.Context, cli *client.Client, id string) string {
	rc, err := cli.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Tail: fmt.Sprint(LogTailLines)})
	if err != nil {
		return ""
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := stdcopy.StdCopy(&buf, &buf, io.LimitReader(rc, 64<<10)); err != nil && buf.Len() == 0 {
		return ""
	}
	return strings.TrimRight(buf.String(), "\n")
}

// follow logs a container's output, up to StartupLogLines lines, until
// it stops or is removed (followStartupLogs).
func (s *Slave) follow(cli *client.Client, id string) {
	ctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	s.follows[id] = cancel
	s.mu.Unlock()
	s.wg.Go(func() {
		defer s.unfollow(id)
		rc, err := cli.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Follow: true})
		if err != nil {
			return
		}
		defer rc.Close()
		pr, pw := io.Pipe()
		s.wg.Go(func() { // ends with rc (which ctx closes) or pr
			_, err := stdcopy.StdCopy(pw, pw, rc)
			pw.CloseWithError(err)
		})
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		for n := 0; n < StartupLogLines && sc.Scan(); n++ {
			s.log.Info("docker: container output", "container", shortID(id), "line", sc.Text())
		}
	})
}

// unfollow stops following a container's logs.
func (s *Slave) unfollow(id string) {
	s.mu.Lock()
	cancel := s.follows[id]
	delete(s.follows, id)
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

func labels(c container.InspectResponse) map[string]string {
	if c.Config == nil {
		return nil
	}
	return c.Config.Labels
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// jsonError is one line of an image build's or pull's progress stream.
type jsonError struct {
	Stream string `json:"stream"`
	Error  string `json:"error"`
}

// readBuildStream reads an image build's progress until its end and
// returns the build's error, if any, with the output so far.
func readBuildStream(r io.Reader) (string, error) {
	var out strings.Builder
	dec := json.NewDecoder(r)
	for {
		var m jsonError
		if err := dec.Decode(&m); err == io.EOF {
			return out.String(), nil
		} else if err != nil {
			return out.String(), err
		}
		out.WriteString(m.Stream)
		if m.Error != "" {
			return out.String(), errors.New(m.Error)
		}
	}
}
