package remote

import (
	"fmt"
	"strings"

	"github.com/buildslave/buildslave/slave"
)

// ParseInfo reads what a slave reports about itself (msgpack's
// get_worker_info, PB's getWorkerInfo) into a slave.Info. Equal command
// and extra maps are shared between slaves: never modify them.
func ParseInfo(result any) (slave.Info, error) {
	m, ok := result.(map[string]any)
	if !ok {
		return slave.Info{}, fmt.Errorf("worker info is %T, want a map", result)
	}
	info := slave.Info{Extra: map[string]string{}}
	for k, v := range m {
		switch k {
		case "numcpus":
			n, _ := v.(int64)
			info.NumCPUs = int(n)
		case "worker_commands":
			cmds, _ := v.(map[string]any)
			info.Commands = make(map[string]string, len(cmds))
			for name, ver := range cmds {
				info.Commands[name] = fmt.Sprint(ver)
			}
		}
		s, ok := v.(string)
		if !ok {
			continue // environ and other structured fields are not kept
		}
		switch k {
		case "admin":
			info.Admin = strings.TrimSpace(s)
		case "host":
			info.Host = strings.TrimSpace(s)
		case "access_uri":
			info.Access = strings.TrimSpace(s)
		case "os_pretty_name":
			info.OS = s
		case "version":
			info.Version = s
		case "basedir":
			info.Basedir = s
		default:
			info.Extra[k] = s
		}
	}
	info.Commands = shared.intern(info.Commands)
	info.Extra = shared.intern(info.Extra)
	return info, nil
}
