package main

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/spf13/cobra"

	"github.com/dmsgd/dmsgd/internal/config"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Configuration tools",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newConfigCheckCmd())
	return cmd
}

func newConfigCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check [--config FILE | FILE]",
		Short: "Validate a configuration file",
		Long: "Validate a configuration file, including the DMSGD_* environment " +
			"overrides, and read the TLS certificate and key it names. Prints " +
			"FILE: ok (after a FILE:LINE: key: warning: ... line on stderr for " +
			"each risky setting), or one FILE:LINE: key: problem line per " +
			"problem on stderr and exits 1.",
		Args: cobra.MaximumNArgs(1),
		RunE: runConfigCheck,
	}
}

func runConfigCheck(cmd *cobra.Command, args []string) error {
	path, _ := configPath(cmd)
	if len(args) == 1 {
		path = args[0]
	}
	if path == "" {
		return errors.New("config check: no configuration file given")
	}
	cfg, err := config.Load(path, append(configOptions(cmd), config.WithTLSFiles())...)
	stderr := cmd.ErrOrStderr()
	var ve *config.ValidationError
	var pe *fs.PathError
	switch {
	case err == nil:
		for _, w := range cfg.Warnings() {
			fmt.Fprintln(stderr, w.String())
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", path)
		return nil
	case errors.As(err, &ve):
		for _, p := range ve.Problems {
			fmt.Fprintln(stderr, p.String())
		}
		return errExit(1)
	case errors.As(err, &pe):
		fmt.Fprintf(stderr, "%s: cannot read: %v\n", path, pe.Err)
		return errExit(1)
	default:
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return errExit(1)
	}
}
