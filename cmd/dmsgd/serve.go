package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/router"
)

func init() { rootCmd.AddCommand(newServeCmd()) }

func newServeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon in the foreground until SIGTERM or SIGINT",
		Long: "serve binds the configured listeners and the shell socket, keeps the " +
			"configured outbound links and routes spans until SIGTERM or SIGINT, " +
			"then shuts down gracefully and exits 0. SIGHUP reloads the configuration.",
		Args: cobra.NoArgs,
		RunE: runServe,
	}
}

func runServe(cmd *cobra.Command, _ []string) error {
	if err := requireConfigFile(cmd); err != nil {
		return err
	}
	cfg, err := loadConfig(cmd, config.WithTLSFiles())
	if err != nil {
		return err
	}
	log, level, err := newLogger(cfg, os.Stderr)
	if err != nil {
		return err
	}
	defer log.Sync()
	for _, w := range cfg.Warnings() {
		log.Warn("configuration: "+w.Msg, zap.String("key", w.Key), zap.String("at", w.String()))
	}
	inherited, err := activation.Listeners()
	if err != nil {
		return fmt.Errorf("socket activation: %w", err)
	}
	r := router.New(cfg, log)
	if err := r.Listen(inherited); err != nil {
		return err
	}
	// Registered before READY=1: a SIGTERM right after it must find it.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	ctx, stop := context.WithCancel(cmd.Context())
	defer stop()
	r.Metrics().SetBuildInfo(version, buildCommit())
	applyMemoryLimit(log, cfg)
	log.Info("dmsgd started", zap.String("version", version), zap.String("node", cfg.Node.Label),
		zap.String("node_id", cfg.Node.ID.String()), zap.Uint32("rnss", r.Engine().Rnss()))
	notify(log, daemon.SdNotifyReady+"\n"+status(fmt.Sprintf("serving as %s on %d listeners", cfg.Node.Label, len(r.Addrs()))))
	go watchdog(ctx, log)
	go reloadOnHangup(ctx, cmd, r, log, func(lvl string) {
		if l, err := parseLogLevel(lvl); err == nil {
			level.SetLevel(l)
		}
	})
	shut := make(chan error, 1)
	go func() { shut <- shutdownOnSignal(ctx, r, sigs, log) }()
	err = r.Serve(context.Background())
	if errors.Is(err, router.ErrRouterClosed) {
		return <-shut // a signal or the command's context asked for it
	}
	// A listener gave up: stop as a signal would have, and exit 1 naming it.
	stop()
	<-shut
	return err
}

// shutdownGrace bounds a graceful shutdown: how long links get to write
// what they queued (our LNK_CONN DELETEs, the withdrawals of our spans)
// before they are closed. The shipped unit's TimeoutStopSec (30 s)
// leaves room for it.
const shutdownGrace = 5 * time.Second

// signalEcho is how soon after the first a signal is taken for the same
// one delivered twice rather than a second request.
const signalEcho = 500 * time.Millisecond

// shutdownOnSignal waits for SIGTERM or SIGINT, or for ctx to end, then
// shuts the router down within shutdownGrace; a second signal meanwhile
// (not the first one delivered twice) closes what is still open at once. Links that had not drained when the
// grace ended are logged, not an error: the daemon still stopped as told.
func shutdownOnSignal(ctx context.Context, r *router.Router, sigs <-chan os.Signal, log *zap.Logger) error {
	select {
	case sig := <-sigs:
		log.Info("shutting down", zap.Stringer("signal", sig), zap.Duration("grace", shutdownGrace))
	case <-ctx.Done():
		log.Info("shutting down", zap.Duration("grace", shutdownGrace))
	}
	notify(log, daemon.SdNotifyStopping+"\n"+status("shutting down"))
	grace, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	go func() {
		// One Ctrl-C under a supervisor or make reaches us more than
		// once (the terminal's process group, then the parent passing
		// it on): only a signal sent again later means "now".
		ignoreUntil := time.Now().Add(signalEcho)
		for {
			select {
			case sig := <-sigs:
				if time.Now().Before(ignoreUntil) {
					continue
				}
				log.Warn("second signal: closing every link now", zap.Stringer("signal", sig))
				cancel()
				return
			case <-grace.Done():
				return
			}
		}
	}()
	if err := r.Shutdown(grace); err != nil {
		log.Warn("links closed before they drained", zap.Error(err))
	}
	return nil
}

// notify tells systemd about a state change when running under it.
func notify(log *zap.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("systemd notify failed", zap.Error(err))
	}
}

// watchdog pings systemd's watchdog at half its interval, when enabled.
func watchdog(ctx context.Context, log *zap.Logger) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			notify(log, daemon.SdNotifyWatchdog)
		}
	}
}

// reloadOnHangup reloads the configuration on SIGHUP (systemctl reload),
// telling systemd RELOADING=1 with MONOTONIC_USEC, then READY=1 with a
// STATUS= saying what became of it: a refused or invalid reload leaves the
// running configuration in force, so the daemon stays ready and the
// reason is what `systemctl status` shows.
func reloadOnHangup(ctx context.Context, cmd *cobra.Command, r *router.Router, log *zap.Logger, setLevel func(string)) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		notify(log, "RELOADING=1\nMONOTONIC_USEC="+strconv.FormatInt(monotonicMicros(), 10))
		var st string
		if changes, err := reload(cmd, r, setLevel); err != nil {
			log.Error("configuration reload failed; running configuration kept", zap.Error(err))
			st = err.Error() + "; running configuration kept"
		} else {
			log.Info("configuration reloaded", zap.Int("changes", len(changes)))
			applyMemoryLimit(log, r.Config())
			st = fmt.Sprintf("serving as %s; configuration reloaded (%d changes)", r.Config().Node.Label, len(changes))
		}
		notify(log, daemon.SdNotifyReady+"\n"+status(st))
	}
}

func reload(cmd *cobra.Command, r *router.Router, setLevel func(string)) ([]string, error) {
	cfg, err := loadConfig(cmd, config.WithTLSFiles())
	if err != nil {
		r.ReloadInvalid()
		return nil, fmt.Errorf("reload refused: %w", err)
	}
	changes, err := r.Reload(cfg)
	if err != nil {
		return nil, err
	}
	setLevel(cfg.Log.Level)
	return changes, nil
}

// status is a STATUS= line for systemd: one line, so multi-line text (a
// list of config problems) is joined with "; ".
func status(text string) string {
	var b strings.Builder
	for _, line := range strings.Split(text, "\n") {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		switch s := b.String(); {
		case s == "":
		case strings.HasSuffix(s, ":"):
			b.WriteString(" ")
		default:
			b.WriteString("; ")
		}
		b.WriteString(line)
	}
	return "STATUS=" + b.String()
}

// monotonicMicros reads CLOCK_MONOTONIC, the clock systemd's
// MONOTONIC_USEC refers to.
func monotonicMicros() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1e3
}

// requireConfigFile refuses to serve without a configuration file: the
// defaults alone listen nowhere and name the node after the host, which
// is never what an operator meant. It says where it looked.
func requireConfigFile(cmd *cobra.Command) error {
	path, explicit := configPath(cmd)
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("configuration file %s: %w", path, err)
	case explicit:
		return fmt.Errorf("no configuration file at %s (given by --config)", path)
	}
	return fmt.Errorf("no configuration file at %s (the default); pass --config FILE", path)
}
