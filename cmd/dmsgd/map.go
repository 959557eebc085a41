package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"time"

	"github.com/spf13/cobra"

	"github.com/dmsgd/dmsgd/internal/endpoint"
	"github.com/dmsgd/dmsgd/internal/shell"
)

func init() { rootCmd.AddCommand(newMapCmd()) }

// mapTimeout bounds a whole `dmsgd map`; each `@node` is bounded by the
// router (10 s), so a cluster of dozens of routers, some unreachable,
// still fits.
const mapTimeout = 5 * time.Minute

func newMapCmd() *cobra.Command {
	var socket, format string
	cmd := &cobra.Command{
		Use:   "map",
		Short: "Print the whole cluster as seen from a running daemon",
		Long: "map connects to a running daemon's shell socket, reads its tree, then asks every " +
			"router it knows of for its own tree with `@label tree json` over a circuit, and prints " +
			"every router, every router-to-router link and the leaves linked to them: json, dot, " +
			"or svg (through Graphviz's dot, which must be installed). Routers that cannot be " +
			"reached are shown with the reason; their links as their neighbours report them.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var dot string
			switch format {
			case "json", "dot":
			case "svg":
				var err error
				if dot, err = exec.LookPath("dot"); err != nil {
					return errors.New("--format svg needs Graphviz's dot on PATH (install graphviz), " +
						"or print --format dot and render it elsewhere")
				}
			default:
				return fmt.Errorf("--format %q: must be json, dot or svg", format)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), mapTimeout)
			defer cancel()
			path := resolveShellSocket(cmd, socket)
			dctx, dcancel := context.WithTimeout(ctx, clientTimeout)
			c, err := endpoint.DialShell(dctx, "unix", path, "dmsgd-map")
			dcancel()
			if err != nil {
				return fmt.Errorf("cannot reach the daemon at %s: %w", path, err)
			}
			defer c.Close()
			m, err := shell.GatherMap(ctx, c.Shell)
			if err != nil {
				return fmt.Errorf("map from %s: %w", path, err)
			}
			out := cmd.OutOrStdout()
			switch format {
			case "json":
				_, err = out.Write(m.JSON())
			case "dot":
				_, err = out.Write(m.DOT())
			case "svg":
				err = renderSVG(ctx, dot, m.DOT(), cmd)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "shell socket (default: $DMSGD_SHELL_SOCKET, the config's shell.socket, or /run/dmsgd/shell.sock)")
	cmd.Flags().StringVar(&format, "format", "dot", "output format: json, dot or svg")
	return cmd
}

// renderSVG pipes the DOT graph through Graphviz's dot.
func renderSVG(ctx context.Context, dot string, graph []byte, cmd *cobra.Command) error {
	var stderr bytes.Buffer
	c := exec.CommandContext(ctx, dot, "-Tsvg")
	c.Stdin, c.Stdout, c.Stderr = bytes.NewReader(graph), cmd.OutOrStdout(), &stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s -Tsvg: %v: %s", dot, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}
