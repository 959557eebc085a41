//go:build !race

package e2e

// raceBuild says the tests run with the race detector: the daemons they
// start are built with it too. Without it (go test without -race) they
// run as shipped, which is what the logged rates and delays are meant
// to be read against.
const raceBuild = false
