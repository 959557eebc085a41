package iocom

import (
	"io"
	"net"
	"testing"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// A relaying reader writes small queues of other links itself
// (writeNow), but not one holding a message to finish: finishing is that
// link's work (signing, for a router), done on its writer, never on the
// time of another link's reader. A queue without one it writes at once.
func TestARelayingReaderLeavesAMessageToFinishToTheWriter(t *testing.T) {
	for _, tc := range []struct {
		name    string
		finish  bool
		written bool
	}{
		{"a plain CREATE is written by the reader", false, true},
		{"a CREATE to finish is left to the writer", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			go io.Copy(io.Discard, b) //nolint:errcheck // ends when a closes
			// Not started: no writer goroutine drains the queue.
			c := NewLink(a, Config{KeepaliveInterval: -1})
			defer c.Close()
			finished := 0
			m := dmsg.NewMsg(dmsg.LnkSpan | dmsg.FlagCreate)
			h := func(*Tx, *dmsg.Msg) {}
			var err error
			if tc.finish {
				_, err = c.OpenFinished(m, func(*dmsg.Msg) { finished++ }, h)
			} else {
				_, err = c.Open(m, h)
			}
			if err != nil {
				t.Fatal(err)
			}
			c.writeNow() // as a reader that relayed into c does
			c.mu.Lock()
			queued := !c.queueEmptyLocked()
			c.mu.Unlock()
			if queued == tc.written || finished != 0 {
				t.Fatalf("after writeNow: still queued %v, finished %d times", queued, finished)
			}
			select {
			case <-c.wake:
			default:
				if !tc.written {
					t.Fatal("the writer was not woken for the message left to it")
				}
			}
		})
	}
}
