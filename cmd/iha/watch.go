package main

// Watch mode (iha hosts -w, iha host H -w): the view is drawn once, then
// redrawn each time the replicated event log says something happened (the
// API's event stream, /v1/events/stream), never on a timer. Every phase
// change of a recovery, every verdict that acts, every operator command
// writes an event, so each shows up at once; what writes no event (an
// agent turning suspect in the mesh, a heartbeat) shows up with the next
// one.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/ihaproject/iha/pkg/api"
)

// clearScreen moves the cursor home and clears the terminal.
const clearScreen = "\x1b[H\x1b[2J"

// frameFunc draws one frame of a watched view into w and returns the
// command's exit status for it, or the error that stopped it.
type frameFunc func(ctx context.Context, w io.Writer) (int, error)

// watch draws the view, then redraws it after each event (of host, or of
// any host when host is ""), until ctx ends (exit 0) or the API cannot be
// reached any more (the error's exit status). A redraw whose frame is the
// same as the last one is not printed.
func watch(ctx context.Context, e *env, name string, cl *api.Client, host string, o *output, draw frameFunc) int {
	// The stream starts after the newest event there is now, so that it
	// brings changes only; it is read from before the first frame is
	// drawn, so that nothing between the two is missed.
	last, err := cl.Events(ctx, api.EventQuery{Host: host, Limit: 1}, false)
	if err != nil {
		return fail(e.stderr, name, err)
	}
	changed := make(chan api.Event, 1)
	streamErr := make(chan error, 1)
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		streamErr <- cl.StreamQuery(sctx, api.EventQuery{Since: last.Next, Host: host}, func(ev api.Event) error {
			select {
			case changed <- ev:
			default:
				// A redraw is due already; it will show this event's change too.
			}
			return nil
		})
	}()
	defer func() { stop(); wg.Wait() }()

	terminal := isTerminal(e.stdout)
	var prev []byte
	frames := 0
	redraw := func(cause string) (int, bool) {
		var b bytes.Buffer
		code, err := draw(ctx, &b)
		if err != nil {
			if ctx.Err() != nil {
				return exitOK, false
			}
			return fail(e.stderr, name, err), false
		}
		if frames > 0 && bytes.Equal(b.Bytes(), prev) {
			return code, true
		}
		prev = b.Bytes()
		switch {
		case terminal:
			fmt.Fprint(e.stdout, clearScreen)
		case frames > 0 && o.format == outYAML:
			fmt.Fprintln(e.stdout, "---")
		case frames > 0 && !o.structured():
			fmt.Fprintln(e.stdout)
		}
		frames++
		info(e.stderr, "iha %s -w: %s; redrawn on every event, until interrupted", name, cause)
		_, _ = e.stdout.Write(b.Bytes())
		return code, true
	}
	if code, ok := redraw("as of now"); !ok {
		return code
	}
	for {
		select {
		case <-ctx.Done():
			return exitOK
		case err := <-streamErr:
			if ctx.Err() != nil || err == nil {
				return exitOK
			}
			return fail(e.stderr, name, err)
		case ev := <-changed:
			cause := fmt.Sprintf("after event %d %s", ev.Seq, ev.Kind)
			if ev.Host != "" {
				cause += " of " + ev.Host
			}
			if code, ok := redraw(cause); !ok {
				return code
			}
		}
	}
}
