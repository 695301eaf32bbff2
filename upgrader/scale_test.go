package upgrader

import "testing"

// A worker added by a scale is told the count the scale asked for, as
// BATON_WORKERS, like every worker a reload starts after it: 6 for each
// of the two a scale from 4 to 6 adds, not 5 for the first.
func TestScaledWorkersAreToldTheNewCount(t *testing.T) {
	s := up(t, workers(4, 0))
	c := s.scale(6)
	s.ready(105, 106)
	if res := result(t, c); res.Err != nil {
		t.Fatal(res.Err)
	}
	for _, st := range s.env.starts[4:] {
		if st.Workers != 6 {
			t.Errorf("worker %d added by a scale to 6 was told BATON_WORKERS=%d", st.Index, st.Workers)
		}
	}
}

// No request gets a generation beyond MaxWorkers: a scale to more is
// refused in one line without a slot made, and SIGTTIN at MaxWorkers
// adds none.
func TestScaleBeyondMaxWorkersIsRefused(t *testing.T) {
	s := up(t, workers(2, 0))
	for _, n := range []int{MaxWorkers + 1, 1 << 30} {
		c := s.scale(n)
		if res := result(t, c); res.Err == nil || res.Err.Error() != CheckWorkers(n).Error() {
			t.Fatalf("scale(%d): %v; want %q", n, res.Err, CheckWorkers(n))
		}
		if len(s.m.slots) != 2 {
			t.Fatalf("scale(%d) made %d slots", n, len(s.m.slots))
		}
	}
	c := make(chan Result, 1)
	s.step(scaleReq{n: MaxWorkers + 1, reply: c}) // as a client past Scale's check would
	if res := result(t, c); res.Err == nil || len(s.m.slots) != 2 {
		t.Fatalf("a request for %d workers: %v, %d slots", MaxWorkers+1, res.Err, len(s.m.slots))
	}
	s.m.scaling = &scaleReq{n: MaxWorkers} // as if scaled to the most
	s.step(scaleReq{delta: 1})
	if s.m.scaling.n != MaxWorkers {
		t.Fatalf("SIGTTIN at %d workers asked for %d", MaxWorkers, s.m.scaling.n)
	}
}
