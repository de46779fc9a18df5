package ec2

import (
	"testing"
	"time"
)

// TestSDKBackoff: the SDK's retries wait a full-jitter draw below 2^n s,
// capped at Retry's maxBackoff, as the SDK's ExponentialJitterBackoff did.
func TestSDKBackoff(t *testing.T) {
	for _, tc := range []struct {
		max    time.Duration
		bounds []time.Duration // for attempts 1, 2, …
	}{
		{DefaultRetryMaxBackoff, []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 20 * time.Second, 20 * time.Second}},
		{time.Millisecond, []time.Duration{time.Millisecond, time.Millisecond}},
	} {
		b := sdkBackoff(tc.max)
		for i, bound := range tc.bounds {
			var top time.Duration
			for range 2000 {
				d, err := b.BackoffDelay(i+1, nil)
				if err != nil || d < 0 || d >= bound {
					t.Fatalf("max %v, attempt %d: %v, %v; want in [0, %v)", tc.max, i+1, d, err, bound)
				}
				top = max(top, d)
			}
			if top < bound*9/10 {
				t.Errorf("max %v, attempt %d: the longest of 2000 draws is %v, want near %v", tc.max, i+1, top, bound)
			}
		}
	}
}
