// Package events delivers the shim's task events to containerd, in order.
//
// Every event goes through one FIFO queue drained by one goroutine that calls
// containerd's Events.Forward over ttrpc. Publishing never blocks the caller.
// A failed forward is retried (with backoff) at the head of the queue, so a
// later event never overtakes an earlier one, and an exit that happens while
// containerd is down is delivered once it is back.
package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/example/containerd-shim-example-v2/internal/condwait"
	"github.com/example/containerd-shim-example-v2/internal/ttrpcclient"
	"github.com/example/containerd-shim-example-v2/proto/codec"

	"github.com/example/containerd-shim-example-v2/proto/api/types"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Named limits.
const (
	// forwardTimeout bounds one Forward call; containerd answers in
	// microseconds unless it is wedged.
	forwardTimeout = 5 * time.Second
	// dialTimeout bounds connecting to containerd's ttrpc socket.
	dialTimeout = 5 * time.Second
	// retryMin and retryMax bound the backoff between attempts while
	// containerd is unreachable.
	retryMin = 50 * time.Millisecond
	retryMax = 2 * time.Second
	// maxRejections is how often containerd may refuse one event (an answer,
	// not a transport failure) before it is dropped and logged, so one bad
	// event cannot stall every later one.
	maxRejections = 3
	// MaxPending caps the queue while containerd is away. Past it the oldest
	// event is dropped and counted: memory must stay bounded for a shim that
	// outlives a long containerd outage.
	MaxPending = 8192
)

// Forwarder sends one envelope to containerd.
type Forwarder interface {
	Forward(ctx context.Context, env *types.Envelope) error
	Close() error
}

// Queue is the shim's one ordered event queue.
//
// Locking: mu guards pending, closed and dropped; cond (on mu) wakes the
// sender when an event arrives and Flush when the queue empties.
type Queue struct {
	namespace string
	fwd       Forwarder

	mu      sync.Mutex
	cond    *sync.Cond
	pending []*types.Envelope
	sending bool // the head is being forwarded
	// awaiting: the head's answer is still due on the forwarder's connection
	// (its send ended with ttrpcclient.ErrAnswerPending). containerd has the
	// event and may still carry it out: for Hold, as for a send, it is in
	// flight, and its next try (which waits for that answer) goes ahead even
	// while held.
	awaiting bool
	held     bool // Hold: nothing is sent until Release (an upgrade takes the queue over)
	closed   bool
	running  bool // Run has started: Close waits for it to end
	dropped  uint64
	// Counters for Stats (introspection), guarded by mu like the rest.
	forwarded, retries uint64
	done               chan struct{}
}

// NewQueue returns a queue for namespace that forwards through fwd; Run
// must be started for anything to be sent.
func NewQueue(namespace string, fwd Forwarder) *Queue {
	q := &Queue{namespace: namespace, fwd: fwd, done: make(chan struct{})}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Publish enqueues an event (a message the codec encodes), stamped now. It
// never blocks.
func (q *Queue) Publish(topic string, event any) {
	value, err := codec.Marshal(event)
	if err != nil {
		slog.Error("encode event", "topic", topic, "error", err)
		return
	}
	env := &types.Envelope{
		Timestamp: timestamppb.Now(),
		Namespace: q.namespace,
		Topic:     topic,
		Event:     &anypb.Any{TypeUrl: codec.MessageName(event), Value: value},
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		// The daemon is leaving; said, so that a lost event is not silent.
		slog.Warn("event published after the queue closed; not sent", "topic", topic)
		return
	}
	if len(q.pending) >= MaxPending {
		// Keep the head (it may be mid-send) and drop the next oldest.
		q.pending = append(q.pending[:1], q.pending[2:]...)
		q.dropped++
		slog.Error("event queue full; dropped the oldest event", "dropped", q.dropped)
	}
	q.pending = append(q.pending, env)
	q.cond.Broadcast()
}

// Run forwards events until Close. Call it once, in its own goroutine.
func (q *Queue) Run() {
	defer close(q.done)
	q.mu.Lock()
	q.running = true
	q.mu.Unlock()
	backoff := retryMin
	rejections := 0
	for {
		q.mu.Lock()
		for (len(q.pending) == 0 || q.held && !q.awaiting) && !q.closed {
			q.cond.Wait()
		}
		if q.closed {
			// What is left is abandoned (Flush first): a held queue
			// belongs to an upgrade's successor, and an unreachable
			// containerd would keep Close waiting a timeout per event.
			q.mu.Unlock()
			return
		}
		env := q.pending[0]
		q.sending = true
		q.mu.Unlock()

		ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
		err := q.fwd.Forward(ctx, env)
		cancel()

		q.mu.Lock()
		q.sending = false
		q.awaiting = errors.Is(err, ttrpcclient.ErrAnswerPending)
		q.cond.Broadcast() // Hold and Flush wait for the send to end, failed or not
		switch {
		case err == nil:
			q.forwarded++
		case IsRejection(err):
			rejections++
			if rejections >= maxRejections {
				slog.Error("containerd refused an event; dropped", "topic", env.Topic, "error", err)
				q.dropped++
				err = nil
			}
		}
		if err != nil {
			q.retries++
		}
		if err == nil {
			q.pending[0] = nil
			q.pending = q.pending[1:]
			backoff, rejections = retryMin, 0
			q.cond.Broadcast() // Flush waits for the queue to empty
			q.mu.Unlock()
			continue
		}
		closed, awaiting := q.closed, q.awaiting
		q.mu.Unlock()
		if closed {
			return // Close gave up on what is left
		}
		if awaiting {
			continue // the next try waits for the answer itself
		}
		time.Sleep(backoff)
		backoff = min(backoff*2, retryMax)
	}
}

// Flush waits until every queued event was forwarded, at most timeout, and
// reports whether the queue emptied.
func (q *Queue) Flush(timeout time.Duration) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	condwait.Until(q.cond, timeout, func() bool { return len(q.pending) == 0 && !q.sending })
	return len(q.pending) == 0
}

