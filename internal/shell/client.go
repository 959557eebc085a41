package shell

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/dmsg"
	"github.com/dmsgd/dmsgd/internal/iocom"
)

// Client is the shell side of a debug shell link: it speaks to a router's
// shell socket as hammer2's shell client does (docs/PROTOCOL.md section 7).
type Client struct {
	conn  *iocom.Link
	out   chan string // DBG_SHELL|REPLY texts, in order
	hello sync.Once   // the first prompt is asked for once
}

// clientHandler refuses the router's LNK_CONN, as shell clients do, and
// asks for the first prompt once it has arrived.
type clientHandler struct{ c *Client }

func (h clientHandler) Accept(tx *iocom.Tx, m *dmsg.Msg) iocom.TxHandler {
	if b := dmsg.Base(m.Cmd); b == dmsg.LnkConn || b == dmsg.LnkConnV2 {
		tx.CloseError(dmsg.ErrNoSupp)
		// A router may send its LNK_CONN twice (section 10 fallback);
		// one prompt is enough.
		h.c.hello.Do(func() { h.c.send("") })
	}
	return nil
}

func (h clientHandler) OneWay(_ *iocom.Link, m *dmsg.Msg) {
	if dmsg.Base(m.Cmd) != dmsg.DbgShell || m.Cmd&dmsg.FlagReply == 0 {
		return
	}
	select {
	case h.c.out <- strings.TrimRight(string(m.Aux), "\x00"):
	case <-h.c.conn.Done():
	}
}

// Dial connects to the shell socket at path and waits for the first
// prompt.
func Dial(ctx context.Context, path, label string) (*Client, error) {
	nc, err := iocom.Dial(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	c := &Client{out: make(chan string, 256)}
	c.conn = iocom.NewLink(nc, iocom.Config{ID: "shell", Handler: clientHandler{c}, Logger: zap.NewNop()})
	c.conn.Start()
	conn := dmsg.Conn{PeerType: dmsg.PeerClient, ProtoVersion: 1, FsLabel: label}
	if _, err := c.conn.Open(dmsg.NewConnMsg(0, &conn, false), func(*iocom.Tx, *dmsg.Msg) {}); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := c.collect(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("shell %s: %w", path, err)
	}
	return c, nil
}

func (c *Client) send(line string) error {
	m := dmsg.NewMsg(dmsg.DbgShell)
	if line != "" {
		m.SetAux(append([]byte(line), 0))
	}
	return c.conn.SendOneWay(m)
}

// errLinkClosed reports a router that went away mid-command.
var errLinkClosed = errors.New("the router closed the shell link")

// collect gathers output up to the next prompt.
func (c *Client) collect(ctx context.Context) (string, error) {
	var b strings.Builder
	for {
		select {
		case s := <-c.out:
			if s == Prompt {
				return b.String(), nil
			}
			b.WriteString(s)
		case <-c.conn.Done():
			return b.String(), errLinkClosed
		case <-ctx.Done():
			return b.String(), ctx.Err()
		}
	}
}

// Run runs one command line and returns its output, without the prompt.
func (c *Client) Run(ctx context.Context, line string) (string, error) {
	if err := c.send(line); err != nil {
		return "", err
	}
	return c.collect(ctx)
}

// Async returns output that arrived after a command's prompt (such as
// `ping reply`), without waiting.
func (c *Client) Async() string {
	var b strings.Builder
	for {
		select {
		case s := <-c.out:
			b.WriteString(s)
		default:
			return b.String()
		}
	}
}

// Close leaves the shell by closing the link, as shell clients do.
func (c *Client) Close() {
	c.conn.Close()
	<-c.conn.Done()
}
