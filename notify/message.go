package notify

import (
	"fmt"
	"strings"
	"time"
)

// timeLayout formats times in the location they carry, normally the
// master's local time.
const timeLayout = "2006-01-02 15:04:05 MST"

// Subject returns the one-line subject of the missing-slave message: the
// slave's name and how long before Detected it was last connected, or that
// it never was.
func (m Missing) Subject() string {
	if m.LastConnected.IsZero() {
		return fmt.Sprintf("buildslave %s is missing: never connected", m.Slave)
	}
	return fmt.Sprintf("buildslave %s is missing: last connected %s ago", m.Slave, m.ago())
}

// Body returns the plain-text missing-slave message: the slave's name, when
// it was last connected and how long before Detected, when it was found
// missing, and the admin and host it reported.
func (m Missing) Body() string {
	var b strings.Builder
	fmt.Fprintf(&b, "The buildslave %q has gone missing.\n\n", m.Slave)
	field := func(name, value string) {
		const indent = "                " // len("Last connected: ")
		value = strings.TrimSpace(value)
		if value == "" {
			value = "(not reported)"
		}
		fmt.Fprintf(&b, "%-*s%s\n", len(indent), name+":", strings.ReplaceAll(value, "\n", "\n"+indent))
	}
	field("Slave", m.Slave)
	if m.LastConnected.IsZero() {
		field("Last connected", "never")
	} else {
		field("Last connected", fmt.Sprintf("%s (%s ago)", m.LastConnected.Format(timeLayout), m.ago()))
	}
	field("Detected", m.detected().Format(timeLayout))
	field("Admin", m.Admin)
	field("Host", m.Host)
	return b.String()
}

// detected returns Detected, or now if it is zero.
func (m Missing) detected() time.Time {
	if m.Detected.IsZero() {
		return time.Now()
	}
	return m.Detected
}

// ago returns how long before detection the slave was last connected.
func (m Missing) ago() time.Duration {
	return m.detected().Sub(m.LastConnected).Round(time.Second)
}
