package iocom

// SetUnixBound makes listenUnix call f once a socket can be reached at its
// path, until the returned function restores the previous hook.
func SetUnixBound(f func(path string)) (restore func()) {
	old := unixBound
	unixBound = f
	return func() { unixBound = old }
}
