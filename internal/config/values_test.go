package config

import (
	"crypto/ed25519"
	"strings"
	"testing"
)

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want ByteSize
		err  string // substring; "" for success
	}{
		{"a bare number is bytes", "4096", 4096, ""},
		{"B is bytes", "512B", 512, ""},
		{"KiB is 1024 bytes", "2KiB", 2048, ""},
		{"MiB is 1024 KiB", "16MiB", 16 << 20, ""},
		{"GiB is 1024 MiB", "1GiB", 1 << 30, ""},
		{"KB is 1000 bytes", "3KB", 3000, ""},
		{"MB is 1000 KB", "2MB", 2000000, ""},
		{"GB is 1000 MB", "1GB", 1000000000, ""},
		{"units are case-insensitive", "4mib", 4 << 20, ""},
		{"a space may separate the unit", "4 MiB", 4 << 20, ""},
		{"zero is a size", "0", 0, ""},
		{"fractions are refused", "1.5MiB", 0, "whole number"},
		{"negative sizes are refused", "-1", 0, "whole number"},
		{"unknown units are refused", "3TB", 0, "whole number"},
		{"a unit alone is refused", "MiB", 0, "missing number"},
		{"an empty string is refused", "", 0, "missing number"},
		{"an overflow is refused", "9999999999GiB", 0, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseByteSize(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseByteSize(%q) error = %v, want one containing %q", tt.in, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseByteSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestByteSizeStringUsesTheLargestExactUnit(t *testing.T) {
	for in, want := range map[ByteSize]string{
		0: "0", 1000: "1000", 1024: "1KiB", 16 << 20: "16MiB", 3 << 30: "3GiB", 1536: "1536",
	} {
		if got := in.String(); got != want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(in), got, want)
		}
	}
}

func TestSizesInTheFileAcceptIntegersAndUnits(t *testing.T) {
	cfg := mustLoad(t, writeConfig(t, "limits:\n  queue_bytes_per_link: 1048576\n  circuit_queue_bytes: 64KiB\n"))
	if cfg.Limits.QueueBytesPerLink != 1<<20 || cfg.Limits.CircuitQueueBytes != 64<<10 {
		t.Errorf("limits = %+v", cfg.Limits)
	}
}

func TestParseSpanPath(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Target
		addr string
		err  string
	}{
		{"a host takes the default port", "span:node-b", Target{Host: "node-b", Port: 987}, "node-b:987", ""},
		{"an IPv4 address with a port", "span:10.0.0.2:9871", Target{Host: "10.0.0.2", Port: 9871}, "10.0.0.2:9871", ""},
		{"span+tls selects TLS", "span+tls:10.0.0.2", Target{TLS: true, Host: "10.0.0.2", Port: 987}, "10.0.0.2:987", ""},
		{"a bracketed IPv6 address with a port", "span:[::1]:987", Target{Host: "::1", Port: 987}, "[::1]:987", ""},
		{"a bracketed IPv6 address takes the default port", "span+tls:[fe80::1]", Target{TLS: true, Host: "fe80::1", Port: 987}, "[fe80::1]:987", ""},
		{"a dotted host name", "span:a.example.org:1", Target{Host: "a.example.org", Port: 1}, "a.example.org:1", ""},
		{"an unknown scheme is refused", "tcp:10.0.0.2", Target{}, "", `must start with "span:"`},
		{"a missing scheme is refused", "10.0.0.2", Target{}, "", `must start with "span:"`},
		{"a missing host is refused", "span:", Target{}, "", "missing host"},
		{"an empty host with a port is refused", "span::987", Target{}, "", "missing host"},
		{"an unbracketed IPv6 address is refused", "span:::1", Target{}, "", "must be in brackets"},
		{"an unclosed bracket is refused", "span:[::1", Target{}, "", "missing ']'"},
		{"an IPv4 address in brackets is refused", "span:[10.0.0.1]", Target{}, "", "not an IPv6 address"},
		{"junk after the bracket is refused", "span:[::1]x", Target{}, "", "after ']'"},
		{"a missing port is refused", "span:host:", Target{}, "", "missing port"},
		{"a named port is refused", "span:host:dmsg", Target{}, "", "not a number"},
		{"port 0 is refused", "span:host:0", Target{}, "", "1..65535"},
		{"a port over 65535 is refused", "span:host:65536", Target{}, "", "out of range"},
		{"a space in the host is refused", "span:a b", Target{}, "", "contains"},
		{"a path in the host is refused", "span:a/b", Target{}, "", "contains"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSpanPath(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseSpanPath(%q) error = %v, want one containing %q", tt.in, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseSpanPath(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			if got.Addr() != tt.addr {
				t.Errorf("Addr() = %q, want %q", got.Addr(), tt.addr)
			}
			again, err := ParseSpanPath(got.String())
			if err != nil || again != got {
				t.Errorf("String() %q does not parse back: %+v, %v", got.String(), again, err)
			}
		})
	}
}

