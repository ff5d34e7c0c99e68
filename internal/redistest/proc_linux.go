package redistest

import "syscall"

// sysProcAttr makes the kernel kill redis-server when the thread that
// started it dies, so a test binary that crashes or is killed leaves no
// server behind. The starting goroutine stays locked to that thread until
// the server exits (see launch).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
