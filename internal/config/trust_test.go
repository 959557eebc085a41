package config

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// keyFiles writes a certificate for certKey's public key and the PKCS#8
// form of privKey, as keygen does, and returns their paths.
func keyFiles(t *testing.T, certKey crypto.Signer, privKey any) (cert, key string) {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "t"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, certKey.Public(), certKey)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(privKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), 0o600)
	return cert, key
}

func newEd25519(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func tlsConfigFile(t *testing.T, cert, key, extra string) string {
	return writeConfig(t, fmt.Sprintf("listen: [tls://127.0.0.1:9870]\nnode:\n  label: a\n%stls:\n  cert: %s\n  key: %s\n", extra, cert, key))
}

func TestConfigCheckReadsTheTLSFilesAndSaysWhatIsWrongWhere(t *testing.T) {
	k := newEd25519(t)
	goodCert, goodKey := keyFiles(t, k, k)
	_, otherKey := keyFiles(t, newEd25519(t), newEd25519(t))
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecCert, ecKey := keyFiles(t, ec, ec)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	os.WriteFile(garbage, []byte("not pem\n"), 0o600)
	missing := filepath.Join(t.TempDir(), "missing.crt")

	tests := []struct {
		name       string
		cert, key  string
		wantKey    string // the key the problem names, "" when the files are good
		wantSubstr string
	}{
		{"a certificate and its key pass", goodCert, goodKey, "", ""},
		{"a missing certificate is named", missing, goodKey, "tls.cert", "cannot read " + missing + ": no such file or directory"},
		{"a certificate that is not PEM is named", garbage, goodKey, "tls.cert", "no PEM CERTIFICATE block"},
		{"a key that is not PEM is named", goodCert, garbage, "tls.key", "no PEM PRIVATE KEY block"},
		{"a key that is not the certificate's is named", goodCert, otherKey, "tls.key", "is not the key of tls.cert"},
		{"a certificate of another key type is named", ecCert, ecKey, "tls.cert", "dmsgd peers pin Ed25519 keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tlsConfigFile(t, tt.cert, tt.key, "")
			if _, err := Load(path); err != nil {
				t.Fatalf("without WithTLSFiles Load must not read the files: %v", err)
			}
			cfg, err := Load(path, WithTLSFiles())
			if tt.wantKey == "" {
				if err != nil || cfg.TLS.Identity == nil || !cfg.TLS.Identity.Pub.Equal(k.Public()) {
					t.Fatalf("Load = %v, identity %v", err, cfg)
				}
				return
			}
			lines := problemLines(t, err)
			line := 5 // tls.cert
			if tt.wantKey == "tls.key" {
				line = 6
			}
			want := fmt.Sprintf("%s:%d: %s: ", path, line, tt.wantKey)
			if len(lines) != 1 || !strings.HasPrefix(lines[0], want) || !strings.Contains(lines[0], tt.wantSubstr) {
				t.Fatalf("problems %q, want one starting %q containing %q", lines, want, tt.wantSubstr)
			}
		})
	}
}

func TestNodeIDFromKeyIsTheNameUUIDOfThePrintedKey(t *testing.T) {
	k := newEd25519(t)
	cert, key := keyFiles(t, k, k)
	cfg := mustLoad(t, tlsConfigFile(t, cert, key, "  id_from_key: true\n"), WithTLSFiles())
	pub := k.Public().(ed25519.PublicKey)
	want := uuid.NewSHA1(uuid.NameSpaceOID, []byte(FormatPubKey(pub)))
	if cfg.Node.ID != want || KeyNodeID(pub) != want {
		t.Fatalf("node.id = %s, want %s", cfg.Node.ID, want)
	}

	both := writeConfig(t, fmt.Sprintf("node:\n  label: a\n  id: %s\n  id_from_key: true\ntls:\n  cert: %s\n  key: %s\n", uuid.New(), cert, key))
	if lines := problemLines(t, func() error { _, err := Load(both); return err }()); len(lines) != 1 ||
		!strings.Contains(lines[0], ":4: node.id_from_key: node.id is set too") {
		t.Fatalf("node.id with id_from_key: %q", lines)
	}
	nokey := writeConfig(t, "node:\n  label: a\n  id_from_key: true\n")
	if lines := problemLines(t, func() error { _, err := Load(nokey); return err }()); len(lines) != 1 ||
		!strings.Contains(lines[0], "node.id_from_key: needs tls.cert and tls.key") {
		t.Fatalf("id_from_key without a key: %q", lines)
	}
}

func TestAPinnedKeyClaimsTheNodesItsEntryNames(t *testing.T) {
	pub := ed25519.PublicKey(make([]byte, 32))
	keyID := KeyNodeID(pub)
	fixed := uuid.MustParse("0f3b1c2a-7d4e-4f60-9a8b-1c2d3e4f5a6b")
	tests := []struct {
		name  string
		nodes []string
		label string
		id    uuid.UUID
		want  bool
	}{
		{"by default the entry's name with its default id", nil, "node-b", NodeIDFor("node-b"), true},
		{"by default the entry's name with the key's id", nil, "node-b", keyID, true},
		{"by default not the name with another id", nil, "node-b", fixed, false},
		{"by default not another label", nil, "node-c", NodeIDFor("node-c"), false},
		{"not another label even with the key's id", nil, "node-c", keyID, false},
		{"a listed label with its default id", []string{"b-1", "b-2"}, "b-2", NodeIDFor("b-2"), true},
		{"a listed label, not the name", []string{"b-1"}, "node-b", NodeIDFor("node-b"), false},
		{"a listed id with the name", []string{fixed.String()}, "node-b", fixed, true},
		{"a listed id only with a listed label", []string{fixed.String(), "b-1"}, "node-b", fixed, false},
		{"a listed id replaces the default ids", []string{fixed.String()}, "node-b", NodeIDFor("node-b"), false},
		{"any node with *", []string{"*"}, "whoever", uuid.New(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := &problems{seen: map[string]bool{}, source: func(string) string { return "" }}
			c := parseClaims(&Peer{Name: "node-b", Key: pub, Nodes: tt.nodes}, "tls.peers[0]", ps)
			if len(ps.list) != 0 {
				t.Fatalf("problems %v", ps.list)
			}
			if got := c.Allow(tt.label, tt.id); got != tt.want {
				t.Fatalf("Allow(%s, %s) = %v with claims %+v", tt.label, tt.id, got, c)
			}
		})
	}
}

