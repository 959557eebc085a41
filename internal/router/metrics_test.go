package router_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/dmsgd/dmsgd/internal/config"
)

func TestMetricsAndHealthzAreServedWhenConfigured(t *testing.T) {
	a := newRouter(t, "a", func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:0" })
	b := newRouter(t, "b")
	connect(t, a, b)
	base := "http://" + a.MetricsAddr().String()
	body := get(t, base+"/metrics")
	for _, want := range []string{
		"# TYPE dmsgd_links gauge\ndmsgd_links 1\n",
		"dmsgd_span_nodes 2\n",
		"# TYPE dmsgd_link_rx_messages_total counter\n",
		`dmsgd_link_rx_messages_total{link="L1",remote=`,
	} {
		if !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %q:\n%s", want, body)
		}
	}
	if got := get(t, base+"/healthz"); got != "ok\n" {
		t.Fatalf("/healthz = %q", got)
	}
}

func TestNoMetricsEndpointUnlessConfigured(t *testing.T) {
	if newRouter(t, "a").MetricsAddr() != nil {
		t.Fatal("metrics served with metrics.listen empty")
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}
