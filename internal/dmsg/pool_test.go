package dmsg

import (
	"bytes"
	"testing"
)

func TestSizeClassesHoldTheirSizes(t *testing.T) {
	tests := []struct{ n, class int }{
		{0, 0}, {1, 1}, {64, 1}, {65, 2}, {128, 2}, {4096, 7},
		{1 << 20, 15}, {MaxHeaderSize + MaxAuxSize, numClasses},
	}
	for _, tt := range tests {
		if got := classOf(tt.n); got != tt.class {
			t.Errorf("classOf(%d) = %d, want %d", tt.n, got, tt.class)
		}
		if tt.n > 0 && classSize(classOf(tt.n)) < tt.n {
			t.Errorf("class of %d holds only %d bytes", tt.n, classSize(classOf(tt.n)))
		}
	}
}

func TestAReleasedMessageComesBackEmpty(t *testing.T) {
	var stream bytes.Buffer
	enc := NewEncoder(&stream)
	for i := range 100 {
		m := NewSpanMsg(FlagCreate, &Span{Dist: uint32(i), FsLabel: "n"})
		m.MsgID = uint64(i + 1)
		m.SetAux(bytes.Repeat([]byte{byte(i)}, 100+i))
		if err := enc.Encode(m); err != nil {
			t.Fatal(err)
		}
	}
	dec := NewDecoder(&stream)
	for i := range 100 {
		m, err := dec.Decode()
		if err != nil {
			t.Fatal(err)
		}
		s, _ := m.Span()
		if m.MsgID != uint64(i+1) || s.Dist != uint32(i) || !bytes.Equal(m.Aux, bytes.Repeat([]byte{byte(i)}, 100+i)) {
			t.Fatalf("message %d decoded wrong after reuse: msgid %d dist %d", i, m.MsgID, s.Dist)
		}
		m.Release()
		if m.MsgID != 0 || m.Aux != nil || m.Ext != nil || m.Cmd != 0 {
			t.Fatalf("released message keeps its contents: %+v", m.Header)
		}
	}
}

func TestReleasingAMessageNotFromADecoderDoesNothing(t *testing.T) {
	m := NewMsg(LnkPing)
	m.MsgID = 7
	m.Release()
	if m.MsgID != 7 {
		t.Fatal("Release reset a message the caller built")
	}
}