func TestParseListen(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		want     Listener
		loopback bool
		err      string
	}{
		{"a loopback TCP listener", "tcp://127.0.0.1:9870", Listener{"tcp", "127.0.0.1:9870"}, true, ""},
		{"a TLS listener on all addresses", "tls://0.0.0.0:987", Listener{"tls", "0.0.0.0:987"}, false, ""},
		{"an empty host means all addresses", "tcp://:987", Listener{"tcp", ":987"}, false, ""},
		{"an IPv6 loopback listener", "tcp://[::1]:987", Listener{"tcp", "[::1]:987"}, true, ""},
		{"port 0 picks a free port", "tcp://127.0.0.1:0", Listener{"tcp", "127.0.0.1:0"}, true, ""},
		{"an absolute unix socket", "unix:///run/dmsgd/dmsgd.sock", Listener{"unix", "/run/dmsgd/dmsgd.sock"}, false, ""},
		{"a relative unix socket", "unix://./run/dmsgd.sock", Listener{"unix", "./run/dmsgd.sock"}, false, ""},
		{"a missing scheme is refused", "127.0.0.1:987", Listener{}, false, "must be tcp://"},
		{"an unknown scheme is refused", "udp://127.0.0.1:987", Listener{}, false, "unknown scheme"},
		{"a missing port is refused", "tcp://127.0.0.1", Listener{}, false, "HOST:PORT"},
		{"a named port is refused", "tcp://127.0.0.1:dmsg", Listener{}, false, "not a number"},
		{"an empty unix path is refused", "unix://", Listener{}, false, "missing socket path"},
		{"a bad host is refused", "tcp://a b:1", Listener{}, false, "contains"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseListen(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseListen(%q) error = %v, want one containing %q", tt.in, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseListen(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			if got.IsLoopback() != tt.loopback {
				t.Errorf("IsLoopback() = %v, want %v", got.IsLoopback(), tt.loopback)
			}
			if got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func TestPeerTypes(t *testing.T) {
	tests := []struct {
		in   string
		want PeerType
		err  bool
	}{
		{"router", PeerRouter, false},
		{"ROUTER", PeerRouter, false},
		{"none", PeerNone, false},
		{"block", PeerBlock, false},
		{"hammer2", PeerHammer2, false},
		{"client", PeerClient, false},
		{"17", 17, false},
		{"63", PeerClient, false},
		{"64", 0, true},
		{"-1", 0, true},
		{"switch", 0, true},
	}
	for _, tt := range tests {
		t.Run("parsing "+tt.in, func(t *testing.T) {
			got, err := ParsePeerType(tt.in)
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("ParsePeerType(%q) = %v, %v", tt.in, got, err)
			}
		})
	}
	if PeerType(17).String() != "17" || PeerHammer2.String() != "hammer2" {
		t.Error("PeerType.String does not print names and numbers")
	}
}

func TestPublicKeysRoundTrip(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := FormatPubKey(pub)
	if !strings.HasPrefix(s, "ed25519:") || len(s) != len("ed25519:")+44 {
		t.Fatalf("FormatPubKey = %q", s)
	}
	got, err := ParsePubKey(s)
	if err != nil || !got.Equal(pub) {
		t.Fatalf("ParsePubKey(%q) = %x, %v", s, got, err)
	}
	if got, err := ParsePubKey(strings.TrimRight(s, "=")); err != nil || !got.Equal(pub) {
		t.Errorf("unpadded base64 is refused: %v", err)
	}
	for _, bad := range []string{"", "AAAA", "ed25519:", "ed25519:!!!!", "ed25519:AAAA", "rsa:" + s[8:]} {
		if _, err := ParsePubKey(bad); err == nil {
			t.Errorf("ParsePubKey(%q) accepted a bad key", bad)
		}
	}
}
