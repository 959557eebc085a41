package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/dmsgd/dmsgd/internal/endpoint"
)

func init() { rootCmd.AddCommand(newTreeCmd()) }

// clientTimeout bounds a `dmsgd tree` exchange.
const clientTimeout = 10 * time.Second

func newTreeCmd() *cobra.Command {
	var socket, format string
	cmd := &cobra.Command{
		Use:   "tree",
		Short: "Print a running daemon's span tree",
		Long: "tree connects to a running daemon's shell socket and prints its view " +
			"of the cluster: text (the debug shell's tree dump), json or dot. The dot " +
			"graph shows that router's own links; dmsgd map draws every router's.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch format {
			case "text", "json", "dot":
			default:
				return fmt.Errorf("--format %q: must be text, json or dot", format)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), clientTimeout)
			defer cancel()
			path := resolveShellSocket(cmd, socket)
			c, err := endpoint.DialShell(ctx, "unix", path, "dmsgd-tree")
			if err != nil {
				return fmt.Errorf("cannot reach the daemon at %s: %w", path, err)
			}
			defer c.Close()
			out, err := c.Shell(ctx, "tree "+format)
			if err != nil {
				return fmt.Errorf("tree from %s: %w", path, err)
			}
			fmt.Fprint(cmd.OutOrStdout(), out)
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "shell socket (default: $DMSGD_SHELL_SOCKET, the config's shell.socket, or /run/dmsgd/shell.sock)")
	cmd.Flags().StringVar(&format, "format", "text", "output format: text, json or dot")
	return cmd
}
