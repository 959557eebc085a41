// Package e2e holds dmsgd's end-to-end tests: they build the dmsgd binary,
// start real daemons on loopback from config files, as an operator would,
// and look at them with `dmsgd tree`. The attack_*_test.go files play
// hostile peers against one daemon each while a well-behaved leaf and a
// watcher measure what it costs (`make attack` runs them at full scale).
// The package has no code of its own.
package e2e
