package commands_test

import (
	"context"
	"fmt"
	"os"

	"github.com/buildslave/buildslave/client/commands"
)

// printer is a Master that prints what a command reports; shell commands
// only send updates, so the file-transfer methods are left out.
type printer struct{ commands.Master }

func (printer) Update(_ context.Context, pairs [][2]any) error {
	for _, kv := range pairs {
		switch kv[0] {
		case "stdout":
			fmt.Print("stdout: ", kv[1].([]any)[0])
		case "rc":
			fmt.Println("rc:", kv[1])
		}
	}
	return nil
}

func ExampleCommand_Run() {
	cmd, err := commands.New("shell", map[string]any{
		"workdir": os.TempDir(),
		"command": []any{"echo", "hello"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := cmd.Run(context.Background(), printer{}, commands.Settings{}); err != nil {
		fmt.Println("failed:", err)
	}
	// Output:
	// stdout: hello
	// rc: 0
}

func ExampleParseSettings() {
	s, err := commands.ParseSettings(map[string]any{
		"buffer_size": 65536, "buffer_timeout": 5, "max_line_length": 4096,
		"newline_re": commands.DefaultNewlineRE,
	})
	fmt.Println(s.BufferSize, s.BufferTimeout, s.MaxLineLength, err)
	// Output: 65536 5s 4096 <nil>
}
