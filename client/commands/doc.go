// Package commands runs Buildbot remote commands (shell, file-system and file-transfer commands) on the slave side.
//
// A start_command request becomes a [Command] through [New]; [Command.Run]
// executes it and reports to the master through the [Master] interface, which
// the connection code implements. Output is split into lines and batched the
// way the master asked in set_worker_settings (see [Settings]).
package commands
