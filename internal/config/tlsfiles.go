package config

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// Identity is this node's TLS key pair: the certificate it presents and
// the Ed25519 key that signs its handshakes and its advertisements.
type Identity struct {
	Cert tls.Certificate
	Priv ed25519.PrivateKey
	Pub  ed25519.PublicKey
}

// fileError is a problem with one of the two files: Key names the config
// key that named it.
type fileError struct {
	Key string
	Err error
}

func (e *fileError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *fileError) Unwrap() error { return e.Err }

// ReadIdentity reads and checks tls.cert and tls.key: a PEM certificate
// of an Ed25519 key (what dmsgd peers pin), a PEM PKCS#8 Ed25519 private
// key, and the two must belong together. An error names the key of the
// file at fault ("tls.cert: ...").
func ReadIdentity(c TLS) (*Identity, error) {
	pub, certDER, err := readCertKey(c.Cert)
	if err != nil {
		return nil, &fileError{"tls.cert", err}
	}
	priv, err := readPrivKey(c.Key)
	if err != nil {
		return nil, &fileError{"tls.key", err}
	}
	if own := priv.Public().(ed25519.PublicKey); !own.Equal(pub) {
		return nil, &fileError{"tls.key", fmt.Errorf("%s is not the key of tls.cert %s (the key is %s, the certificate's %s)",
			c.Key, c.Cert, FormatPubKey(own), FormatPubKey(pub))}
	}
	return &Identity{
		Cert: tls.Certificate{Certificate: [][]byte{certDER}, PrivateKey: priv},
		Priv: priv,
		Pub:  pub,
	}, nil
}

// readCertKey reads a PEM certificate and returns its Ed25519 key and DER.
func readCertKey(path string) (ed25519.PublicKey, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot read %s: %w", path, unwrapPath(err))
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s holds no PEM CERTIFICATE block", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, nil, fmt.Errorf("%s certifies a %T key; dmsgd peers pin Ed25519 keys (create one with dmsgd keygen)", path, cert.PublicKey)
	}
	return pub, block.Bytes, nil
}

// readPrivKey reads a PEM PKCS#8 Ed25519 private key.
func readPrivKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, unwrapPath(err))
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s holds no PEM PRIVATE KEY block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s holds a %T key, not an Ed25519 key", path, k)
	}
	return priv, nil
}

// unwrapPath drops the path an *fs.PathError repeats.
func unwrapPath(err error) error {
	var pe interface{ Unwrap() error }
	if errors.As(err, &pe) {
		if inner := pe.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// checkTLSFiles reads the TLS files the configuration names (WithTLSFiles),
// reports what is wrong with them where their keys are, fills
// TLS.Identity and derives node.id from the key when node.id_from_key
// says so.
func checkTLSFiles(c *Config, ps, ws *problems) {
	if c.TLS.Cert == "" || c.TLS.Key == "" {
		return // validate reported a half-configured pair
	}
	id, err := ReadIdentity(c.TLS)
	if err != nil {
		var fe *fileError
		if errors.As(err, &fe) {
			ps.add(fe.Key, "%v", fe.Err)
		} else {
			ps.add("tls", "%v", err)
		}
		return
	}
	c.TLS.Identity = id
	if c.Node.IDFromKey {
		c.Node.ID = KeyNodeID(id.Pub)
	}
	for i, p := range c.TLS.Peers {
		if p.Key.Equal(id.Pub) {
			ws.add(fmt.Sprintf("tls.peers[%d].pubkey", i), "is this node's own key (tls.key)")
		}
	}
}
