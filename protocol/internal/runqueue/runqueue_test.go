package runqueue

import (
	"runtime"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
)

// TestAtMostLimitRunInArrivalOrder: with a limit of 2, two functions run
// while the others wait without goroutines; they then run in the order
// they came; no goroutine is left once all ran.
func TestAtMostLimitRunInArrivalOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var q Queue
		g0 := runtime.NumGoroutine()
		release := make(chan struct{})
		var mu sync.Mutex
		var order []int
		for i := range 6 {
			q.Go(2, func() {
				mu.Lock()
				order = append(order, i)
				mu.Unlock()
				if i < 2 {
					<-release
				}
			})
		}
		synctest.Wait()
		if n := runtime.NumGoroutine() - g0; n != 2 {
			t.Errorf("%d goroutines run six functions with a limit of 2", n)
		}
		close(release)
		synctest.Wait()
		if want := []int{0, 1, 2, 3, 4, 5}; !slices.Equal(order, want) && !slices.Equal(order, []int{1, 0, 2, 3, 4, 5}) {
			t.Errorf("ran in the order %v", order)
		}
		if n := runtime.NumGoroutine() - g0; n != 0 {
			t.Errorf("%d goroutines left once all ran", n)
		}
	})
}
