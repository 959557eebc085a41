package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The daemons the attack tests play against are built without the race
// detector, as an operator runs dmsgd: its shadow memory would make RSS
// meaningless as a measure of what a peer makes the router hold, and
// would keep that memory resident after the attack. DMSGD_ATTACK_BINARY
// names another dmsgd to attack instead (another build or version).
var (
	attackBinOnce sync.Once
	attackBin     string
	attackBinErr  error
)

func attackBinary(t *testing.T) string {
	t.Helper()
	attackBinOnce.Do(func() {
		if attackBin = os.Getenv("DMSGD_ATTACK_BINARY"); attackBin != "" {
			return
		}
		attackBin = filepath.Join(filepath.Dir(binary), "dmsgd-norace")
		build := exec.Command("go", "build", "-trimpath", "-o", attackBin, "github.com/dmsgd/dmsgd/cmd/dmsgd")
		if out, err := build.CombinedOutput(); err != nil {
			attackBinErr = fmt.Errorf("build dmsgd without -race: %v\n%s", err, out)
		}
	})
	if attackBinErr != nil {
		t.Fatal(attackBinErr)
	}
	return attackBin
}

// target is the dmsgd under attack: one router on a loopback port with
// its shell socket and metrics endpoint, started from a config whose
// limits the attack chooses.
type target struct {
	*daemon
	metrics string            // host:port of /metrics
	limits  map[string]string // limits: keys as written to the config
	unknown []string          // limits keys this dmsgd does not know, left out
	media   []int             // ports of configured targets it keeps links to
}

// startTarget writes the target's config with the scale's keepalive, the
// given limits and outbound links to the loopback ports media, and
// starts it. Limits keys that this build of dmsgd
// rejects as unknown are left out (and listed in unknown), so the suite
// measures any build: a missing defence then shows as a failed check,
// not as a daemon that cannot start.
func startTarget(t *testing.T, sc *scale, limits map[string]string, media ...int) *target {
	t.Helper()
	dir := t.TempDir()
	tg := &target{daemon: &daemon{t: t, name: "target", port: freePort(t),
		config: filepath.Join(dir, "dmsgd.yaml"),
		shell:  filepath.Join(dir, "shell.sock"),
		log:    filepath.Join(dir, "dmsgd.log"),
		bin:    attackBinary(t),
	}, metrics: fmt.Sprintf("127.0.0.1:%d", freePort(t)), limits: map[string]string{}, media: media}
	for k, v := range limits {
		tg.limits[k] = v
	}
	tg.writeConfig(sc)
	if unknown := tg.unknownLimits(); len(unknown) > 0 {
		for _, k := range unknown {
			delete(tg.limits, k)
		}
		tg.unknown = unknown
		t.Logf("this dmsgd does not know limits %v: left out, their defences (if any) run at defaults", unknown)
		tg.writeConfig(sc)
	}
	tg.start()
	return tg
}

func (tg *target) writeConfig(sc *scale) {
	var b strings.Builder
	fmt.Fprintf(&b, "listen:\n  - tcp://127.0.0.1:%d\n", tg.port)
	fmt.Fprintf(&b, "shell:\n  socket: %s\n  tcp: loopback\n", tg.shell)
	b.WriteString("node:\n  label: target\n")
	fmt.Fprintf(&b, "keepalive:\n  interval: %s\n  timeout: %s\n", sc.keepaliveInterval, sc.keepaliveTimeout)
	b.WriteString("log:\n  level: info\n  format: json\n")
	fmt.Fprintf(&b, "metrics:\n  listen: %s\n", tg.metrics)
	if len(tg.media) > 0 {
		b.WriteString("media:\n  - name: upstream\n    copies:\n")
		for i, port := range tg.media {
			fmt.Fprintf(&b, "      - copyid: %d\n        path: span:127.0.0.1:%d\n", i+1, port)
		}
	}
	if len(tg.limits) > 0 {
		b.WriteString("limits:\n")
		keys := make([]string, 0, len(tg.limits))
		for k := range tg.limits {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "  %s: %s\n", k, tg.limits[k])
		}
	}
	if err := os.WriteFile(tg.config, []byte(b.String()), 0o600); err != nil {
		tg.t.Fatal(err)
	}
}

var unknownKeyLine = regexp.MustCompile(`: limits\.([a-z0-9_]+): unknown key`)

// unknownLimits runs `dmsgd config check` on the config and returns the
// limits keys it reports as unknown; any other problem is fatal.
func (tg *target) unknownLimits() []string {
	out, err := exec.Command(tg.bin, "config", "check", "--config", tg.config).CombinedOutput()
	if err == nil {
		return nil
	}
	var unknown []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		m := unknownKeyLine.FindStringSubmatch(line)
		if m == nil {
			tg.t.Fatalf("dmsgd config check: %v\n%s", err, out)
		}
		unknown = append(unknown, m[1])
	}
	return unknown
}

func (tg *target) pid() int { return tg.cmd.Process.Pid }

// procSample is what /proc says about the target at one moment.
type procSample struct {
	at      time.Time
	rss     int64 // VmRSS, bytes
	hwm     int64 // VmHWM: the peak RSS so far, bytes
	fds     int
	threads int
}

// readProc samples /proc/<pid>/status and /proc/<pid>/fd.
func readProc(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(st), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(val)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch key {
		case "VmRSS":
			s.rss = n << 10
		case "VmHWM":
			s.hwm = n << 10
		case "Threads":
			s.threads = int(n)
		}
	}
	d, err := os.Open(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	s.fds = len(names)
	return s, err
}

// fetchMetrics returns the target's /metrics page.
func (tg *target) fetchMetrics() (string, error) {
	cl := http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Get("http://" + tg.metrics + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// scrape reads the target's /metrics: each metric's value, summed over
// its labels.
func (tg *target) scrape() (map[string]float64, error) {
	body, err := tg.fetchMetrics()
	if err != nil {
		return nil, err
	}
	out := make(map[string]float64)
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		name := line[:i]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			name = name[:j]
		}
		out[name] += v
	}
	return out, nil
}

var limitRefusalLine = regexp.MustCompile(`(?m)^dmsgd_limit_refusals_total\{[^}]*\blimit="([^"]+)"[^}]*\} (\S+)$`)

// limitRefusals returns the target's dmsgd_limit_refusals_total by limit,
// and whether /metrics has the metric at all.
func (tg *target) limitRefusals() (map[string]float64, bool, error) {
	body, err := tg.fetchMetrics()
	if err != nil {
		return nil, false, err
	}
	out := make(map[string]float64)
	for _, m := range limitRefusalLine.FindAllStringSubmatch(body, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		out[m[1]] += v
	}
	return out, strings.Contains(body, "dmsgd_limit_refusals_total"), nil
}
