package router_test

import (
	"testing"

	"github.com/dmsgd/dmsgd/internal/testnet"
)

// TestMain fails the package if any goroutine outlives the tests or link
// code recovered from a panic.
func TestMain(m *testing.M) { testnet.Main(m) }
