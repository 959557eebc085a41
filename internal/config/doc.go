// Package config owns dmsgd's configuration: the typed Config of the
// operator's contract, its defaults, loading from one YAML file through
// viper with DMSGD_<SECTION>_<KEY> environment overrides, validation that
// reports every problem as FILE:LINE: key: problem, and the difference
// between two configurations that a SIGHUP reload needs.
//
// It also owns the syntax of the addresses an operator writes: listener
// URLs (tcp://, tls://, unix://), span targets (span:HOST[:PORT] and
// span+tls:HOST[:PORT], shared with VOLCONF copy paths), pinned Ed25519
// public keys and byte sizes.
//
// Every value reaches Config one way: viper gathers the file, the
// environment and command-line overrides, and viper.Unmarshal decodes them
// through mapstructure with decode hooks for dmsgd's own types (decode.go).
// The file's YAML tree is kept only to place problems at their lines and
// to refuse duplicate keys.
//
// The package never opens sockets and never logs; it reads the TLS files a
// configuration names only when asked (WithTLSFiles). Applying a configuration (binding listeners,
// dialing targets, changing the log level) is the daemon's business.
package config
