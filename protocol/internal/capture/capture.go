// Package capture holds the messages of a real session between stock Buildbot 3.7 peers, for tests and fuzz seeds.
package capture

// NewlineRE is the newline regex the stock master sends in set_worker_settings.
const NewlineRE = `(\r\n|\r(?=.)|\033\[u|\033\[[0-9]+;[0-9]+[Hf]|\033\[2J|\x08+)`

// WorkerInfo is the result of get_worker_info from the stock slave (Debian
// 12, buildbot-worker 3.7.0), with its environment cut short.
func WorkerInfo() map[string]any {
	return map[string]any{
		"admin":          "Your Name Here <admin@youraddress.invalid>\n",
		"host":           "Please put a description of this build host here\n",
		"os_pretty_name": "Debian GNU/Linux 12 (bookworm)",
		"os_name":        "Debian GNU/Linux",
		"os_version_id":  "12",
		"os_version":     "12 (bookworm)",
		"os_id":          "debian",
		"environ":        map[string]any{"HOME": "/srv/bb", "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"},
		"system":         "posix",
		"basedir":        "/srv/bb/workers/w1",
		"numcpus":        int64(2),
		"version":        "3.7.0",
		"worker_commands": map[string]any{
			"cpdir": "3.7", "download_file": "3.7", "glob": "3.7", "listdir": "3.7", "mkdir": "3.7",
			"rmdir": "3.7", "rmfile": "3.7", "shell": "3.7", "stat": "3.7", "upload_directory": "3.7",
			"upload_file": "3.7",
		},
		"delete_leftover_dirs": false,
	}
}

// Messages returns the captured messages in order, both directions mixed,
// followed by file-transfer messages in the form the stock slave sends them
// (they are not in the capture).
func Messages() []map[string]any {
	none := map[string]any{"op": "response", "result": nil}
	resp := func(seq int64) map[string]any {
		m := map[string]any{"seq_number": seq}
		for k, v := range none {
			m[k] = v
		}
		return m
	}
	header := "echo hello\n in dir /srv/bb/workers/w1/hello/build (timeout 1200 secs)\n"
	return []map[string]any{
		{"op": "print", "message": "attached", "seq_number": int64(0)},
		resp(0),
		{"op": "get_worker_info", "seq_number": int64(1)},
		{"op": "response", "seq_number": int64(1), "result": WorkerInfo()},
		{"op": "set_worker_settings", "seq_number": int64(2), "args": map[string]any{
			"newline_re": NewlineRE, "max_line_length": int64(4096), "buffer_timeout": int64(5), "buffer_size": int64(65536)}},
		resp(2),
		{"op": "start_command", "command_id": "0", "command_name": "listdir", "seq_number": int64(3),
			"args": map[string]any{"path": "/srv/bb/workers/w1"}},
		{"op": "update", "command_id": "0", "seq_number": int64(0), "args": []any{
			[]any{"files", []any{"buildbot.tac", "twistd.pid", "twistd.hostname", "twistd.log", "info"}},
			[]any{"rc", int64(0)}, []any{"elapsed", 0.00012230873107910156}}},
		{"op": "complete", "args": nil, "command_id": "0", "seq_number": int64(1)},
		resp(3),
		{"op": "start_command", "command_id": "1", "command_name": "mkdir", "seq_number": int64(4),
			"args": map[string]any{"paths": []any{"/srv/bb/workers/w1/hello"}}},
		{"op": "update", "command_id": "1", "seq_number": int64(2), "args": []any{
			[]any{"rc", int64(0)}, []any{"elapsed", 0.0003643035888671875}}},
		{"op": "print", "message": "ping", "seq_number": int64(6)},
		{"op": "start_command", "builder_name": "hello", "command_id": "2", "command_name": "shell", "seq_number": int64(7),
			"args": map[string]any{
				"workdir": "/srv/bb/workers/w1/hello/build", "env": map[string]any{}, "want_stdout": true,
				"want_stderr": true, "logfiles": map[string]any{}, "timeout": int64(1200), "maxTime": nil,
				"sigtermTime": nil, "usePTY": false, "logEnviron": true, "command": []any{"echo", "hello"}}},
		{"op": "update", "command_id": "2", "seq_number": int64(4), "args": []any{
			[]any{"header", []any{header, []any{int64(10), int64(len(header) - 1)}, []any{1.7e9, 1.7e9}}},
			[]any{"stdout", []any{"hello\n", []any{int64(5)}, []any{1.7e9}}},
			[]any{"rc", int64(0)}, []any{"elapsed", 0.0061}}},
		{"op": "complete", "args": nil, "command_id": "2", "seq_number": int64(5)},
		{"op": "keepalive", "seq_number": int64(8)},
		{"op": "update_upload_file_write", "command_id": "3", "seq_number": int64(6), "args": []byte("hello\n")},
		{"op": "update_upload_file_utime", "command_id": "3", "seq_number": int64(7),
			"access_time": 1.7e9, "modified_time": 1.7e9},
		{"op": "update_upload_file_close", "command_id": "3", "seq_number": int64(8)},
		{"op": "update_read_file", "command_id": "4", "seq_number": int64(9), "length": int64(16384)},
		{"op": "update_read_file_close", "command_id": "4", "seq_number": int64(10)},
		{"op": "response", "seq_number": int64(9), "result": "boom", "is_exception": true},
	}
}
