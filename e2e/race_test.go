//go:build race

package e2e

// raceBuild says the tests run with the race detector: the daemons they
// start are built with it too.
const raceBuild = true
