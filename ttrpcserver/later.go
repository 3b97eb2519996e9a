package ttrpcserver

// Deferred is a handler's result that says "the answer comes later": the
// server calls start with the function that sends the answer, and the call
// stays open until that function is called (once; later calls are ignored).
// It may be called from any goroutine, before or after start returns.
//
// It is for long polls such as the task API's Wait, which containerd's CRI
// keeps open for every container it runs: answered later, such a call holds
// no goroutine (and no goroutine stack) while it waits, only what the
// handler registers to answer it. The call's context ends once the answer
// is sent, or when the connection closes: a handler that waits on anything
// else must watch it (context.AfterFunc) and answer with its error.
type Deferred struct {
	start func(answer func(resp any, err error))
}

// Later returns a Deferred result that the server starts with start.
func Later(start func(answer func(resp any, err error))) *Deferred {
	return &Deferred{start: start}
}
