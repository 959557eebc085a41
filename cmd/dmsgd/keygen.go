package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/dmsgd/dmsgd/internal/config"
)

// Key pair file names inside the keygen directory.
const (
	keyFileName  = "node.key"
	certFileName = "node.crt"
)

func newKeygenCmd() *cobra.Command {
	var dir, name string
	cmd := &cobra.Command{
		Use:   "keygen --dir DIR",
		Short: "Create this node's Ed25519 key and certificate",
		Long: "Create DIR/node.key (PEM PKCS#8 Ed25519 private key, mode 0600) and " +
			"DIR/node.crt (a self-signed X.509 certificate for it) unless they " +
			"exist, and print the public key as ed25519:<base64> for the peers' " +
			"tls.peers lists.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				h, err := os.Hostname()
				if err != nil {
					return fmt.Errorf("keygen: host name for the certificate: %w (use --name)", err)
				}
				name = h
			}
			res, err := ensureKeyPair(dir, name, time.Now())
			if err != nil {
				return fmt.Errorf("keygen: %w", err)
			}
			for _, p := range res.created {
				fmt.Fprintf(cmd.ErrOrStderr(), "created %s\n", p)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), config.FormatPubKey(res.pub))
			return err
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory for node.key and node.crt (created if missing)")
	cmd.Flags().StringVar(&name, "name", "", "certificate subject name (default: the host name)")
	if err := cmd.MarkFlagRequired("dir"); err != nil {
		panic(err) // the flag is defined just above
	}
	return cmd
}

// keyPairResult is what ensureKeyPair found or made.
type keyPairResult struct {
	pub     ed25519.PublicKey
	created []string // paths written
}

// ensureKeyPair makes sure dir holds a private key and a certificate for
// it, creating whichever is missing and never overwriting a file. An
// existing certificate must match the key.
func ensureKeyPair(dir, name string, now time.Time) (keyPairResult, error) {
	var res keyPairResult
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return res, fmt.Errorf("create directory: %w", err)
	}
	keyPath := filepath.Join(dir, keyFileName)
	certPath := filepath.Join(dir, certFileName)

	priv, err := readPrivateKey(keyPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, serr := os.Stat(certPath); serr == nil {
			return res, fmt.Errorf("%s exists without %s; restore the key or remove the certificate", certPath, keyPath)
		}
		_, priv, err = ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return res, fmt.Errorf("generate key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return res, fmt.Errorf("encode key: %w", err)
		}
		if err := writeNewFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return res, err
		}
		res.created = append(res.created, keyPath)
	case err != nil:
		return res, err
	}
	res.pub = priv.Public().(ed25519.PublicKey)

	certPub, err := readCertificateKey(certPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		der, err := selfSignedCert(priv, name, now)
		if err != nil {
			return res, err
		}
		if err := writeNewFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
			return res, err
		}
		res.created = append(res.created, certPath)
	case err != nil:
		return res, err
	case !bytes.Equal(certPub, res.pub):
		return res, fmt.Errorf("%s is not the certificate of %s", certPath, keyPath)
	}
	return res, nil
}

// readPrivateKey reads a PEM PKCS#8 Ed25519 private key.
func readPrivateKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: no PEM PRIVATE KEY block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: a %T, not an Ed25519 key", path, k)
	}
	return priv, nil
}

// readCertificateKey reads a PEM certificate and returns its Ed25519
// public key.
func readCertificateKey(path string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE block", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: certifies a %T, not an Ed25519 key", path, cert.PublicKey)
	}
	return pub, nil
}

// selfSignedCert returns the DER of a self-signed certificate for priv,
// usable by both ends of a mutual TLS link. Peers are pinned by key, so it
// carries no meaningful expiry (RFC 5280 4.1.2.5).
func selfSignedCert(priv ed25519.PrivateKey, name string, now time.Time) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if isDNSName(name) {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	return der, nil
}

// isDNSName reports whether name can be a certificate's DNS name.
func isDNSName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// writeNewFile creates path with data and mode, failing if it exists; a
// partly written file is removed.
func writeNewFile(path string, data []byte, mode os.FileMode) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close %s: %w", path, cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	if err := f.Chmod(mode); err != nil { // umask may have narrowed it
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}
