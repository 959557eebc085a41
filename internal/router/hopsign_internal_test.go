package router

import (
	"crypto/ed25519"
	"testing"
)

func hopSig(b byte) [ed25519.SignatureSize]byte {
	var s [ed25519.SignatureSize]byte
	s[0] = b
	return s
}

func TestTheHopCacheKeepsTwoGenerationsAndWhatIsUsed(t *testing.T) {
	c := hopCache{generation: 4}
	key := func(i int) hopKey { return hopKey{byte(i)} }
	for i := range 8 {
		c.put(key(i), hopSig(byte(i)))
	}
	if n := c.len(); n != 8 {
		t.Fatalf("holds %d after 8 puts, want 8 (two generations of 4)", n)
	}
	// 0..3 are the older generation; using 1 moves it to the newer one,
	// which is full, so 4..7 become the older and 0, 2, 3 are dropped.
	if sig, ok := c.get(key(1)); !ok || sig != hopSig(1) {
		t.Fatalf("get(1) = %v, %v", sig[0], ok)
	}
	for i, want := range []bool{false, true, false, false, true, true, true, true} {
		if _, ok := c.get(key(i)); ok != want {
			t.Errorf("after using 1, entry %d held = %v, want %v", i, ok, want)
		}
	}
	for i := range 100 {
		c.put(key(100+i), hopSig(0))
		if n := c.len(); n > 8 {
			t.Fatalf("holds %d, more than two generations of 4", n)
		}
	}
}

func TestTheHopCacheZeroValueIsEmptyAndUsable(t *testing.T) {
	var c hopCache
	if _, ok := c.get(hopKey{}); ok {
		t.Fatal("an empty cache found a signature")
	}
	c.put(hopKey{1}, hopSig(7))
	if sig, ok := c.get(hopKey{1}); !ok || sig != hopSig(7) {
		t.Fatalf("get = %v, %v", sig[0], ok)
	}
}
