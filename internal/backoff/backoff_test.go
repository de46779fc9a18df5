package backoff

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

func delays(p Policy, n int) []time.Duration {
	var out []time.Duration
	for i := 1; i <= n; i++ {
		out = append(out, p.Delay(i))
	}
	return out
}

func TestDelayDoublesUpToMax(t *testing.T) {
	s := time.Second
	for _, tc := range []struct {
		name string
		p    Policy
		want []time.Duration
	}{
		{"the quarantine: 10s doubling to an hour", Policy{Min: 10 * s, Max: time.Hour},
			[]time.Duration{10 * s, 20 * s, 40 * s, 80 * s, 160 * s, 320 * s, 640 * s, 1280 * s, 2560 * s, time.Hour, time.Hour}},
		{"notify: 1s, 2s, 4s", Policy{Min: s, Max: time.Hour}, []time.Duration{s, 2 * s, 4 * s}},
		{"a Max that is not a doubling of Min", Policy{Min: 20 * time.Minute, Max: time.Hour},
			[]time.Duration{20 * time.Minute, 40 * time.Minute, time.Hour, time.Hour}},
		{"a Max below Min means Min", Policy{Min: 2 * time.Hour, Max: time.Hour}, []time.Duration{2 * time.Hour, 2 * time.Hour}},
		{"no Max: Min every time", Policy{Min: s}, []time.Duration{s, s}},
		{"zero", Policy{}, []time.Duration{0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := delays(tc.p, len(tc.want)); !slices.Equal(got, tc.want) {
				t.Errorf("delays %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDelayNeverOverflows(t *testing.T) {
	p := Policy{Min: time.Nanosecond, Max: math.MaxInt64}
	for _, n := range []int{62, 63, 64, 65, 1000, math.MaxInt} {
		if d := p.Delay(n); d <= 0 || d > math.MaxInt64 {
			t.Errorf("Delay(%d) = %v", n, d)
		}
	}
	if d := p.Delay(64); d != math.MaxInt64 {
		t.Errorf("Delay(64) = %v, want the cap", d)
	}
	if d := (Policy{Min: time.Second, Max: time.Minute}).Delay(-3); d != time.Second {
		t.Errorf("Delay(-3) = %v, want Min", d)
	}
}

func TestJitter(t *testing.T) {
	for _, tc := range []struct {
		jitter Jitter
		r      float64
		want4s time.Duration // the third retry of 1s doubling
	}{
		{None, 0.5, 4 * time.Second},
		{Half, 0, 2 * time.Second},
		{Half, 0.5, 3 * time.Second},
		{Full, 0, 0},
		{Full, 0.25, time.Second},
	} {
		p := Policy{Min: time.Second, Max: time.Minute, Jitter: tc.jitter, Rand: func() float64 { return tc.r }}
		if got := p.Delay(3); got != tc.want4s {
			t.Errorf("jitter %d, rand %v: %v, want %v", tc.jitter, tc.r, got, tc.want4s)
		}
	}
	// The default source stays within the bounds.
	for range 1000 {
		if d := (Policy{Min: time.Second, Max: time.Second, Jitter: Half}).Delay(1); d < 500*time.Millisecond || d >= time.Second {
			t.Fatalf("half jitter drew %v", d)
		}
		if d := (Policy{Min: time.Second, Max: time.Second, Jitter: Full}).Delay(1); d < 0 || d >= time.Second {
			t.Fatalf("full jitter drew %v", d)
		}
	}
}

func TestCounterAndReset(t *testing.T) {
	c := Counter{Policy: Policy{Min: time.Second, Max: 5 * time.Second}}
	var got []time.Duration
	for range 5 {
		got = append(got, c.Next())
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}; !slices.Equal(got, want) {
		t.Errorf("Next: %v, want %v", got, want)
	}
	c.Reset()
	if d := c.Next(); d != time.Second {
		t.Errorf("after Reset: %v", d)
	}
}

func TestWaitFollowsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if err := Wait(t.Context(), 3*time.Second); err != nil || time.Since(start) != 3*time.Second {
			t.Errorf("Wait = %v after %v, want nil after 3s", err, time.Since(start))
		}

		cause := errors.New("closed")
		ctx, cancel := context.WithCancelCause(t.Context())
		time.AfterFunc(time.Second, func() { cancel(cause) })
		start = time.Now()
		if err := Wait(ctx, time.Hour); err != cause || time.Since(start) != time.Second {
			t.Errorf("Wait = %v after %v, want the cause after 1s", err, time.Since(start))
		}
		if err := Wait(ctx, 0); err != cause {
			t.Errorf("Wait on an ended context = %v", err)
		}
		if err := Wait(t.Context(), -time.Second); err != nil {
			t.Errorf("Wait(-1s) = %v", err)
		}
	})
}
