package main

// latentKind is the driver kind ("local", "ec2", "libvirt", "docker") of the named
// latent slave in the configuration applied last, which labels the gauge
// of running latent instances; "" if it is not a latent slave.
func (m *master) latentKind(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range m.cfg.Latents {
		if l.Name == name {
			return l.Entry.Kind
		}
	}
	return ""
}
