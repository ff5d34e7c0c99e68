//go:build !linux

package redistest

import "syscall"

// sysProcAttr: only Linux can tie the server's life to the test binary's;
// elsewhere t.Cleanup is the only thing that stops it.
func sysProcAttr() *syscall.SysProcAttr { return nil }
