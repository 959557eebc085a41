// Package testnet is test support shared by the packages whose tests run
// whole routers in one process: polling with deadlines instead of sleeps,
// a per-test logger, the goroutine-leak and panic check of TestMain, and a
// router serving on loopback for the length of a test. Only tests import
// it; it exists as a package so those tests do not each carry a copy.
package testnet
