package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmsgd/dmsgd/internal/config"
)

// keygen runs `dmsgd keygen --dir dir` and returns the printed key.
func keygen(t *testing.T, dir string) (string, string, int) {
	t.Helper()
	stdout, stderr, code := runDmsgd(t, "keygen", "--dir", dir, "--name", "node-a")
	return strings.TrimSpace(stdout), stderr, code
}

func readPEM(t *testing.T, path, typ string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != typ || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("%s is not one PEM %s block", path, typ)
	}
	return block.Bytes
}

func TestKeygenCreatesAKeyAndAMatchingCertificate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	printed, stderr, code := keygen(t, dir)
	if code != 0 {
		t.Fatalf("keygen exited %d: %s", code, stderr)
	}
	keyPath, certPath := filepath.Join(dir, "node.key"), filepath.Join(dir, "node.crt")

	fi, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("node.key mode = %o, want 600", fi.Mode().Perm())
	}
	k, err := x509.ParsePKCS8PrivateKey(readPEM(t, keyPath, "PRIVATE KEY"))
	if err != nil {
		t.Fatalf("node.key is not PKCS#8: %v", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		t.Fatalf("node.key holds a %T", k)
	}
	pub := priv.Public().(ed25519.PublicKey)

	cert, err := x509.ParseCertificate(readPEM(t, certPath, "CERTIFICATE"))
	if err != nil {
		t.Fatalf("node.crt: %v", err)
	}
	if !pub.Equal(cert.PublicKey) {
		t.Error("node.crt does not certify node.key")
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		t.Errorf("node.crt is not self-signed: %v", err)
	}
	if cert.Subject.CommonName != "node-a" {
		t.Errorf("certificate subject = %q, want node-a", cert.Subject.CommonName)
	}

	if printed != config.FormatPubKey(pub) {
		t.Errorf("printed %q, want %q", printed, config.FormatPubKey(pub))
	}
	if got, err := config.ParsePubKey(printed); err != nil || !got.Equal(pub) {
		t.Errorf("the printed key does not parse as a tls.peers pubkey: %v", err)
	}
}

func TestKeygenNeverOverwritesExistingFiles(t *testing.T) {
	dir := t.TempDir()
	first, _, code := keygen(t, dir)
	if code != 0 {
		t.Fatal("first keygen failed")
	}
	key, _ := os.ReadFile(filepath.Join(dir, "node.key"))
	crt, _ := os.ReadFile(filepath.Join(dir, "node.crt"))

	second, stderr, code := keygen(t, dir)
	if code != 0 || second != first {
		t.Fatalf("second keygen: code %d, printed %q, want %q (%s)", code, second, first, stderr)
	}
	key2, _ := os.ReadFile(filepath.Join(dir, "node.key"))
	crt2, _ := os.ReadFile(filepath.Join(dir, "node.crt"))
	if !bytes.Equal(key, key2) || !bytes.Equal(crt, crt2) {
		t.Error("keygen rewrote existing files")
	}
}

func TestKeygenCertifiesAnExistingKeyWithoutACertificate(t *testing.T) {
	dir := t.TempDir()
	first, _, _ := keygen(t, dir)
	if err := os.Remove(filepath.Join(dir, "node.crt")); err != nil {
		t.Fatal(err)
	}
	again, stderr, code := keygen(t, dir)
	if code != 0 || again != first {
		t.Fatalf("code %d, printed %q, want %q (%s)", code, again, first, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "node.crt")); err != nil {
		t.Errorf("no certificate was made: %v", err)
	}
}

func TestKeygenRefusesInconsistentFiles(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{
			name: "a certificate without its key",
			setup: func(t *testing.T, dir string) {
				keygen(t, dir)
				os.Remove(filepath.Join(dir, "node.key"))
			},
			want: "exists without",
		},
		{
			name: "a certificate of another key",
			setup: func(t *testing.T, dir string) {
				keygen(t, dir)
				other := t.TempDir()
				keygen(t, other)
				crt, _ := os.ReadFile(filepath.Join(other, "node.crt"))
				os.WriteFile(filepath.Join(dir, "node.crt"), crt, 0o644)
			},
			want: "is not the certificate of",
		},
		{
			name: "a key file that is not a key",
			setup: func(t *testing.T, dir string) {
				os.WriteFile(filepath.Join(dir, "node.key"), []byte("hello\n"), 0o600)
			},
			want: "no PEM PRIVATE KEY block",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			before, _ := os.ReadFile(filepath.Join(dir, "node.key"))
			printed, stderr, code := keygen(t, dir)
			if code != 1 || printed != "" || !strings.Contains(stderr, tt.want) {
				t.Errorf("code %d, stdout %q, stderr %q; want exit 1 and %q", code, printed, stderr, tt.want)
			}
			after, _ := os.ReadFile(filepath.Join(dir, "node.key"))
			if !bytes.Equal(before, after) {
				t.Error("the key file was changed")
			}
		})
	}
}

func TestKeygenRequiresDir(t *testing.T) {
	_, stderr, code := runDmsgd(t, "keygen")
	if code != 1 || !strings.Contains(stderr, `"dir" not set`) {
		t.Errorf("code %d, stderr %q", code, stderr)
	}
}
