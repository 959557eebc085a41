package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/dmsgd/dmsgd/internal/endpoint"
	"github.com/dmsgd/dmsgd/internal/shell"
)

func init() { rootCmd.AddCommand(newShellCmd()) }

func newShellCmd() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "shell",
		Short: "Interactive debug shell of a running daemon",
		Long: "shell connects to a running daemon's shell socket. It reads commands " +
			"from stdin (one per line), prints each command's output, and exits at EOF. " +
			"Type help for the commands.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := resolveShellSocket(cmd, socket)
			dctx, cancel := context.WithTimeout(cmd.Context(), clientTimeout)
			c, err := endpoint.DialShell(dctx, "unix", path, "dmsgd-shell")
			cancel()
			if err != nil {
				return fmt.Errorf("cannot reach the daemon at %s: %w", path, err)
			}
			defer c.Close()
			interactive := isTerminal(os.Stdin)
			return runShell(cmd.Context(), c, cmd.InOrStdin(), cmd.OutOrStdout(), interactive)
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "shell socket (default: $DMSGD_SHELL_SOCKET, the config's shell.socket, or /run/dmsgd/shell.sock)")
	return cmd
}

// runShell sends each input line and prints its output; on a terminal it
// shows the prompt between commands.
func runShell(ctx context.Context, c *endpoint.Endpoint, in io.Reader, out io.Writer, interactive bool) error {
	sc := bufio.NewScanner(in)
	for {
		if interactive {
			fmt.Fprint(out, shell.Prompt)
		}
		if !sc.Scan() {
			break
		}
		text, err := c.Shell(ctx, sc.Text())
		fmt.Fprint(out, text, c.ShellAsync())
		if err != nil {
			return err
		}
	}
	if interactive {
		fmt.Fprintln(out)
	}
	return sc.Err()
}
