// Command dmsgd is the DMSG cluster routing daemon (serve) and the
// operator's tools around it: tree, shell, config check, keygen, version.
//
// This file owns the root command, its persistent flags (--config,
// --log-level, --log-format), the exit-code convention and the helpers
// every command shares to load the configuration.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/dmsgd/dmsgd/internal/config"
)

// Set at build time with
//
//	-ldflags "-X main.version=v1.2.3 -X main.commit=abc1234"
var (
	version = "dev"
	commit  = ""
)

// Persistent flag names.
const (
	flagConfig    = "config"
	flagLogLevel  = "log-level"
	flagLogFormat = "log-format"
)

// builtinCommands construct the commands defined next to this file. Each
// call builds a fresh command, so tests can build independent roots with
// newRootCmd.
var builtinCommands = []func() *cobra.Command{
	newVersionCmd,
	newConfigCmd,
	newKeygenCmd,
}

// rootCmd is the dmsgd command that main executes.
//
// ---- Registering more commands ----
// A command that lives in its own file of this package (serve.go,
// tree.go, shell.go) adds itself from that file:
//
//	func init() { rootCmd.AddCommand(newServeCmd()) }
//
// rootCmd is initialized before any init function runs. Use loadConfig
// for the configuration, newLogger for the logger and resolveShellSocket
// for the shell socket; return errExit(code) to exit with a code after
// printing your own message, or any other error to have main print
// "dmsgd: <error>" and exit 1.
var rootCmd = newRootCmd()

// newRootCmd builds the root command with its persistent flags and the
// builtin commands.
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "dmsgd",
		Short: "DMSG cluster routing daemon",
		Long: "dmsgd accepts DMSG peers, keeps the cluster's spanning tree of " +
			"advertisements, relays virtual circuits and exposes a debug shell.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	flags := root.PersistentFlags()
	flags.String(flagConfig, config.DefaultPath, "configuration file")
	flags.String(flagLogLevel, "", "log level: debug, info, warn or error (overrides log.level)")
	flags.String(flagLogFormat, "", "log format: json or console (overrides log.format)")
	for _, newCmd := range builtinCommands {
		root.AddCommand(newCmd())
	}
	return root
}

func main() {
	os.Exit(execute(context.Background(), rootCmd, os.Args[1:], os.Stdout, os.Stderr))
}

// execute runs root with args and returns the process exit code.
func execute(ctx context.Context, root *cobra.Command, args []string, stdout, stderr io.Writer) int {
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintf(stderr, "dmsgd: %v\n", err)
	return 1
}

// exitError ends the process with code; the command has already said why.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// errExit returns an error that makes dmsgd exit with code and print
// nothing more.
func errExit(code int) error { return &exitError{code: code} }

// configOptions turns --log-level and --log-format, when given, into
// overrides of log.level and log.format.
func configOptions(cmd *cobra.Command) []config.Option {
	var opts []config.Option
	for _, f := range []struct{ flag, key string }{
		{flagLogLevel, "log.level"},
		{flagLogFormat, "log.format"},
	} {
		if fl := cmd.Flags().Lookup(f.flag); fl != nil && fl.Changed {
			opts = append(opts, config.WithOverride(f.key, fl.Value.String(), "--"+f.flag))
		}
	}
	return opts
}

// configPath returns the --config value and whether it was given
// explicitly.
func configPath(cmd *cobra.Command) (string, bool) {
	fl := cmd.Flags().Lookup(flagConfig)
	if fl == nil {
		return config.DefaultPath, false
	}
	return fl.Value.String(), fl.Changed
}

// loadConfig loads the configuration a command runs with: the --config
// file, or only defaults and the environment when --config was not given
// and the default file does not exist; --log-level and --log-format
// override the file. extra adds load options (the daemon reads its TLS
// files with config.WithTLSFiles).
func loadConfig(cmd *cobra.Command, extra ...config.Option) (*config.Config, error) {
	path, explicit := configPath(cmd)
	if !explicit {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			path = ""
		}
	}
	cfg, err := config.Load(path, append(configOptions(cmd), extra...)...)
	if err != nil {
		var ve *config.ValidationError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("invalid configuration:\n%w", err)
		}
		return nil, fmt.Errorf("load configuration: %w", err)
	}
	return cfg, nil
}

// resolveShellSocket returns the shell socket for a client command given
// its --socket value: the flag, $DMSGD_SHELL_SOCKET, the config file's
// shell.socket, or the default.
func resolveShellSocket(cmd *cobra.Command, socketFlag string) string {
	path, _ := configPath(cmd)
	return config.ResolveShellSocket(socketFlag, path)
}
