package iocom

import (
	"fmt"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/dmsgd/dmsgd/internal/dmsg"
)

// The transaction budget (Config.MaxTransactions, Config.Transactions).
//
// Every transaction the peer opens costs the router state until the peer
// closes it: the state machine must remember it to accept the peer's
// later DELETE, also after refusing it (docs/PROTOCOL.md 3). So each CREATE is
// charged before its state is allocated, in every circuit scope, refused
// or not, and released when the transaction is finished or its link or
// circuit is lost.
//
// A CREATE beyond the budget is refused on the wire with PARAM, but its
// state is still kept so the peer's DELETE stays legal. Those refusals
// are an overdraft: a peer may hold only a few of them open
// (overdraftOf), and one that keeps opening transactions past it is
// flooding; its link is closed.
//
// A transaction that another budget accounts for once accepted (a span,
// a circuit) is released from this one by its handler (Tx.Uncharge), so
// the transaction budget bounds what nothing else does: transactions
// refused, of unknown commands, or of no other budget. The sizes of the
// span and circuit budgets then need no room here.
//
// The router-wide pool is shared by the dynamic-threshold rule of shared
// buffers: a link holding h of a pool of max with total in use may take
// one more only while h < max-total. One link alone gets at most half of
// the pool, n flooding links together n/(n+1) of it, and the rest stays
// free for the links holding less: the light, well-behaved peers.

// TxPool is the router-wide budget of transactions the peers of all links
// hold open. It is safe for concurrent use; a nil *TxPool bounds nothing.
type TxPool struct {
	max   atomic.Int64
	inUse atomic.Int64
}

// NewTxPool returns a pool of max transactions; max <= 0 bounds nothing.
func NewTxPool(max int) *TxPool {
	p := &TxPool{}
	p.SetMax(max)
	return p
}

// SetMax changes the pool's size. Transactions already held stay; a
// smaller pool only refuses new ones.
func (p *TxPool) SetMax(max int) { p.max.Store(int64(max)) }

// InUse returns the transactions held open in the pool.
func (p *TxPool) InUse() int {
	if p == nil {
		return 0
	}
	return int(p.inUse.Load())
}

// take takes one transaction for a link that holds held of them, if the
// dynamic threshold allows it.
func (p *TxPool) take(held int) bool {
	if p == nil {
		return true
	}
	for {
		total, max := p.inUse.Load(), p.max.Load()
		if max > 0 && int64(held) >= max-total {
			return false
		}
		if p.inUse.CompareAndSwap(total, total+1) {
			return true
		}
	}
}

func (p *TxPool) put() {
	if p != nil {
		p.inUse.Add(-1)
	}
}

// txCharge is what a transaction the peer opened is charged to.
type txCharge uint8

const (
	txFree     txCharge = iota // opened by this side: not charged
	txCharged                  // within the budget
	txOverLink                 // refused over limitTxPerLink: an overdraft
	txOverPool                 // refused over limitTxPool: an overdraft
)

// overBudget reports whether the transaction was refused over a budget,
// and names it.
func (ch txCharge) overBudget() (string, bool) {
	switch ch {
	case txOverLink:
		return limitTxPerLink, true
	case txOverPool:
		return limitTxPool, true
	}
	return "", false
}

// overdraftOf is how many refused transactions over a budget a peer may
// hold open: enough for a peer that pipelines a burst before it sees the
// first refusal, few enough that the state they pin is small.
func overdraftOf(budget int) int {
	return min(max(budget/8, 8), 256)
}

// TxBudgetError closes a link whose peer kept opening transactions after
// they were refused over its budget.
type TxBudgetError struct {
	Limit    string // the config key under limits:
	Open     int    // transactions the peer held open
	Refusals int    // of them refused over the budget
}

func (e *TxBudgetError) Error() string {
	return fmt.Sprintf("peer kept opening transactions past limits.%s: %d open, %d of them refused",
		e.Limit, e.Open, e.Refusals)
}

// txLimit names the budget a refusal hit, for the log and the metric.
const (
	limitTxPerLink = "max_transactions_per_link"
	limitTxPool    = "max_transactions"
)

// chargeTxLocked charges a CREATE the peer sent, before its state exists,
// or returns an error if the link must close instead. Called with c.mu
// held.
func (c *Link) chargeTxLocked() (txCharge, error) {
	held := c.txs.charged
	switch {
	case c.cfg.MaxTransactions > 0 && held >= c.cfg.MaxTransactions:
		return c.overdraftLocked(txOverLink)
	case !c.cfg.Transactions.take(held):
		return c.overdraftLocked(txOverPool)
	}
	c.txs.charged++
	return txCharged, nil
}

// overdraftLocked charges a CREATE refused over a budget.
func (c *Link) overdraftLocked(ch txCharge) (txCharge, error) {
	budget := c.cfg.MaxTransactions
	if budget <= 0 {
		budget = int(c.cfg.Transactions.max.Load())
	}
	if c.txs.overdraft >= overdraftOf(budget) {
		limit, _ := ch.overBudget()
		return txFree, &TxBudgetError{Limit: limit, Open: c.txs.charged + c.txs.overdraft, Refusals: c.txs.overdraft}
	}
	c.txs.overdraft++
	return ch, nil
}

// releaseTxLocked releases what a finished transaction was charged.
// Called with c.mu held.
func (c *Link) releaseTxLocked(tx *Tx) {
	switch tx.charge {
	case txCharged:
		c.txs.charged--
		c.cfg.Transactions.put()
	case txOverLink, txOverPool:
		c.txs.overdraft--
	}
	tx.charge = txFree
}

// txCounts is a Link's count of the transactions its peer holds open,
// guarded by the Link's mutex.
type txCounts struct {
	charged   int // within the budget
	overdraft int // refused over it, not closed by the peer yet
}

// refuseOverBudget answers a CREATE refused over a budget: PARAM on the
// wire, one rate-limited line and a count.
func (c *Link) refuseOverBudget(tx *Tx, m *dmsg.Msg, limit string) {
	tx.handler = nil
	c.cfg.Metrics.LimitHit(limit)
	c.cfg.Events.Warn("tx_over_budget", "transaction refused: limits."+limit+" reached",
		zap.String("link", c.cfg.ID), zap.String("peer", c.remote),
		zap.String("cmd", dmsg.CmdString(m.Cmd)), zap.Uint64("circuit", m.Circuit))
	tx.CloseError(dmsg.ErrParam)
}

// txBudgetFailed logs and counts a link (or, inside a circuit, the
// circuit) closed for flooding transactions.
func (c *Link) txBudgetFailed(err *TxBudgetError, circuit uint64) {
	c.cfg.Metrics.LimitHit(err.Limit)
	what := "link closed"
	if circuit != 0 {
		what = "circuit closed"
	}
	c.cfg.Events.Warn("tx_flood", what+": peer keeps opening transactions past its budget",
		zap.String("link", c.cfg.ID), zap.String("peer", c.remote), zap.Uint64("circuit", circuit), zap.Error(err))
}

// Uncharge releases a transaction the peer opened from the link's
// transaction budget (Config.MaxTransactions, Config.Transactions):
// its handler accepted it under a budget of its own, such as the spans
// or circuits a peer may hold. Accept calls it; a transaction refused
// stays charged until the peer closes it.
func (tx *Tx) Uncharge() {
	c := tx.conn
	c.mu.Lock()
	defer c.mu.Unlock()
	if tx.charge == txCharged {
		c.releaseTxLocked(tx)
	}
}
