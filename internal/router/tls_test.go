package router_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmsgd/dmsgd/internal/config"
	"github.com/dmsgd/dmsgd/internal/testnet"
)

// nodeKey is one router's TLS identity written to disk, as keygen makes
// it: a PKCS#8 Ed25519 key and a self-signed certificate.
type nodeKey struct {
	cert, key string
	pub       ed25519.PublicKey
	priv      ed25519.PrivateKey
}

func newNodeKey(tb testing.TB, name string) nodeKey {
	tb.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		tb.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	k := nodeKey{cert: filepath.Join(dir, "node.crt"), key: filepath.Join(dir, "node.key"), pub: pub, priv: priv}
	writePEM(tb, k.cert, "CERTIFICATE", der)
	writePEM(tb, k.key, "PRIVATE KEY", pk)
	return k
}

func writePEM(tb testing.TB, path, typ string, der []byte) {
	tb.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// withTLS gives a router its key and the keys it trusts, and makes it
// listen on tls:// only.
func withTLS(own nodeKey, trusted map[string]nodeKey) routerOption {
	return func(c *config.Config) {
		c.Listen = []string{"tls://127.0.0.1:0"}
		c.TLS.Cert, c.TLS.Key = own.cert, own.key
		for name, k := range trusted {
			c.TLS.Peers = append(c.TLS.Peers, config.Peer{Name: name, PubKey: config.FormatPubKey(k.pub), Key: k.pub})
		}
	}
}

func TestRoutersPinningEachOthersKeysLinkOverTLS(t *testing.T) {
	ka, kb := newNodeKey(t, "a"), newNodeKey(t, "b")
	a := newRouter(t, "a", withTLS(ka, map[string]nodeKey{"b": kb}))
	b := newRouter(t, "b", withTLS(kb, map[string]nodeKey{"a": ka}))
	if out := b.Span("span+tls:" + a.addr()); !strings.HasPrefix(out, "Connected to ") {
		t.Fatalf("span+tls: %q", out)
	}
	waitLinked(t, a, b)
}

func TestAPeerWhoseKeyIsNotPinnedIsRefused(t *testing.T) {
	ka, kb, stranger := newNodeKey(t, "a"), newNodeKey(t, "b"), newNodeKey(t, "x")
	a := newRouter(t, "a", withTLS(ka, map[string]nodeKey{"b": kb}))
	x := newRouter(t, "x", withTLS(stranger, map[string]nodeKey{"a": ka}))
	out := x.Span("span+tls:" + a.addr())
	if strings.HasPrefix(out, "Connected to ") {
		// TLS 1.3 finishes the client's handshake before the server has
		// checked the client's certificate: the link dies right after.
		eventually(t, "the stranger's link is dropped", func() error { return x.lacks("a") })
	}
	if err := a.lacks("x"); err != nil {
		t.Fatal(err)
	}
	// A dialler checks the listener's key too: b2 pins only a, so x's
	// certificate fails its handshake.
	bx := newRouter(t, "b2", withTLS(kb, map[string]nodeKey{"a": ka}))
	if out := bx.Span("span+tls:" + x.addr()); strings.HasPrefix(out, "Connected to ") {
		t.Fatalf("a dialler accepted a listener whose key it does not pin: %q", out)
	}
}

func TestPlainTargetsToTLSListenersFail(t *testing.T) {
	ka := newNodeKey(t, "a")
	a := newRouter(t, "a", withTLS(ka, nil))
	p := newRouter(t, "p")
	p.Span(a.addr())
	if err := p.lacks("a"); err != nil {
		t.Fatal(err)
	}
}

// A span+tls: target that accepts the connection and never answers the
// handshake (a wedged peer, a tarpit) is given limits.handshake_timeout,
// as accepted connections are, then redialled with backoff: the target's
// keeper must not hang on it for good.
func TestAnOutboundTLSHandshakeThatNeverAnswersTimesOut(t *testing.T) {
	tarpit, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := tarpit.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // read nothing, write nothing
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		tarpit.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	ka := newNodeKey(t, "a")
	a := newRouter(t, "a", withTLS(ka, nil), func(c *config.Config) {
		c.Limits.HandshakeTimeout = 300 * time.Millisecond
		path := "span+tls:" + tarpit.Addr().String()
		tg, err := config.ParseSpanPath(path)
		if err != nil {
			t.Fatal(err)
		}
		tg.Name = "lab"
		c.Media = []config.Media{{Name: "lab", Copies: []config.Copy{{CopyID: 1, Path: path, Target: tg}}}}
	})
	eventually(t, "the handshake with the tarpit fails", func() error {
		if n := tlsFailures(t, a, "outbound", "timeout"); n == 0 {
			return fmt.Errorf("no outbound handshake timed out")
		}
		return nil
	})
}

// tlsFailures returns dmsgd_tls_handshake_failures_total{direction, reason}.
func tlsFailures(t *testing.T, r *testRouter, direction, reason string) float64 {
	t.Helper()
	mfs, err := r.Metrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "dmsgd_tls_handshake_failures_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["direction"] == direction && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// Shutdown does not wait for a TLS handshake a peer leaves hanging: the
// handshake's deadline (limits.handshake_timeout) is for peers, not for
// a router that is stopping.
func TestShutdownDoesNotWaitForAPendingTLSHandshake(t *testing.T) {
	ka := newNodeKey(t, "a")
	a := newRouter(t, "a", withTLS(ka, nil), func(c *config.Config) {
		c.Limits.HandshakeTimeout = 10 * time.Minute
		c.Limits.MaxPendingLinks = 1
	})
	silent, err := net.Dial("tcp", a.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// With one pending link allowed, a second connection is refused (closed
	// at once) only once the silent one is accepted and pending.
	eventually(t, "the silent connection is pending", func() error {
		probe, err := net.Dial("tcp", a.addr())
		if err != nil {
			return err
		}
		defer probe.Close()
		probe.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := probe.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			return fmt.Errorf("a second connection read %v, want it refused", err)
		}
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- a.stop() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testnet.Timeout):
		t.Fatal("shutdown waits for the pending handshake")
	}
}
