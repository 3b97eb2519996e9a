package events

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc/status"

	"github.com/example/containerd-shim-example-v2/internal/ttrpcclient"
	eventsapi "github.com/example/containerd-shim-example-v2/proto/api/services/ttrpc/events/v1"
	"github.com/example/containerd-shim-example-v2/proto/api/types"
)

const (
	forwardService = "containerd.services.events.ttrpc.v1.Events"
	forwardMethod  = "Forward"
)

// TTRPCForwarder forwards to containerd's ttrpc events service, dialing (and
// re-dialing after a failure) on demand. Only the queue's goroutine uses it.
//
// It calls through internal/ttrpcclient rather than ttrpc's client: the
// queue sends one event at a time, so a call is one write and one read on
// the connection, with no goroutines, and the messages are encoded by
// proto/codec.
type TTRPCForwarder struct {
	address string
	conn    *ttrpcclient.Conn
	// awaited is the envelope whose answer is still due on conn: containerd
	// has it but had not answered by the call's deadline (too busy, or
	// stopped, to answer in time). Sent again on a new connection, it would
	// reach containerd twice, and the first copy could land after the
	// events the queue sends next: the queue's next try waits on for this
	// answer instead.
	awaited *types.Envelope
}

// NewTTRPCForwarder returns a forwarder for containerd's TTRPC_ADDRESS.
func NewTTRPCForwarder(address string) *TTRPCForwarder {
	return &TTRPCForwarder{address: strings.TrimPrefix(address, "unix://")}
}

// Forward sends one envelope. containerd's refusal comes back as a gRPC
// status error (IsRejection).
func (f *TTRPCForwarder) Forward(ctx context.Context, env *types.Envelope) error {
	if f.conn != nil && f.awaited != nil && f.awaited != env {
		// Another event than the one whose answer is due (a queue that
		// gave it up): its late answer is nobody's now; start afresh.
		_ = f.Close()
	}
	if f.conn != nil && f.awaited == nil && f.conn.Exhausted() {
		// A new connection starts the stream ids again.
		_ = f.Close()
	}
	if f.conn == nil {
		dctx, cancel := context.WithTimeout(ctx, dialTimeout)
		conn, err := ttrpcclient.Dial(dctx, f.address)
		cancel()
		if err != nil {
			return fmt.Errorf("dial containerd events at %s: %w", f.address, err)
		}
		f.conn = conn
	}
	var err error
	if f.awaited == env {
		err = f.conn.Await(ctx, nil)
	} else {
		err = f.conn.Call(ctx, forwardService, forwardMethod, &eventsapi.ForwardRequest{Envelope: env}, nil)
	}
	f.awaited = nil
	switch {
	case errors.Is(err, ttrpcclient.ErrAnswerPending):
		f.awaited = env
	case err != nil && !IsRejection(err):
		// The connection may be broken: start afresh next time.
		_ = f.Close()
	}
	return err
}

// IsRejection reports an answer from containerd (a gRPC status it sent), as
// opposed to a transport failure such as a refused or broken connection.
func IsRejection(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || isNetErr(err) {
		return false
	}
	_, ok := status.FromError(err)
	return ok
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// Close closes the connection.
func (f *TTRPCForwarder) Close() error {
	f.awaited = nil
	if f.conn == nil {
		return nil
	}
	err := f.conn.Close()
	f.conn = nil
	return err
}
