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
// The package is pure: it never opens sockets, never reads certificates
// or keys and never logs. Applying a configuration (binding listeners,
// dialing targets, changing the log level) is the daemon's business.
package config