func TestBadTrustSettingsAreProblems(t *testing.T) {
	path := writeConfig(t, `
shell:
  tcp_privileged: yes
  remote_privileged: everyone
tls:
  peers:
    - name: b
      pubkey: "ed25519:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
      nodes: ["*", "b", "b", ""]
volconf:
  from: local
`)
	_, err := Load(path)
	got := problemLines(t, err)
	want := []string{
		path + `:2: shell.tcp_privileged: must be off, loopback, pinned or all, not "yes"`,
		path + `:3: shell.remote_privileged: must be off, loopback, pinned or all, not "everyone"`,
		path + `:8: tls.peers[0].nodes: "*" stands alone: it already allows every node`,
		path + `:8: tls.peers[0].nodes[2]: "b" is already listed as nodes[1]`,
		path + `:8: tls.peers[0].nodes[3]: must not be empty`,
		path + `:10: volconf.from: must be off, loopback, pinned or all, not "local"`,
	}
	slices.Sort(got)
	slices.Sort(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("problems:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestRiskyButValidSettingsAreWarnings(t *testing.T) {
	path := writeConfig(t, `
listen:
  - tcp://0.0.0.0:9870
  - tcp://127.0.0.1:9871
shell:
  tcp: all
  tcp_privileged: all
  remote_privileged: all
media:
  - name: lab
    copies:
      - {copyid: 1, path: "span:10.0.0.2"}
      - {copyid: 2, path: "span:127.0.0.1:9"}
volconf:
  from: all
tls:
  insecure_plain_tcp: true
  peers:
    - name: b
      pubkey: "ed25519:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
      nodes: ["*"]
`)
	cfg := mustLoad(t, path)
	var got []string
	for _, w := range cfg.Warnings() {
		if !w.Warning {
			t.Errorf("%v is not marked a warning", w)
		}
		got = append(got, w.String())
	}
	wantPrefixes := []string{
		path + ":2: listen[0]: warning: tcp://0.0.0.0:9870 is plain TCP on a non-loopback address",
		path + ":6: shell.tcp_privileged: warning: every TCP peer may run privileged shell commands",
		path + ":7: shell.remote_privileged: warning: a circuit over any link may run privileged shell commands",
		path + ":11: media[0].copies[0].path: warning: span:10.0.0.2:987 is plain TCP to a non-loopback address",
		path + ":14: volconf.from: warning: every peer's LNK_VOLCONF is obeyed",
		path + `:20: tls.peers[0].nodes: warning: "*" lets b speak for every node`,
	}
	if len(got) != len(wantPrefixes) {
		t.Fatalf("warnings:\n%s", strings.Join(got, "\n"))
	}
	for i, w := range wantPrefixes {
		if !strings.HasPrefix(got[i], w) {
			t.Errorf("warning %d = %q\nwant prefix %q", i, got[i], w)
		}
	}
	if quiet := mustLoad(t, writeConfig(t, "listen: [tcp://127.0.0.1:9870]\n")); len(quiet.Warnings()) != 0 {
		t.Errorf("a loopback config warns: %v", quiet.Warnings())
	}
}

func TestOwnKeyAmongThePinsIsAWarning(t *testing.T) {
	k := newEd25519(t)
	cert, key := keyFiles(t, k, k)
	extra := "tls:\n  peers:\n    - name: me\n      pubkey: \"" + FormatPubKey(k.Public().(ed25519.PublicKey)) + "\"\n"
	path := writeConfig(t, fmt.Sprintf("listen: [tls://127.0.0.1:9870]\nnode:\n  label: a\n%s  cert: %s\n  key: %s\n", extra, cert, key))
	cfg := mustLoad(t, path, WithTLSFiles())
	if w := cfg.Warnings(); len(w) != 1 || !strings.Contains(w[0].String(), "tls.peers[0].pubkey: warning: is this node's own key") {
		t.Fatalf("warnings %v", w)
	}
}

func TestPinnedKeysAndShellGrantsChangeLiveButTheKeyDerivedIDDoesNot(t *testing.T) {
	old := mustLoad(t, writeConfig(t, diffBase))
	newer := mustLoad(t, writeConfig(t, diffBase+`tls:
  peers:
    - {name: b, pubkey: "ed25519:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}
`))
	newer.Shell.TCPPrivileged = PrivilegedLoopback
	newer.Shell.RemotePrivileged = PrivilegedPinned
	changes, restart := old.Diff(newer)
	want := []string{"shell.tcp_privileged: off -> loopback", "shell.remote_privileged: off -> pinned", "tls.peers: changed (0 -> 1 entries)"}
	if !slices.Equal(changes, want) || len(restart) != 0 {
		t.Fatalf("changes %q restart %q, want %q", changes, restart, want)
	}
	newer.Node.IDFromKey = true
	if _, restart := old.Diff(newer); !slices.Equal(restart, []string{"node.id_from_key"}) {
		t.Fatalf("restart %q", restart)
	}
}
