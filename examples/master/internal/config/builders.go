package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/buildslave/buildslave/examples/master/internal/builds"
)

// builders checks [[builders]]; call it after slaves.
func (c *Config) builders(p *problems, bs []Builder) {
	known := map[string]bool{}
	for _, s := range c.Raw.Slaves {
		known[s.Name] = true
	}
	for _, l := range c.Raw.LatentSlaves {
		known[l.Name] = true
	}
	names := map[string]bool{}
	for i, b := range bs {
		e := p.entry(fmt.Sprintf("builders[%d]", i), b.Name)
		switch {
		case b.Name == "":
			e.add("name", "must not be empty")
		case b.Name == "." || b.Name == ".." || strings.ContainsAny(b.Name, `/\`) || strings.ContainsFunc(b.Name, func(r rune) bool { return r < ' ' }):
			e.add("name", "must not be . or .. or contain a slash or a control character: it names a directory on the slaves")
		case names[b.Name]:
			e.add("name", "%q is the name of an earlier builder", b.Name)
		}
		names[b.Name] = true
		if len(b.Slaves) == 0 {
			e.add("slaves", "must name at least one slave")
		}
		for _, s := range b.Slaves {
			if !known[s] {
				e.add("slaves", "%q is not a slave of [[slaves]] or [[latent_slaves]]", s)
			}
		}
		if len(b.Steps) == 0 {
			e.add("steps", "missing: a builder needs at least one [[builders.steps]]")
		}
		builder := builds.Builder{Name: b.Name, Slaves: b.Slaves}
		for j, s := range b.Steps {
			builder.Steps = append(builder.Steps, step(p.entry(fmt.Sprintf("%s.steps[%d]", e.path, j), s.Name), j, s))
		}
		c.Builders = append(c.Builders, builder)
	}
}

// step checks one [[builders.steps]] entry.
func step(e entry, j int, s Step) builds.Step {
	switch {
	case s.Shell == "" && s.Upload == "":
		e.add("", "give shell (a command) or upload (a file)")
	case s.Shell != "" && s.Upload != "":
		e.add("upload", "give shell or upload, not both")
	case s.Upload != "" && len(s.Env) > 0:
		e.add("env", "only a shell step has an environment")
	case s.Upload == "" && s.MaxUploadSize.raw != nil:
		e.add("max_upload_size", "only an upload step has a max_upload_size")
	}
	name := s.Name
	if name == "" {
		name = fmt.Sprintf("step %d", j+1)
	}
	return builds.Step{Name: name, Shell: s.Shell, Upload: s.Upload, Env: s.Env,
		MaxUploadSize: e.size("max_upload_size", s.MaxUploadSize, 0),
		Timeout:       e.duration("timeout", s.Timeout, builds.DefaultStepTimeout, positive)}
}

// schedules checks [[schedulers]]; call it after builders.
func (c *Config) schedules(p *problems, ss []Scheduler) {
	for i, s := range ss {
		e := p.entry(fmt.Sprintf("schedulers[%d]", i), s.Builder)
		if !slices.ContainsFunc(c.Builders, func(b builds.Builder) bool { return b.Name == s.Builder }) {
			e.add("builder", "%q is not a builder of [[builders]]", s.Builder)
		}
		every := e.duration("periodic", s.Periodic, 0, positive)
		if s.Periodic.raw == nil && !s.AtStart {
			e.add("", "give periodic or at_start = true: this scheduler would never start a build")
		}
		c.Schedules = append(c.Schedules, builds.Schedule{Builder: s.Builder, Every: every, AtStart: s.AtStart})
	}
}