// Close stops the queue; events not yet forwarded are abandoned (and
// logged, unless the queue is held for an upgrade's successor, which takes
// them over). Flush first.
func (q *Queue) Close() {
	q.mu.Lock()
	q.closed = true
	running := q.running
	if n := len(q.pending); n > 0 && !q.held {
		slog.Warn("events abandoned at close", "count", n, "first", q.pending[0].Topic)
	}
	q.cond.Broadcast()
	q.mu.Unlock()
	if running {
		<-q.done // a Run starting after this returns at once
	}
	_ = q.fwd.Close()
}

// Stats is the queue's state for introspection.
type Stats struct {
	Pending, Forwarded, Retries, Dropped uint64
	// OldestPending is the age of the head event; zero when none is pending.
	OldestPending time.Duration
}

// Stats returns the queue's counters and the age of its oldest event.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := Stats{Pending: uint64(len(q.pending)), Forwarded: q.forwarded, Retries: q.retries, Dropped: q.dropped}
	if len(q.pending) > 0 {
		st.OldestPending = time.Since(q.pending[0].Timestamp.AsTime())
	}
	return st
}

// Hold stops sending after the event in flight, if any (at most timeout;
// false if it is still in flight, and the queue is released). Events keep
// being queued meanwhile. An event whose answer is still due counts as in
// flight: handed over, the successor would send it again, and containerd,
// which has it, would get it twice.
func (q *Queue) Hold(timeout time.Duration) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.held = true
	if !condwait.Until(q.cond, timeout, func() bool { return !q.sending && !q.awaiting }) {
		q.held = false
		q.cond.Broadcast()
		return false
	}
	return true
}

// Release undoes Hold.
func (q *Queue) Release() {
	q.mu.Lock()
	q.held = false
	q.cond.Broadcast()
	q.mu.Unlock()
}

// QueueState is a held queue as an upgrade hands it over: the events not
// delivered yet, in order (each a marshaled Envelope), and the counters.
type QueueState struct {
	Pending   [][]byte `json:"pending,omitempty"`
	Forwarded uint64   `json:"forwarded"`
	Retries   uint64   `json:"retries"`
	Dropped   uint64   `json:"dropped"`
}

// Export describes a held queue.
func (q *Queue) Export() (QueueState, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := QueueState{Forwarded: q.forwarded, Retries: q.retries, Dropped: q.dropped}
	for _, env := range q.pending {
		b, err := codec.Marshal(env)
		if err != nil {
			return st, fmt.Errorf("encode queued event %s: %w", env.Topic, err)
		}
		st.Pending = append(st.Pending, b)
	}
	return st, nil
}

// Import puts a predecessor's undelivered events ahead of anything queued
// here, and takes over its counters. Call it before Run.
func (q *Queue) Import(st QueueState) error {
	envs := make([]*types.Envelope, 0, len(st.Pending))
	for _, b := range st.Pending {
		env := &types.Envelope{}
		if err := codec.Unmarshal(b, env); err != nil {
			return fmt.Errorf("decode handed-over event: %w", err)
		}
		envs = append(envs, env)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pending = append(envs, q.pending...)
	q.forwarded, q.retries, q.dropped = st.Forwarded, st.Retries, st.Dropped
	q.cond.Broadcast()
	return nil
}
